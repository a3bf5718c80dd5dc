"""Angular-margin classification heads: ArcFace, AdaCos and sub-cluster AdaCos.

Each head maps L2-normalised embeddings to logits and returns the cross-entropy against (possibly
soft, for mixup) targets. The embeddings these heads shape are what the runtime's k-NN compares.

- ArcFace (Deng et al. 2019): s * cos(theta + m) for the target class.
- AdaCos (Zhang et al. 2019): no margin, the scale s adapts to the batch so that the target class
  probability has a useful gradient; s = log(C - 1) / cos(pi / 4) at start.
- Sub-cluster AdaCos (Wilkinghoff 2021): each class owns several (fixed, random) centres; the class
  probability is the sum of its centres' softmax probabilities, with the adaptive scale computed
  over all centres. Several centres let a class cover several modes of normal sound.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _soft_ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy with integer or soft (one-hot mixture) targets."""
    if target.dtype in (torch.int64, torch.int32):
        return F.cross_entropy(logits, target)
    return -(target * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def _one_hot(target: torch.Tensor, n: int) -> torch.Tensor:
    if target.dtype in (torch.int64, torch.int32):
        return F.one_hot(target, n).float()
    return target


class ArcFace(nn.Module):
    def __init__(self, dim: int, n_classes: int, scale: float = 30.0, margin: float = 0.5):
        super().__init__()
        self.n_classes, self.scale, self.margin = n_classes, scale, margin
        self.weight = nn.Parameter(torch.empty(n_classes, dim))
        nn.init.xavier_uniform_(self.weight)

    def cosine(self, emb: torch.Tensor) -> torch.Tensor:
        return F.linear(F.normalize(emb, dim=1), F.normalize(self.weight, dim=1))

    def logits(self, emb: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        cos = self.cosine(emb)
        if target is None:
            return self.scale * cos
        theta = torch.acos(cos.clamp(-1 + 1e-7, 1 - 1e-7))
        onehot = _one_hot(target, self.n_classes)
        # Margin on the target class only; for soft targets it is weighted by the mixing share.
        return self.scale * torch.cos(theta + self.margin * onehot)

    def forward(self, emb: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return _soft_ce(self.logits(emb, target), target)


class AdaCos(nn.Module):
    """AdaCos; with ``sub_clusters`` > 1 it is Wilkinghoff's sub-cluster AdaCos."""

    def __init__(self, dim: int, n_classes: int, sub_clusters: int = 1, trainable_centres: bool = False):
        super().__init__()
        self.n_classes, self.sub_clusters = n_classes, sub_clusters
        w = torch.empty(n_classes * sub_clusters, dim)
        nn.init.xavier_uniform_(w)
        self.weight = nn.Parameter(w, requires_grad=trainable_centres)
        # Initial scale over all centres, as in the AdaCos paper.
        self.register_buffer("scale", torch.tensor(math.sqrt(2) * math.log(max(2, n_classes * sub_clusters) - 1)))

    def cosine(self, emb: torch.Tensor) -> torch.Tensor:
        return F.linear(F.normalize(emb, dim=1), F.normalize(self.weight, dim=1))

    def class_log_probs(self, cos: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        logits = scale * cos  # (B, C * K)
        lp = F.log_softmax(logits, dim=1).view(-1, self.n_classes, self.sub_clusters)
        return torch.logsumexp(lp, dim=2)  # log of the summed sub-cluster probabilities

    def logits(self, emb: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        return self.class_log_probs(self.cosine(emb), self.scale)

    def forward(self, emb: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        cos = self.cosine(emb)
        if self.training:
            with torch.no_grad():
                onehot = _one_hot(target, self.n_classes).repeat_interleave(self.sub_clusters, dim=1) > 0
                theta = torch.acos(cos.clamp(-1 + 1e-7, 1 - 1e-7))
                # B_avg: mean over the batch of the summed non-target exp-logits.
                b_avg = torch.where(onehot, torch.zeros_like(cos), torch.exp(self.scale * cos)).sum(1).mean()
                theta_t = theta[onehot]
                theta_med = theta_t.median() if theta_t.numel() else torch.tensor(math.pi / 4)
                new = torch.log(b_avg) / torch.cos(torch.clamp(theta_med, max=math.pi / 4))
                if torch.isfinite(new):
                    self.scale.copy_(new)
        lp = self.class_log_probs(cos, self.scale)
        target_p = _one_hot(target, self.n_classes)
        return -(target_p * lp).sum(dim=1).mean()


class SoftmaxHead(nn.Module):
    """A plain linear classifier with cross-entropy (the STgram papers' training target)."""

    def __init__(self, dim: int, n_classes: int):
        super().__init__()
        self.fc = nn.Linear(dim, n_classes)

    def logits(self, emb: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        return self.fc(emb)

    def forward(self, emb: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return _soft_ce(self.fc(emb), target)


def make_head(kind: str, dim: int, n_classes: int, sub_clusters: int = 16) -> nn.Module:
    if kind == "softmax":
        return SoftmaxHead(dim, n_classes)
    if kind == "arcface":
        return ArcFace(dim, n_classes)
    if kind == "adacos":
        return AdaCos(dim, n_classes, 1)
    if kind == "subcluster-adacos":
        return AdaCos(dim, n_classes, sub_clusters)
    raise ValueError(f"unknown loss {kind!r}: use arcface, adacos, subcluster-adacos or softmax")


LOSSES = ("subcluster-adacos", "adacos", "arcface")
