"""Distillation: a small student trained on a teacher bundle's embeddings becomes an ordinary bundle."""

import json

import numpy as np
import pytest

from tests.conftest import DATA, TINY_RECIPE

torch = pytest.importorskip("torch")

# the tiny teacher's 2 x 16 embedding, reproduced by a student with the fast model's front
# end (log-mel frames at hop 500, spectrum of 8000-sample pieces) at 1 s windows
STUDENT = {
    **TINY_RECIPE,
    "n_fft": 512,
    "hop": 500,
    "spectrogram": "logmel",
    "n_mels": 32,
    "spectrum_segment": 8000,
    "cbam": False,
}


def test_the_loss_is_zero_only_when_the_student_matches_the_teacher():
    from export.distil import distil_loss

    t = torch.nn.functional.normalize(torch.randn(8, 32), dim=1)
    assert float(distil_loss(t, t, 1.0)) == pytest.approx(0.0, abs=1e-6)
    other = torch.nn.functional.normalize(torch.randn(8, 32), dim=1)
    assert float(distil_loss(other, t, 1.0)) > 0.5
    # the relation term alone sees a rotated copy (same distances) as perfect
    q, _ = torch.linalg.qr(torch.randn(32, 32))
    assert float(distil_loss(t @ q, t, 1.0) - distil_loss(t @ q, t, 0.0)) == pytest.approx(0.0, abs=1e-5)


def test_distil_trains_a_student_that_exports_and_names_its_teacher(tmp_path, tiny_bundle):
    from edge_agent.model.bundle import Bundle
    from export.distil import DistilArgs, distil
    from export.onnx_export import export_bundle

    ck = tmp_path / "student.ckpt"
    r = distil(
        DistilArgs(
            teacher=str(tiny_bundle),
            data=[str(DATA / "valve")],
            out=str(ck),
            recipe_config=STUDENT,
            epochs=2,
            batch_size=16,
            augment_copies=1,
            exclude_test_of=[],
            held_out=0.3,
        ),
        progress=False,
    )
    assert r["epochs"] == 2 and np.isfinite(r["final_loss"])
    assert set(r["held_out"]) == {"cosine", "pair_distance_mae"}
    out = tmp_path / "bundle"
    export_bundle(ck, out, name="student", version="t", parity_clips=[DATA / "valve" / "train"], log=lambda *_: None)
    b, teacher = Bundle.load(out), Bundle.load(tiny_bundle)
    assert b.embedding_dim == teacher.embedding_dim
    spec = {f.name: f for f in b.frontend.features}
    assert spec["spectrum"].segment == 8000 and spec["spectrogram"].hop == 500
    assert spec["spectrogram"].kind == "logmel" and spec["spectrogram"].shape(b.frontend.window_samples)[-1] == 32
    d = json.loads((out / "manifest.json").read_text())["training"]["distillation"]
    assert d["teacher"]["sha256"] == teacher.sha256 and len(d["held_out"]) == 2
    assert d["pool_windows"] > 0 and d["held_out_windows"] > 0
    # it learnt its pool's clips (here the test normals too) and, through the teacher, the teacher's
    from edge_agent.audio.fingerprint import audio_fingerprint
    from edge_agent.audio.wavio import read_wav

    pool = {audio_fingerprint(*read_wav(p)) for p in (DATA / "valve").glob("*/*normal*.wav")}
    assert teacher.trained_on() and teacher.trained_on() | pool == b.trained_on()


def test_distil_refuses_a_student_that_cannot_match_the_teacher(tmp_path, tiny_bundle):
    from export.distil import DistilArgs, distil

    args = dict(teacher=str(tiny_bundle), data=[str(DATA / "valve")], out=str(tmp_path / "s.ckpt"), epochs=1)
    with pytest.raises(ValueError, match="branch_dim"):
        distil(DistilArgs(**args, recipe_config={**STUDENT, "branch_dim": 8}), progress=False)
    with pytest.raises(ValueError, match="windows"):
        distil(DistilArgs(**args, recipe_config={**STUDENT, "window_seconds": 2.0}), progress=False)
    with pytest.raises(ValueError, match="spectrogram must be"):
        distil(DistilArgs(**args, recipe_config={**STUDENT, "spectrogram": "mel"}), progress=False)


def test_the_build_script_describes_the_fast_bundle_in_the_tree():
    # ./scripts/build-default-model is the one way to rebuild it: a rebuild must give the same
    # student (its recipe settings) under the same version, not relabel it
    from edge_agent.model.bundle import Bundle
    from export.build_default import FAST_VERSION, STUDENT

    fast = Bundle.load("fast")
    assert fast.version == FAST_VERSION
    shipped = fast.manifest.recipe_config
    assert {k: shipped.get(k) for k in STUDENT} == STUDENT


def test_the_spectrum_branch_hidden_width_is_a_setting():
    from export.recipes import build_config, build_model

    base = {**STUDENT, "branch_dim": 16}
    linears = lambda m: [(l.in_features, l.out_features) for l in m.spectrum.dense if hasattr(l, "in_features")]  # noqa: E731,E741
    wide = linears(build_model("dualbranch", base)[0])
    flat = wide[0][0]  # the flattened convolution output
    # 0 (the default) keeps the layout existing checkpoints were saved with: branch_dim wide
    assert wide == [(flat, 16), (16, 16), (16, 16)]
    narrow = build_model("dualbranch", {**base, "spec_hidden": 8})[0]
    assert linears(narrow) == [(flat, 8), (8, 8), (8, 16)]
    assert narrow.embedding_dim == 32  # the embedding keeps its size
    with pytest.raises(ValueError, match="spec_hidden"):
        build_config("dualbranch", {**base, "spec_hidden": -1})


def test_the_build_script_passes_its_distillation_settings_on(tmp_path, monkeypatch):
    """``--distil-only`` with a seed, copies and epochs distils from the default bundle in --models
    with exactly those settings and writes the fast bundle beside it, without training the ensemble
    (how docs/model.md repeats a distillation)."""
    from export import build_default

    got = {}

    def fake_distil(args, progress=True):
        got["args"] = args
        return {"checkpoint": args.out}

    def refuse_train(args):
        raise AssertionError("--distil-only must not train the ensemble")

    monkeypatch.setattr(build_default, "distil", fake_distil)
    monkeypatch.setattr(build_default, "train", refuse_train)
    monkeypatch.setattr(build_default, "export_bundle", lambda *a, **k: got.setdefault("export", (a, k)))
    argv = ["--distil-only", "--distil-seed", "3", "--distil-copies", "6", "--distil-epochs", "7"]
    assert build_default.main([*argv, "--work", str(tmp_path / "w"), "--models", str(tmp_path / "m")]) == 0
    a = got["args"]
    assert (a.seed, a.augment_copies, a.epochs) == (3, 6, 7)
    assert a.teacher == str(tmp_path / "m" / "default") and a.recipe_config == build_default.STUDENT
    assert a.exclude_test_of == build_default.EXCLUDE and a.out == str(tmp_path / "w" / "distilled.ckpt")
    (ckpt, dest), kw = got["export"]
    assert (str(ckpt), dest) == (a.out, tmp_path / "m" / "fast")
    assert kw == {"name": "fast", "version": build_default.FAST_VERSION}
