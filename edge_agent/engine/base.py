"""What every inference engine is. Engines take the front end's named features for a batch of
windows and return the model's outputs, with L2-normalised embeddings (batch, dim)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from edge_agent.model.bundle import Bundle


class EngineError(Exception):
    """The engine cannot run as configured; the message says what to install or change."""


class Engine(Protocol):
    """ONNX Runtime (``onnx.OnnxEngine``) and native TensorRT (``tensorrt.TensorRTEngine``)."""

    bundle: "Bundle"
    providers: list[str]

    def warm_up(self) -> float: ...

    def embed(self, features: dict[str, np.ndarray]) -> np.ndarray: ...

    def infer(self, features: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


def l2_normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
