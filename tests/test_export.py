"""Training a small recipe on real clips, exporting it and checking ONNX parity and the manifest."""

import json

import numpy as np
import pytest

pytest.importorskip("torch")

from edge_agent.audio.convert import prepare  # noqa: E402
from edge_agent.audio.wavio import read_wav  # noqa: E402
from edge_agent.audio.windows import frame_windows
from edge_agent.engine import OnnxEngine  # noqa: E402
from edge_agent.model.bundle import Bundle, BundleError  # noqa: E402
from edge_agent.model.frontend import Frontend  # noqa: E402
from tests.conftest import DATA  # noqa: E402


def test_train_writes_checkpoint_with_data_summary(tiny_checkpoint):
    from export.train import load_checkpoint

    ck = load_checkpoint(tiny_checkpoint)
    assert ck["recipe"] == "dualbranch" and ck["epoch"] == 2
    assert ck["data_summary"]["clips"] == 5  # the five normal clips of train/ (test normals left out)
    assert any("pat_02" in j for j in ck["joint_classes"])  # target-domain attribute classes
    assert len(ck["loss_history"]) == 2 and all(np.isfinite(ck["loss_history"]))


def test_export_parity_and_manifest(tiny_bundle):
    b = Bundle.load(tiny_bundle)
    m = b.manifest.to_json()
    assert m["parity_max_abs_diff"] <= 1e-4
    assert m["opset"] >= 17 and m["recipe"] == "dualbranch"
    assert set(m["files"]) == {"model.onnx", "training_clips.txt"} and len(b.sha256) == 64
    assert [i["name"] for i in m["inputs"]] == ["spectrum", "spectrogram"]
    assert m["inputs"][0]["shape"][0] == -1  # dynamic batch
    assert m["training"]["data"]["clips"] == 5
    x, sr = read_wav(next((DATA / "valve" / "test").glob("*.wav")))
    fe = b.frontend
    w = frame_windows(prepare(x, sr, fe.sample_rate), fe.window_samples, fe.window_samples // 2)
    emb = OnnxEngine(b, "cpu").embed(fe(w))
    assert emb.shape == (len(w), b.embedding_dim)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)


def test_onnx_matches_torch_on_other_real_clips(tiny_checkpoint, tiny_bundle):
    import torch

    from export.onnx_export import load_model

    model, cfg, _ = load_model(tiny_checkpoint)
    b = Bundle.load(tiny_bundle)
    fe = cfg.frontend()
    x, sr = read_wav(next((DATA / "valve" / "test").glob("*target*anomaly*.wav")))
    feats = fe(frame_windows(prepare(x, sr, 16000), fe.window_samples, 4000))
    with torch.no_grad():
        ref = model(*(torch.from_numpy(feats[n]) for n in model.input_names)).numpy()
    got = OnnxEngine(b, "cpu").embed(feats)
    diff = float(np.abs(ref - got).max())
    print(f"parity on {len(ref)} windows: max abs diff {diff:.2e}")
    assert diff <= 1e-4


def test_corrupt_bundle_is_refused(tiny_bundle_copy):
    with open(tiny_bundle_copy / "model.onnx", "ab") as f:
        f.write(b"x")
    with pytest.raises(BundleError, match="sha256 does not match"):
        Bundle.load(tiny_bundle_copy)
    (tiny_bundle_copy / "manifest.json").write_text("{")
    with pytest.raises(BundleError, match="unreadable manifest"):
        Bundle.load(tiny_bundle_copy)


def test_manifest_frontend_round_trip(tiny_bundle):
    m = json.loads((tiny_bundle / "manifest.json").read_text())
    b = Bundle.load(tiny_bundle)
    assert Frontend.from_dict(m["frontend"]) == b.frontend == Frontend.from_dict(b.frontend.to_dict())
    assert b.frontend.window_samples == 16000


def test_default_bundle_ships_and_loads():
    b = Bundle.load("default")
    assert b.name == "default" and b.manifest.recipe == "dualbranch"
    assert "machines" in b.manifest.training["data"]
    assert b.model_path.stat().st_size < 16 * 2**20  # four ensemble members of about 3 MB


def test_unknown_model_name_is_explained():
    with pytest.raises(BundleError, match="built-in: default"):
        Bundle.load("nope")
