"""Field adaptation (``--adapt``): the label-free check and its synthetic faults, the held-out split,
the bounded audio and the learning period's sample (in-process, on real clips), then end to end on
real clips with small settings: ``calibrate --adapt`` writes a per-machine bundle that ``run`` picks
up unchanged (with torch refused in the agent), ``evaluate --adapt`` reports what adapting did, and a
learning period with ``--adapt`` keeps its sample, adapts in a child process and reloads."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from calibration.adapt_audio import Piece, bounded, pieces_from_paths, split_held_out
from calibration.adapt_check import FAULTS, compare, faulted, synthetic_fault
from calibration.adapt_sample import AudioSample
from calibration.embed import CalibrationError
from edge_agent.audio.wavio import read_wav
from edge_agent.model.bundle import Bundle
from edge_agent.scoring.bank import MemoryBank, bank_path
from tests.agentproc import AgentProcess
from tests.cliproc import cli
from tests.conftest import DEMO

SR = 16000


def _windows(n: int = 30) -> np.ndarray:
    files = sorted((DEMO / "enrol").glob("*.wav"))
    x = np.concatenate([read_wav(f)[0] for f in files[:5]])
    x = x if x.ndim == 1 else x[:, 0]
    return np.stack([x[i * SR : i * SR + 2 * SR] for i in range(n)]).astype(np.float32)


def _band_embed(w: np.ndarray) -> np.ndarray:
    """A plain embedding that hears spectra: log energy in 64 bands, unit length, centred."""
    spec = np.abs(np.fft.rfft(w, axis=1)) ** 2
    e = np.log(np.stack([b.sum(1) for b in np.array_split(spec, 64, axis=1)], 1) + 1e-9)
    e -= e.mean(1, keepdims=True)
    return e / np.linalg.norm(e, axis=1, keepdims=True)


def test_every_synthetic_fault_changes_the_sound_and_only_a_hearing_model_tells_them_apart():
    w = _windows()
    rng = np.random.default_rng(0)
    for kind in FAULTS:
        y = synthetic_fault(w[0], kind, rng, SR)
        assert y.shape == w[0].shape and y.dtype == np.float32 and np.isfinite(y).all()
        assert np.abs(y - w[0]).max() > 1e-4, kind
    with pytest.raises(ValueError, match="unknown synthetic fault"):
        synthetic_fault(w[0], "gremlin", rng, SR)
    changed, kinds = faulted(w[20:], SR)
    assert sorted(set(kinds)) == sorted(FAULTS)
    deaf = lambda x: np.tile(np.eye(4)[0], (len(x), 1))  # noqa: E731 - every window the same point
    r = compare(deaf, _band_embed, w[:20], w[20:], SR)
    assert r["generic"]["auc"] == pytest.approx(0.5)
    assert r["adapted"]["auc"] > 0.6 and r["kept"]
    assert compare(_band_embed, deaf, w[:20], w[20:], SR)["kept"] is False  # worse than the generic: not kept
    lo, hi = r["difference"]["interval95"]
    assert lo <= r["difference"]["value"] <= hi


def test_the_held_out_stretch_is_the_end_of_each_domain_and_audio_is_bounded():
    a = np.zeros(SR * 10, np.float32)
    pieces = [Piece(a, f"s{i}", "source") for i in range(8)] + [Piece(a, f"t{i}", "target") for i in range(4)]
    learn, held = split_held_out(pieces, 0.25)
    assert [p.group for p in held] == ["s6", "s7", "t3"]
    assert len(learn) + len(held) == 12 and not {p.group for p in learn} & {p.group for p in held}
    learn, held = split_held_out(pieces[:3] + pieces[8:9], 0.25)  # domains too small alone
    assert [p.group for p in held] == ["s2"]
    with pytest.raises(CalibrationError, match="at least 4"):
        split_held_out(pieces[:3], 0.25)
    kept = bounded(pieces, 45, SR, np.random.default_rng(0))
    assert len(kept) == 4 and [p.group for p in kept] == [p.group for p in pieces if p in kept]  # order kept


def test_a_learning_periods_sample_is_bounded_and_keeps_the_period_order(tmp_path, monkeypatch):
    monkeypatch.setattr("calibration.adapt_sample.SAMPLE_SECONDS", 40.0)
    s = AudioSample(tmp_path, "m1", SR, 2.0, 1.0, 10.0, np.random.default_rng(0))
    assert s.max_pieces == 4 and s.every == 2
    w = _windows(20)
    for block in range(1, 31):
        for i in range(10):
            s.add(w[i] * (1 + block / 100))
        s.close_block(block)
    files = s.pieces()
    assert len(files) == 4 and files == sorted(files)
    assert all(len(read_wav(f)[0]) == 5 * 2 * SR for f in files)  # every other window of the block
    blocks = [int(f.stem.split("-")[1]) for f in files]
    assert max(blocks) > 4  # the reservoir took later blocks in


@pytest.fixture(scope="module")
def fast_calibrated(tmp_path_factory):
    """The fast model adapted to the demo fan (enrolment clips) with small settings, kept whatever the check says."""
    pytest.importorskip("torch")
    st = tmp_path_factory.mktemp("adapt") / "state"
    r = cli(
        "calibrate", "--machine", "fan01", "--from", DEMO / "enrol", "--state-dir", st, "--model", "fast",
        "--adapt", "--adapt-always", "--adapt-steps", "8", "--no-plot",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    return st, r


def test_calibrate_adapt_writes_the_machines_own_bundle_and_its_bank(fast_calibrated):
    st, r = fast_calibrated
    assert "label-free check on" in r.stdout and "enrolling with the adapted model fast+fan01" in r.stdout
    own = Bundle.load(st / "machines" / "fan01" / "model")
    fast = Bundle.load("fast")
    a = own.manifest.adapted
    assert a["from"]["sha256"] == fast.sha256 and a["machine"] == "fan01" and a["steps"] == 8
    assert a["audio"]["pieces_learnt"] + a["audio"]["pieces_held_out"] == 10 and a["audio"]["pieces_held_out"] >= 2
    assert own.manifest.inputs == fast.manifest.inputs and own.manifest.parity_max_abs_diff <= 1e-4
    assert own.sha256 != fast.sha256 and own.manifest.training["adapted_from"] == "fast"
    learnt, _ = pieces_from_paths([DEMO / "enrol"], SR, 2.0)
    assert {p.fingerprint for p in learnt[:8]} <= own.trained_on()  # what it heard: thresholds fit without it
    bank = MemoryBank.load(bank_path(st, "fan01"))
    assert bank.model_sha256 == own.sha256
    assert not (st / "machines" / "fan01" / "model.new").exists()


def test_run_scores_with_the_adapted_model_without_torch(fast_calibrated, tmp_path):
    st, _ = fast_calibrated
    state = tmp_path / "st"
    shutil.copytree(st, state)
    replay = tmp_path / "replay"
    replay.mkdir()
    for f in sorted((DEMO / "replay").glob("*.wav")):
        (replay / f.name).symlink_to(f)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"node_id: n1\nstate_dir: {state}\nengine: cpu\nmodel: fast\nmachines:\n  fan01:\n"
        f"    input: {{file: {replay}, realtime: false}}\n"
    )
    r = cli("run", "--config", cfg, block_torch=True)
    assert r.returncode == 0, r.stderr
    assert "fan01: runs its adapted model fast+fan01" in r.stderr
    assert "UNCALIBRATED" not in r.stderr and "recording 04_normal_id_00_00000011.wav: 9 windows" in r.stderr
    # a bank made with the generic model makes the machine run the generic one again
    r = cli("calibrate", "--machine", "fan01", "--from", DEMO / "enrol", "--state-dir", state, "--model", "fast",
            "--replace", "--no-plot")  # fmt: skip
    assert r.returncode == 0, r.stderr
    r = cli("run", "--config", cfg, block_torch=True)
    assert r.returncode == 0 and "runs its adapted model" not in r.stderr


def test_adapt_refuses_an_adapted_model_and_an_unusable_request(fast_calibrated, tmp_path):
    st, _ = fast_calibrated
    own = st / "machines" / "fan01" / "model"
    r = cli("calibrate", "--machine", "m2", "--from", DEMO / "enrol", "--state-dir", tmp_path, "--model", own,
            "--adapt", "--no-plot")  # fmt: skip
    assert r.returncode == 2 and "already adapted to one machine" in r.stderr and "Traceback" not in r.stderr
    r = cli("calibrate", "--machine", "m2", "--from", DEMO / "enrol", "--state-dir", tmp_path, "--adapt",
            "--adapt-steps", "0")  # fmt: skip
    assert r.returncode == 2 and "--adapt-steps must be 1 or more" in r.stderr
    r = cli("calibrate", "--machine", "m2", "--from", DEMO / "replay" / "01_normal_id_00_00000018.wav",
            "--state-dir", tmp_path, "--model", "fast", "--adapt", "--adapt-steps", "2")  # fmt: skip
    assert r.returncode == 2 and "adaptation needs at least 4" in r.stderr and "Traceback" not in r.stderr


def test_evaluate_adapt_runs_the_first_shot_protocol_and_reports_the_check(tmp_path):
    pytest.importorskip("torch")
    data = tmp_path / "data" / "fan"
    (data / "train").mkdir(parents=True)
    (data / "test").mkdir()
    for f in sorted((DEMO / "enrol").glob("*.wav")):
        (data / "train" / f.name).symlink_to(f)
    for f in sorted((DEMO / "replay").glob("*.wav")):
        (data / "test" / f.name.split("_", 1)[1]).symlink_to(f)
    out = tmp_path / "ev"
    r = cli("evaluate", data.parent, "--model", "fast", "--adapt", "--adapt-steps", "4", "--out", out)
    assert r.returncode == 0, r.stderr
    got = json.loads((out / "results.json").read_text())["machines"]["fan"]
    a = got["adaptation"]
    assert a["steps"] == 4 and a["from"]["name"] == "fast" and a["used"] == a["kept"]
    assert 0 <= a["check"]["adapted"]["auc"] <= 1 and "fan: adapted model" in r.stderr
    assert (out / "adapted" / "fan" / "manifest.json").exists() == a["kept"]


def test_a_learning_period_with_adapt_keeps_a_sample_adapts_in_a_child_and_reloads(tmp_path):
    pytest.importorskip("torch")
    replay = tmp_path / "replay"
    replay.mkdir()
    for f in sorted((DEMO / "enrol").glob("*.wav")):
        (replay / f.name).symlink_to(f)
    state = tmp_path / "st"
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"node_id: n1\nstate_dir: {state}\nengine: cpu\nmodel: fast\nmachines:\n  fan01:\n"
        f"    input: {{file: {replay}, realtime: false, loop: true}}\n"
    )
    r = cli("calibrate", "--machine", "fan01", "--config", cfg, "--learn", "60s", "--adapt", "--adapt-steps", "6")
    assert r.returncode == 0 and "At its end the agent adapts the model" in r.stdout, r.stderr
    req = json.loads((state / "machines" / "fan01" / "learning.json").read_text())
    assert req["adapt"] is True and req["adapt_steps"] == 6
    agent = AgentProcess("run", "--config", cfg)
    try:
        assert agent.wait_for("learning done after 60 s", 120, stderr=True), agent.err[-5:]
        assert agent.wait_for("adapting the model to the learnt audio", 30, stderr=True)
        assert agent.wait_for("reload: fan01: bank version", 240, stderr=True), agent.err[-5:]
        verdict = next(ln for ln in agent.err if "fan01: adapted model" in ln)
        kept = "adapted model kept" in verdict
        if kept:
            assert agent.wait_for("fan01: runs its adapted model fast+fan01", 30, stderr=True)
        assert not (state / "machines" / "fan01" / "adapt").exists()  # the sample is gone once used
    finally:
        agent.kill()
    bank = MemoryBank.load(bank_path(state, "fan01"))
    own = state / "machines" / "fan01" / "model"
    assert own.is_dir() == kept
    assert bank.model_sha256 == (Bundle.load(own).sha256 if kept else Bundle.load("fast").sha256)


def test_pieces_from_paths_skip_anomalous_and_unusable_clips(tmp_path):
    (tmp_path / "short.wav").write_bytes((DEMO / "enrol" / "normal_id_00_00000000.wav").read_bytes()[:2000])
    (tmp_path / "anomaly_id_00_00000002.wav").symlink_to(DEMO / "replay" / "02_anomaly_id_00_00000002.wav")
    (tmp_path / "normal_id_00_00000001.wav").symlink_to(DEMO / "enrol" / "normal_id_00_00000001.wav")
    pieces, skipped = pieces_from_paths([tmp_path], SR, 2.0)
    assert [Path(p.group).name for p in pieces] == ["normal_id_00_00000001.wav"] and pieces[0].fingerprint
    assert {Path(p).name for p, _ in skipped} == {"short.wav", "anomaly_id_00_00000002.wav"}


@pytest.mark.parametrize("name", ["default", "fast"])
def test_a_built_in_graph_runs_trains_and_exports_back_as_it_was(name, tmp_path):
    torch = pytest.importorskip("torch")
    from edge_agent.engine import OnnxEngine
    from export.onnx_torch import torch_model

    b = Bundle.load(name)
    feats = b.frontend(_windows(3))
    m = torch_model(b.model_path).eval()
    x = [torch.from_numpy(feats[n]) for n in b.manifest.input_names]
    y = m(*x)
    ref = OnnxEngine(b, "cpu").infer(feats)["embedding"]
    assert np.abs(y.detach().numpy() - ref).max() < 1e-5
    y.sum().backward()
    assert all(p.grad is not None for p in m.parameters())
    assert not any(n.startswith("w") and "running" in n for n, _ in m.named_parameters())
    out = tmp_path / "m.onnx"
    torch.onnx.export(m, tuple(t[:2] for t in x), str(out), input_names=b.manifest.input_names,
                      output_names=["embedding"], opset_version=17, dynamo=False,
                      dynamic_axes={n: {0: "batch"} for n in (*b.manifest.input_names, "embedding")})  # fmt: skip
    import onnxruntime as ort

    got = ort.InferenceSession(str(out)).run(None, feats)[0]  # three windows through a graph traced on two
    assert np.abs(got - ref).max() < 1e-5


def test_a_graph_with_an_operator_it_cannot_read_is_refused_by_name():
    pytest.importorskip("torch")
    import onnx
    from onnx import TensorProto, helper

    from export.onnx_torch import OnnxModule, UnsupportedGraph

    g = helper.make_graph(
        [helper.make_node("Tanh", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    with pytest.raises(UnsupportedGraph, match="also has Tanh"):
        OnnxModule(helper.make_model(g))
    assert onnx.checker.check_model(helper.make_model(g)) is None


def test_the_end_of_period_adaptation_counts_a_failure_without_a_dead_thread(tmp_path):
    """A child that fails is a counted fault with the command to run by hand, never a dead thread
    (health would restart a monitoring agent for an optional job); the sample stays for the retry.
    One that succeeds deletes the sample and asks for a reload."""
    import sys
    import threading

    from calibration.adapt_sample import Adaptation, adapt_command, start_adaptation
    from edge_agent.faults import Faults

    sample = tmp_path / "adapt"
    sample.mkdir()
    faults, reloads = Faults(), threading.Event()
    a = Adaptation(config=tmp_path / "c.yaml", corpus=("/data/dcase",), steps=7, reload=reloads.set, faults=faults)
    cmd = adapt_command("fan01", tmp_path, sample, "default", a, "knn+indicators")
    assert cmd[3:] == [
        "calibrate", "--machine", "fan01", "--from", str(sample), "--state-dir", str(tmp_path), "--model", "default",
        "--adapt", "--only-if-adapted", "--no-plot", "--config", str(tmp_path / "c.yaml"), "--corpus", "/data/dcase",
        "--score", "knn+indicators", "--adapt-steps", "7",
    ]  # fmt: skip
    fail = [sys.executable, "-c", "import sys; print('no torch here', file=sys.stderr); sys.exit(2)", "calibrate"]
    start_adaptation(fail, sample, "fan01", a).join(30)
    assert faults.counts == {"fan01: adaptation": 1} and faults.problem() is None
    assert (
        "no torch here" in faults.last["fan01: adaptation"]
        and "edge-agent calibrate" in faults.last["fan01: adaptation"]
    )
    assert sample.is_dir() and not reloads.is_set()
    ok = [sys.executable, "-c", "print('adapted model kept (check)')", "calibrate"]
    start_adaptation(ok, sample, "fan01", a).join(30)
    assert reloads.is_set() and not sample.exists() and faults.total() == 1


def test_adaptation_cuts_a_recording_into_the_chunks_enrolment_uses(tmp_path):
    from calibration.adapt_audio import pieces_from_recording
    from calibration.embed import recording_chunks

    files = sorted((DEMO / "enrol").glob("*.wav"))[:2]
    clips = [read_wav(f)[0] for f in files]
    clips = [c if c.ndim == 1 else c[:, 0] for c in clips]
    # sound, five seconds of digital silence, sound, and a 3 s tail (longer than a 2 s window)
    x = np.concatenate([clips[0], np.zeros(5 * SR, np.float32), clips[1], clips[0][: 3 * SR]]).astype(np.float32)
    pieces = pieces_from_recording(x, SR, 2 * SR)
    chunks = list(recording_chunks(x, SR, 2 * SR))
    assert [p.group for p in pieces] == [g for g, _, _, silent in chunks if not silent]
    assert "chunk2" not in [p.group for p in pieces] and len(chunks) == 6 and len(pieces[-1].audio) == 3 * SR
