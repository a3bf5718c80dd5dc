"""edge-agent quantize: an INT8 copy of a bundle, calibrated on real clips, usable by the runtime."""

import json

import numpy as np

from edge_agent.engine import OnnxEngine
from edge_agent.model.bundle import Bundle
from edge_agent.scoring.bank import BankError, MemoryBank
from tests.cliproc import cli
from tests.conftest import DATA, DEMO


def test_quantize_writes_an_int8_bundle_the_runtime_runs(tmp_path, tiny_bundle):
    out = tmp_path / "int8"
    r = cli(
        "quantize", str(tiny_bundle), "--out", str(out), "--clips", str(DATA / "valve" / "train"), "--windows", "12"
    )
    assert r.returncode == 0, r.stderr
    assert "calibrated on 12 windows" in r.stdout
    q, f = Bundle.load(out), Bundle.load(tiny_bundle)
    m = json.loads((out / "manifest.json").read_text())
    assert m["quantization"]["kind"] == "int8-static-qdq" and m["quantization"]["from"]["sha256"] == f.sha256
    assert q.sha256 != f.sha256 and q.frontend == f.frontend
    assert q.trained_on() and q.trained_on() == f.trained_on()  # the same weights learnt the same clips
    # the graph really holds INT8 weights
    import onnx

    g = onnx.load(str(q.model_path)).graph
    assert any(t.data_type == onnx.TensorProto.INT8 for t in g.initializer)
    # on real windows the INT8 embeddings stay close to the FP32 ones
    from edge_agent.audio.convert import prepare
    from edge_agent.audio.wavio import read_wav
    from edge_agent.model.outputs import embed_signal

    x, sr = read_wav(sorted((DEMO / "replay").glob("*.wav"))[0])
    x = prepare(x, sr, f.frontend.sample_rate)
    e32 = embed_signal(OnnxEngine(f, "cpu"), f.frontend, x, f.frontend.sample_rate)
    e8 = embed_signal(OnnxEngine(q, "cpu"), q.frontend, x, q.frontend.sample_rate)
    assert e8.shape == e32.shape
    np.testing.assert_allclose(np.linalg.norm(e8, axis=1), 1.0, atol=1e-4)
    assert float(np.min(np.sum(e8 * e32, axis=1))) > 0.9
    # a bank made with the FP32 model is refused by name
    bank = MemoryBank(e32, np.array(["source"] * len(e32)), np.array(["sample"] * len(e32)), f.sha256)
    try:
        bank.check_model(q.sha256)
        raise AssertionError("a bank of the FP32 model was accepted by the INT8 one")
    except BankError as err:
        assert "recalibrate" in str(err)


def test_quantize_refuses_clips_that_are_not_audio(tmp_path, tiny_bundle):
    (tmp_path / "empty").mkdir()
    r = cli("quantize", str(tiny_bundle), "--out", str(tmp_path / "q"), "--clips", str(tmp_path / "empty"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "no readable clips" in r.stderr or "no WAV" in r.stderr, r.stderr
    assert not (tmp_path / "q").exists()
    r = cli("quantize", "no-such-model", "--out", str(tmp_path / "q"), "--clips", str(DATA / "valve" / "train"))
    assert r.returncode == 2 and "no-such-model" in r.stderr
