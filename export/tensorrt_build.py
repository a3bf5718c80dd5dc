"""``edge-agent build-engine``: a bundle's ONNX -> a TensorRT 10 engine in the bundle's cache.

TensorRT 10 Python builder API: explicit-batch network from the ONNX parser, one optimisation
profile over the batch axis (1 .. max_batch, optimised for ``opt_batch``), an optional FP16 flag,
and a timing cache kept beside the engines so rebuilds are fast. Engines are keyed by TensorRT
version, GPU name and precision (``edge_agent.engine.cache.cache_key``). Needs TensorRT and a GPU;
without TensorRT it stops with a message saying how to install it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

from edge_agent.engine import EngineError
from edge_agent.engine.cache import engine_cache_dir, engine_path
from edge_agent.engine.tensorrt import gpu_name, import_tensorrt
from edge_agent.model.bundle import Bundle
from edge_agent.state.atomic import atomic_write

log = logging.getLogger("edge_agent.build_engine")


def profile_shapes(bundle: Bundle, max_batch: int, opt_batch: int = 4) -> dict[str, tuple[tuple, tuple, tuple]]:
    """(min, opt, max) shapes per input: the batch axis is dynamic, the rest fixed by the manifest."""
    if max_batch < 1:
        raise ValueError("max_batch must be >= 1")
    opt_batch = min(opt_batch, max_batch)
    out = {}
    for inp in bundle.manifest.inputs:
        rest = tuple(int(d) for d in inp.shape[1:])
        out[inp.name] = ((1,) + rest, (opt_batch,) + rest, (max_batch,) + rest)
    return out


def build_engine(
    model: str | Path,
    fp16: bool = False,
    cache_dir: Optional[Path] = None,
    max_batch: int = 32,
    workspace_bytes: int = 1 << 30,
) -> Path:
    bundle = Bundle.load(model)
    trt = import_tensorrt()
    gpu = gpu_name()
    precision = "fp16" if fp16 else "fp32"
    out = engine_path(bundle, trt.__version__, gpu, precision, cache_dir)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10 networks are always explicit-batch
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(bundle.model_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineError(f"TensorRT could not parse {bundle.model_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    if fp16:
        if not builder.platform_has_fast_fp16:
            log.warning("this GPU has no fast FP16; building FP16 anyway as asked")
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    for name, (mn, opt, mx) in profile_shapes(bundle, max_batch).items():
        profile.set_shape(name, mn, opt, mx)
    config.add_optimization_profile(profile)
    cache_file = engine_cache_dir(bundle, cache_dir) / f"timing-{trt.__version__}.cache"
    cache = config.create_timing_cache(cache_file.read_bytes() if cache_file.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    log.info(
        "building %s engine for %s on %s (TensorRT %s); this takes a few minutes",
        precision,
        bundle.name,
        gpu,
        trt.__version__,
    )
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineError("TensorRT failed to build the engine (see the TensorRT log above)")
    with atomic_write(out) as f:
        f.write(bytes(serialized))
    with atomic_write(cache_file) as f:
        f.write(bytes(cache.serialize()))
    return out
