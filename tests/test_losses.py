"""Angular-margin heads: shapes, gradients and margin behaviour."""

import math

import pytest

torch = pytest.importorskip("torch")

from export.losses import AdaCos, ArcFace, make_head  # noqa: E402


def _emb(n=8, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, requires_grad=True)


@pytest.mark.parametrize("kind", ["arcface", "adacos", "subcluster-adacos"])
def test_loss_shapes_and_gradients(kind):
    head = make_head(kind, 16, 5, sub_clusters=3)
    emb = _emb()
    y = torch.arange(8) % 5
    loss = head(emb, y)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    assert emb.grad is not None and emb.grad.abs().sum() > 0
    assert head.logits(emb.detach()).shape == (8, 5)
    soft = torch.nn.functional.one_hot(y, 5).float() * 0.7 + torch.nn.functional.one_hot((y + 1) % 5, 5).float() * 0.3
    assert torch.isfinite(head(emb.detach(), soft))


def test_arcface_margin_lowers_target_logit_only():
    head = ArcFace(16, 4, scale=10.0, margin=0.3)
    emb = _emb(4)
    y = torch.tensor([0, 1, 2, 3])
    plain = head.logits(emb)
    marg = head.logits(emb, y)
    idx = torch.arange(4)
    assert torch.all(marg[idx, y] < plain[idx, y])
    off = torch.ones_like(plain, dtype=torch.bool)
    off[idx, y] = False
    assert torch.allclose(marg[off], plain[off])
    # a larger margin makes the loss larger for the same embeddings
    h0, h5 = ArcFace(16, 4, 10.0, 0.0), ArcFace(16, 4, 10.0, 0.5)
    h5.weight.data.copy_(h0.weight.data)
    assert h5(emb, y) > h0(emb, y)


def test_adacos_scale_adapts_and_starts_as_published():
    head = AdaCos(16, 10)
    assert math.isclose(float(head.scale), math.sqrt(2) * math.log(9), rel_tol=1e-5)
    head.train()
    s0 = float(head.scale)
    head(_emb(32), torch.arange(32) % 10)
    assert float(head.scale) != s0
    head.eval()
    s1 = float(head.scale)
    head(_emb(32, seed=1), torch.arange(32) % 10)
    assert float(head.scale) == s1  # no adaptation at evaluation


def test_subcluster_probabilities_sum_over_centres():
    head = AdaCos(16, 3, sub_clusters=4)
    assert head.weight.shape == (12, 16) and not head.weight.requires_grad
    lp = head.logits(_emb(5).detach())
    assert torch.allclose(lp.exp().sum(1), torch.ones(5), atol=1e-5)
    with pytest.raises(ValueError, match="unknown loss"):
        make_head("hinge", 16, 3)
