"""Engine selection and the TensorRT paths, as far as a machine without a GPU allows."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from edge_agent.engine import EngineError, OnnxEngine, open_engine
from edge_agent.engine.cache import cache_key, engine_cache_dir, engine_path
from edge_agent.engine.onnx import choose_providers
from edge_agent.model.bundle import Bundle
from export.tensorrt_build import profile_shapes
from tests.test_run_replay import cli

HAS_TRT = importlib.util.find_spec("tensorrt") is not None


def test_auto_prefers_tensorrt_then_cuda_then_cpu():
    assert choose_providers("auto", ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert choose_providers("auto", ["CUDAExecutionProvider", "CPUExecutionProvider"]) == [
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    ]
    assert choose_providers("auto", ["CPUExecutionProvider", "TensorrtExecutionProvider", "CUDAExecutionProvider"]) == [
        "TensorrtExecutionProvider",
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    ]
    assert (
        choose_providers("tensorrt", ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"])[0]
        == "TensorrtExecutionProvider"
    )


def test_a_missing_gpu_provider_is_an_error_not_a_silent_fallback():
    with pytest.raises(EngineError, match="needs CUDAExecutionProvider.*onnxruntime-gpu"):
        choose_providers("cuda", ["CPUExecutionProvider"])
    with pytest.raises(EngineError, match="not an ONNX Runtime provider"):
        choose_providers("gpu", ["CPUExecutionProvider"])


def test_cpu_engine_logs_and_warms_up(caplog):
    import logging

    with caplog.at_level(logging.INFO, logger="edge_agent.engine"):
        e = OnnxEngine(Bundle.load("default"), "cpu")
    assert e.providers == ["CPUExecutionProvider"] and "CPUExecutionProvider" in caplog.text
    assert e.warm_up() > 0


def test_cache_keys_and_paths(tmp_path):
    assert cache_key("10.3.0.26", "Orin (nvgpu)", "fp16") == "trt10.3.0.26_orin-nvgpu_fp16"
    assert cache_key("10.0.1", "NVIDIA H100 80GB HBM3", "fp32") == "trt10.0.1_nvidia-h100-80gb-hbm3_fp32"
    with pytest.raises(ValueError):
        cache_key("10", "x", "int8")
    b = Bundle.load("default")
    assert engine_path(b, "10.3", "Orin", "fp16").parent == b.path / "engines"
    d = engine_cache_dir(b, tmp_path)
    assert d.parent == tmp_path and d.name.startswith("default-") and b.sha256[:12] in d.name


def test_profile_shapes_follow_the_manifest():
    b = Bundle.load("default")
    shapes = profile_shapes(b, max_batch=16, opt_batch=4)
    assert set(shapes) == {"spectrum", "spectrogram"}
    mn, opt, mx = shapes["spectrogram"]
    assert mn[0] == 1 and opt[0] == 4 and mx[0] == 16 and mn[1:] == tuple(b.manifest.inputs[1].shape[1:])


@pytest.mark.skipif(HAS_TRT, reason="TensorRT is installed here")
def test_without_tensorrt_build_engine_exits_2_and_says_how_to_install():
    r = cli("build-engine", "default")
    assert r.returncode == 2
    assert "TensorRT is not installed" in r.stderr and "pip install 'edge-agent[tensorrt]'" in r.stderr


@pytest.mark.skipif(HAS_TRT, reason="TensorRT is installed here")
def test_native_trt_engine_without_tensorrt_is_explained():
    with pytest.raises(EngineError, match="TensorRT is not installed"):
        open_engine(Bundle.load("default"), "trt")


def test_engine_output_is_normalised_for_a_batch():
    b = Bundle.load("default")
    e = OnnxEngine(b, "cpu")
    fe = b.frontend
    x = np.random.default_rng(0).normal(0, 0.05, (3, fe.window_samples)).astype(np.float32)
    emb = e.embed(fe(x))
    assert emb.shape == (3, b.embedding_dim)
    # the ensemble: four unit-length members scaled by 1/2 -> unit length overall
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)


SPIN = "session.intra_op.allow_spinning"


def _spins(engine: OnnxEngine) -> bool:
    opts = engine.session.get_session_options()
    try:
        return opts.get_session_config_entry(SPIN) != "0"
    except Exception:  # noqa: BLE001 - not set: ONNX Runtime's default, which spins
        return True


@pytest.mark.parametrize(
    "inputs, spins",
    [
        ([{"file": "replay", "realtime": True}], False),  # a live stream: one window a second
        ([{"file": "replay", "realtime": True}, {"file": "replay", "realtime": False}], True),  # back to back
    ],
)
def test_the_agent_engine_spins_only_when_windows_come_back_to_back(tmp_path, inputs, spins):
    """Spinning worker threads cost about 55 ms of CPU per window at one window a second
    (docs/performance.md), so a real-time agent turns it off; a replay as fast as it can be scored
    keeps it (it runs batches back to back)."""
    from edge_agent.config import parse_config
    from edge_agent.runtime.daemon import agent_from_config

    demo = Path(__file__).resolve().parent.parent / "edge_agent" / "demo_clips"
    machines = {f"m{i}": {"input": {**inp, "file": str(demo / inp["file"])}} for i, inp in enumerate(inputs)}
    cfg = parse_config({"state_dir": str(tmp_path), "model": "fast", "engine": "cpu", "machines": machines})
    agent = agent_from_config(cfg, [])
    assert _spins(agent.engine) is spins
    assert _spins(OnnxEngine(Bundle.load("fast"), "cpu")) is True  # calibration and evaluation: back to back
    # and the agent keeps no memory arena nor memory pattern (9 + 4.5 MB of a fast replay's batches
    # for the default model)
    opts = agent.engine.session.get_session_options()
    assert opts.enable_cpu_mem_arena is False and opts.enable_mem_pattern is False
    plain = OnnxEngine(Bundle.load("fast"), "cpu").session.get_session_options()
    assert plain.enable_cpu_mem_arena is True and plain.enable_mem_pattern is True
