"""The more recipes (issue 8): stgram, sepstgram and framevit train on real clips (small configs),
export with the parity check, and run unchanged through calibrate, run and evaluate."""

import json
import math

import pytest

torch = pytest.importorskip("torch")

from edge_agent.model.bundle import Bundle  # noqa: E402
from edge_agent.scoring.bank import MemoryBank, bank_path  # noqa: E402
from tests.conftest import DATA, DEMO, small_recipe_bundle  # noqa: E402
from tests.test_run_replay import cli, write_config  # noqa: E402

pytestmark = pytest.mark.slow  # trains a model per recipe

SMALL = {
    "stgram": {
        "window_seconds": 1.0,
        "n_fft": 512,
        "hop": 256,
        "n_mels": 32,
        "resnet_widths": [8, 8, 16, 16],
        "embedding_dim": 16,
    },
    "sepstgram": {
        "window_seconds": 1.0,
        "n_fft": 512,
        "hop": 256,
        "n_mels": 32,
        "resnet_widths": [8, 8, 16, 16],
        "embedding_dim": 16,
    },
    "framevit": {
        "window_seconds": 1.0,
        "n_fft": 512,
        "hop": 256,
        "n_mels": 32,
        "context": 16,
        "shift": 4,
        "layers": 2,
        "hidden": 32,
        "mlp": 64,
        "heads": 2,
    },
}


@pytest.fixture(scope="module", params=list(SMALL))
def recipe_bundle(request, tmp_path_factory):
    recipe = request.param
    path, ck = small_recipe_bundle(recipe, SMALL[recipe], tmp_path_factory.mktemp(recipe))
    assert ck["loss"] == {"stgram": "softmax", "sepstgram": "softmax", "framevit": "arcface"}[recipe]
    return recipe, path


def test_export_parity_and_manifest(recipe_bundle):
    recipe, path = recipe_bundle
    b = Bundle.load(path)
    assert b.manifest.recipe == recipe and b.manifest.parity_max_abs_diff <= 1e-4
    n = b.manifest.score.embeddings_per_window
    assert n == (math.ceil((b.frontend.features[0].shape(16000)[0] - 16) / 4) if recipe == "framevit" else 1)


def test_calibrate_run_and_evaluate_unchanged(recipe_bundle, tmp_path):
    recipe, path = recipe_bundle
    st = tmp_path / "st"
    r = cli(
        "calibrate",
        "--machine",
        "m1",
        "--from",
        DATA / "valve" / "train",
        "--model",
        path,
        "--state-dir",
        st,
        "--no-plot",
    )
    assert r.returncode == 0, r.stderr
    bank = MemoryBank.load(bank_path(st, "m1"))
    b = Bundle.load(path)
    per_window = b.manifest.score.embeddings_per_window
    assert bank.embeddings.shape[1] == b.embedding_dim
    # every window of the two 4 s target clips (1 s windows, hop 1 s) is kept, each with its embeddings
    assert bank.counts()["target_sample"] == 2 * 4 * per_window
    cfg = tmp_path / "c.yaml"
    write_config(cfg, st, {"m1": {"file": DEMO / "replay" / "01_normal_id_00_00000018.wav", "realtime": "false"}})
    cfg.write_text(cfg.read_text().replace("engine: cpu", f"engine: cpu\nmodel: {path}"))
    r = cli("run", "--config", cfg, "--scores")
    assert r.returncode == 0, r.stderr
    assert "m1: score" in r.stdout
    ds = tmp_path / "ds"
    ds.mkdir()
    (ds / "valve").symlink_to(DATA / "valve")
    r = cli("evaluate", ds, "--model", path, "--out", tmp_path / "ev")
    assert r.returncode == 0, r.stderr
    res = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert 0 <= res["machines"]["valve"]["hmean"] <= 1


def test_published_framevit_size_and_context_count():
    from export.recipes import build_model

    model, cfg = build_model("framevit", {"window_seconds": 10.0})
    n_params = sum(p.numel() for p in model.parameters())
    assert 20e6 < n_params < 24e6  # "about 22 M parameters"
    assert cfg.frames == 311 and cfg.n_context == math.ceil((311 - 64) / 4)


def test_stgram_arcface_option_and_bad_variant(tmp_path):
    from export.recipes import build_model
    from export.train import TrainArgs, train

    train(
        TrainArgs(
            data=[str(DATA / "valve")],
            out=str(tmp_path / "a.ckpt"),
            recipe="stgram",
            epochs=1,
            batch_size=8,
            loss="arcface",
            recipe_config=SMALL["stgram"],
            exclude_test_of=[],
            include_test_normals=False,
        ),
        progress=False,
    )
    assert torch.load(tmp_path / "a.ckpt", weights_only=True)["loss"] == "arcface"
    model, _ = build_model("sepstgram", SMALL["sepstgram"])
    assert hasattr(model, "backbone_t") and hasattr(model, "backbone_s")
    with pytest.raises(ValueError, match="unknown recipe"):
        build_model("nope", {})
    from export.recipes.stgram import STgramConfig

    with pytest.raises(ValueError, match="variant must be stgram or sepstgram"):
        STgramConfig(variant="tgram")  # refused with the config, before a model is built


def test_stgram_classifier_score_in_calibrate_run_and_evaluate(recipe_bundle, tmp_path):
    recipe, path = recipe_bundle
    b = Bundle.load(path)
    if recipe == "framevit":
        assert b.manifest.classifier is None  # several embeddings per window: k-NN only
        r = cli(
            "calibrate",
            "--machine",
            "m1",
            "--from",
            DATA / "valve" / "train",
            "--model",
            path,
            "--state-dir",
            tmp_path,
            "--score",
            "classifier",
            "--class",
            "valve|00",
        )
        assert r.returncode == 2 and "no classifier head" in r.stderr
        return
    assert b.manifest.classifier.classes == ["enrol|id_00", "valve|00"]
    assert b.manifest.output_names == ["embedding", "logits"]
    st = tmp_path / "st"
    r = cli(
        "calibrate",
        "--machine",
        "m1",
        "--from",
        DATA / "valve" / "train",
        "--model",
        path,
        "--state-dir",
        st,
        "--no-plot",
        "--score",
        "classifier",
        "--class",
        "nope|00",
    )
    assert r.returncode == 2 and "not one of the model's classes: enrol|id_00, valve|00" in r.stderr
    r = cli(
        "calibrate",
        "--machine",
        "m1",
        "--from",
        DATA / "valve" / "train",
        "--model",
        path,
        "--state-dir",
        st,
        "--no-plot",
        "--score",
        "classifier",
        "--class",
        "valve|00",
    )
    assert r.returncode == 0, r.stderr
    bank = MemoryBank.load(bank_path(st, "m1"))
    assert bank.meta["score"] == {"kind": "classifier", "class": "valve|00", "class_index": 1}
    assert 0 <= bank.threshold <= 1 and "classifier 1 - softmax[valve|00]" in r.stdout
    cfg = tmp_path / "c.yaml"
    write_config(cfg, st, {"m1": {"file": DATA / "valve" / "test", "realtime": "false"}})
    cfg.write_text(cfg.read_text().replace("engine: cpu", f"engine: cpu\nmodel: {path}"))
    r = cli("run", "--config", cfg, "--scores")
    assert r.returncode == 0, r.stderr
    scores = [float(ln.split("score ")[1].split()[0]) for ln in r.stdout.splitlines() if ": score " in ln]
    assert scores and all(0.0 <= s <= 1.0 for s in scores)
    ds = tmp_path / "ds"
    ds.mkdir()
    (ds / "valve").symlink_to(DATA / "valve")
    r = cli("evaluate", ds, "--model", path, "--out", tmp_path / "ev", "--score", "classifier")
    assert r.returncode == 0, r.stderr
