"""Where built TensorRT engines live: next to the bundle or in systemd's ``CacheDirectory``, keyed by
TensorRT version, GPU name and precision (an engine is valid only for the TensorRT and GPU that
built it). Used by the ONNX Runtime TensorRT provider, the native engine and ``build-engine``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

from edge_agent.model.bundle import Bundle


def cache_key(trt_version: str, gpu_name: str, precision: str) -> str:
    """File-system-safe engine cache key: TensorRT version, GPU and precision."""
    if precision not in ("fp32", "fp16"):
        raise ValueError(f"precision must be fp32 or fp16, got {precision!r}")
    gpu = re.sub(r"[^A-Za-z0-9]+", "-", gpu_name).strip("-").lower() or "gpu"
    ver = re.sub(r"[^0-9.]+", "", trt_version) or "unknown"
    return f"trt{ver}_{gpu}_{precision}"


def engine_cache_dir(bundle: Bundle, cache_dir: Optional[Path] = None) -> Path:
    """Engines live in ``cache_dir/<bundle name>-<model sha256 prefix>``; without ``cache_dir``, in
    systemd's ``$CACHE_DIRECTORY`` (``CacheDirectory=``) when set, else in ``<bundle>/engines``."""
    import os

    if cache_dir is None and os.environ.get("CACHE_DIRECTORY"):
        cache_dir = Path(os.environ["CACHE_DIRECTORY"].split(":")[0])
    if cache_dir is not None:
        return Path(cache_dir) / f"{bundle.name}-{bundle.sha256[:12]}"
    return bundle.path / "engines"


def engine_path(
    bundle: Bundle, trt_version: str, gpu_name: str, precision: str, cache_dir: Optional[Path] = None
) -> Path:
    return engine_cache_dir(bundle, cache_dir) / f"{cache_key(trt_version, gpu_name, precision)}.engine"
