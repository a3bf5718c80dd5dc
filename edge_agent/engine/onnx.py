"""ONNX Runtime engine (CPU, CUDA or TensorRT execution providers).

It takes the front end's named features for a batch of windows and returns L2-normalised
embeddings (batch, dim). The providers actually in use are logged and checked against what was
asked for: a silent fallback from GPU to CPU would make a Jetson miss real time unnoticed.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Optional

import numpy as np

from edge_agent.engine.base import EngineError, l2_normalise
from edge_agent.engine.cache import engine_cache_dir
from edge_agent.model.bundle import Bundle

log = logging.getLogger("edge_agent.engine")

PROVIDERS = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}


def choose_providers(kind: str, available: list[str]) -> list[str]:
    """Execution providers for an ``engine:`` setting, in priority order.

    ``auto`` takes TensorRT, CUDA, CPU in that order of what this onnxruntime build has; a named
    GPU provider that is not available is an error (never a quiet CPU fallback)."""
    if kind == "auto":
        order = [PROVIDERS[k] for k in ("tensorrt", "cuda", "cpu")]
        chosen = [p for p in order if p in available]
        return chosen or ["CPUExecutionProvider"]
    if kind not in PROVIDERS:
        raise EngineError(f"engine {kind!r} is not an ONNX Runtime provider; use auto, cpu, cuda, tensorrt or trt")
    want = PROVIDERS[kind]
    if want not in available:
        hint = {
            "cuda": "install onnxruntime-gpu (on a Jetson: the JetPack build of onnxruntime-gpu)",
            "tensorrt": "install onnxruntime-gpu built with TensorRT and TensorRT 10",
        }.get(kind, "")
        raise EngineError(
            f"engine {kind!r} needs {want}, which this onnxruntime does not have (has: {', '.join(available)}); {hint}"
        )
    # Keep CPU last so that nodes the GPU provider cannot run still run.
    return (
        [want]
        + (["CUDAExecutionProvider"] if kind == "tensorrt" and "CUDAExecutionProvider" in available else [])
        + (["CPUExecutionProvider"] if want != "CPUExecutionProvider" else [])
    )


class OnnxEngine:
    def __init__(
        self,
        bundle: Bundle,
        kind: str = "auto",
        threads: int = 0,
        cache_dir: Optional[Path] = None,
        spin: bool = True,
        arena: bool = True,
    ):
        """``spin``: ONNX Runtime's worker threads busy-wait after each run for the next one. That
        pays when runs come back to back (calibration, a replay as fast as it can be scored), but a
        live stream runs one window a second, and each run then cost about 55 ms of spinning for
        1.4 ms of work (measured, docs/performance.md): the agent passes ``spin=False`` then.
        ``arena``: ONNX Runtime's CPU memory arena, which keeps the largest batch's buffers (grown in
        powers of two) for the session's life, and its memory pattern, a block planned and kept
        per input shape. The agent runs without both: 9 + 4.5 MB less for the default model at the
        batches of a fast replay, with no measurable cost in time (docs/performance.md)."""
        import onnxruntime as ort

        self.bundle = bundle
        self.kind = kind
        providers = choose_providers(kind, ort.get_available_providers())
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.enable_cpu_mem_arena = arena
        opts.enable_mem_pattern = arena
        if not spin:
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        provider_opts = []
        for p in providers:
            if p == "TensorrtExecutionProvider":
                cache = engine_cache_dir(bundle, cache_dir) / "onnxruntime-trt"
                provider_opts.append(
                    {
                        "trt_engine_cache_enable": True,
                        "trt_engine_cache_path": str(cache),
                        "trt_timing_cache_enable": True,
                    }
                )
            else:
                provider_opts.append({})
        try:
            self.session = ort.InferenceSession(
                str(bundle.model_path), sess_options=opts, providers=providers, provider_options=provider_opts
            )
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise EngineError(f"cannot load {bundle.model_path} in ONNX Runtime ({e}); re-export the bundle") from None
        self.providers = self.session.get_providers()
        if self.providers[0] != providers[0]:
            raise EngineError(
                f"asked for {providers[0]} but ONNX Runtime runs {self.providers[0]}; check the GPU drivers and "
                "onnxruntime-gpu"
            )
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        declared = bundle.manifest.input_names
        if sorted(self.input_names) != sorted(declared):
            raise EngineError(
                f"{bundle.model_path}: model inputs {self.input_names} differ from the manifest's {declared}; "
                "re-export the bundle"
            )
        self._lock = threading.Lock()  # one run at a time keeps the thread pool from oversubscribing
        log.info("engine: ONNX Runtime %s with %s (%s)", ort.__version__, ", ".join(self.providers), bundle.name)

    def infer(self, features: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """All outputs: ``embedding`` (batch, n * dim), L2-normalised per embedding, and any other
        output the bundle declares (e.g. ``logits`` of a classifier head) as the model gives it."""
        feed = {n: np.ascontiguousarray(features[n], dtype=np.float32) for n in self.input_names}
        with self._lock:
            outs = self.session.run(None, feed)
        res = dict(zip(self.output_names, outs))
        e = res["embedding"]
        res["embedding"] = l2_normalise(e.reshape(e.shape[0], -1, self.bundle.embedding_dim)).reshape(e.shape[0], -1)
        return res

    def embed(self, features: dict[str, np.ndarray]) -> np.ndarray:
        return self.infer(features)["embedding"]

    def warm_up(self) -> float:
        """One inference on silence so that the first real window is not slow (and a broken
        provider fails before the agent says it is ready). Returns seconds taken."""
        fe = self.bundle.frontend
        t = time.perf_counter()
        self.embed(fe(np.zeros((1, fe.window_samples), dtype=np.float32)))
        return time.perf_counter() - t
