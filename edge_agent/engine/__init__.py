"""Inference engines: ONNX Runtime (``onnx``) and native TensorRT (``tensorrt``), one protocol
(``base.Engine``) and one factory."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from edge_agent.engine.base import Engine, EngineError, l2_normalise
from edge_agent.engine.onnx import OnnxEngine
from edge_agent.model.bundle import Bundle

__all__ = ["Engine", "EngineError", "OnnxEngine", "l2_normalise", "open_engine"]


def open_engine(
    bundle: Bundle,
    kind: str = "auto",
    threads: int = 0,
    cache_dir: Optional[Path] = None,
    spin: bool = True,
    arena: bool = True,
) -> Engine:
    """The engine for an ``engine:`` config value: ``trt`` is native TensorRT, the rest ONNX Runtime.
    ``spin=False`` for work that arrives in real time, ``arena=False`` to keep no memory arena
    nor memory pattern (``OnnxEngine``)."""
    if kind == "trt":
        from edge_agent.engine.tensorrt import TensorRTEngine

        return TensorRTEngine(bundle, cache_dir=cache_dir)
    return OnnxEngine(bundle, kind, threads, cache_dir, spin=spin, arena=arena)
