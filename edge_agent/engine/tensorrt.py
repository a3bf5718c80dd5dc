"""Native TensorRT 10 engine backend (``engine: trt``).

Engines are built from a bundle's ONNX by ``edge-agent build-engine`` and cached (``cache``).

Written against the TensorRT 10 Python API (``deserialize_cuda_engine``, ``num_io_tensors``,
``set_input_shape``, ``set_tensor_address``, ``execute_async_v3``) with pycuda buffers. What is
verified where: cache keys, selection and the error paths are tested on machines without a GPU;
the CUDA path itself runs only where TensorRT and a GPU exist (a Jetson, a CUDA workstation).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import numpy as np

from edge_agent.engine.base import EngineError, l2_normalise
from edge_agent.engine.cache import engine_cache_dir, engine_path
from edge_agent.errors import UserError
from edge_agent.model.bundle import Bundle

log = logging.getLogger("edge_agent.trt")

INSTALL_HINT = (
    "install TensorRT 10 and pycuda: pip install 'edge-agent[tensorrt]' (on a Jetson, JetPack 6 ships TensorRT; "
    "use the Dockerfile.jetson image)"
)


class TensorRTMissing(UserError, EngineError):
    """TensorRT (or pycuda) is not installed, or too old: an installation problem (exit code 2)."""


def import_tensorrt():
    """The one place TensorRT is imported (the engine and ``build-engine``)."""
    try:
        import tensorrt as trt
    except ImportError:
        raise TensorRTMissing(f"TensorRT is not installed; {INSTALL_HINT}") from None
    if int(trt.__version__.split(".")[0]) < 10:
        raise TensorRTMissing(
            f"TensorRT {trt.__version__} is too old: the native backend needs TensorRT 10; {INSTALL_HINT}"
        )
    return trt


def gpu_name() -> str:
    try:
        import pycuda.driver as cuda
    except ImportError:
        raise TensorRTMissing(f"pycuda is not installed; {INSTALL_HINT}") from None
    cuda.init()
    if cuda.Device.count() == 0:
        raise EngineError("no CUDA GPU found; use engine: cpu (or auto)")
    return cuda.Device(0).name()


def find_engine(
    bundle: Bundle, cache_dir: Optional[Path] = None, trt_version: Optional[str] = None, gpu: Optional[str] = None
) -> Path:
    """The cached engine for this TensorRT and GPU, preferring fp16; an error says how to build one."""
    trt_version = trt_version or import_tensorrt().__version__
    gpu = gpu or gpu_name()
    for precision in ("fp16", "fp32"):
        p = engine_path(bundle, trt_version, gpu, precision, cache_dir)
        if p.is_file():
            return p
    raise EngineError(
        f"no TensorRT engine for {bundle.name} with TensorRT {trt_version} on {gpu} in "
        f"{engine_cache_dir(bundle, cache_dir)}; "
        f"build it: edge-agent build-engine {bundle.path} --fp16"
    )


class TensorRTEngine:
    """Runs a cached TensorRT engine; same interface as OnnxEngine."""

    def __init__(self, bundle: Bundle, cache_dir: Optional[Path] = None, max_batch: int = 32):
        trt = import_tensorrt()
        import pycuda.autoinit  # noqa: F401 - creates the CUDA context
        import pycuda.driver as cuda

        self.bundle, self._cuda, self._trt = bundle, cuda, trt
        path = find_engine(bundle, cache_dir, trt.__version__, gpu_name())
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise EngineError(
                f"{path}: TensorRT could not load the engine (built by another TensorRT?); rebuild it with "
                "edge-agent build-engine"
            )
        self.context = self.engine.create_execution_context()
        self.stream = cuda.Stream()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        declared = sorted(bundle.manifest.input_names)
        if sorted(self.inputs) != declared:
            raise EngineError(
                f"{path}: engine inputs {self.inputs} differ from the bundle's {declared}; rebuild the engine"
            )
        self.max_batch = max_batch
        self._buffers: dict[str, tuple[int, object]] = {}  # name -> (capacity in bytes, device allocation)
        self.providers = [f"TensorRT {trt.__version__} ({path.name})"]
        log.info("engine: native TensorRT %s, %s", trt.__version__, path)

    def _device(self, name: str, nbytes: int):
        cap, mem = self._buffers.get(name, (0, None))
        if cap < nbytes:
            mem = self._cuda.mem_alloc(nbytes)
            self._buffers[name] = (nbytes, mem)
        return self._buffers[name][1]

    def infer(self, features: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        batch = next(iter(features.values())).shape[0]
        for n in self.inputs:
            x = np.ascontiguousarray(features[n], dtype=np.float32)
            self.context.set_input_shape(n, x.shape)
            dev = self._device(n, x.nbytes)
            self._cuda.memcpy_htod_async(dev, x, self.stream)
            self.context.set_tensor_address(n, int(dev))
        host = {}
        for n in self.outputs:
            shape = tuple(self.context.get_tensor_shape(n))
            host[n] = self._cuda.pagelocked_empty(shape, np.float32)
            dev = self._device(n, host[n].nbytes)
            self.context.set_tensor_address(n, int(dev))
        if not self.context.execute_async_v3(self.stream.handle):
            raise EngineError("TensorRT execution failed")
        for n in self.outputs:
            self._cuda.memcpy_dtoh_async(host[n], self._buffers[n][1], self.stream)
        self.stream.synchronize()
        res = {n: np.array(host[n]) for n in self.outputs}
        res["embedding"] = l2_normalise(res["embedding"].reshape(batch, -1, self.bundle.embedding_dim)).reshape(
            batch, -1
        )
        return res

    def embed(self, features: dict[str, np.ndarray]) -> np.ndarray:
        return self.infer(features)["embedding"]

    def warm_up(self) -> float:
        import time

        fe = self.bundle.frontend
        t = time.perf_counter()
        self.embed(fe(np.zeros((1, fe.window_samples), dtype=np.float32)))
        return time.perf_counter() - t
