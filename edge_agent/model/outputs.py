"""Windows of audio -> embeddings: the front end and the engine, batched. Shared by the runtime,
calibration and evaluation so that all three score sound the same way."""

from __future__ import annotations

import numpy as np

from edge_agent.audio.windows import frame_windows
from edge_agent.model.frontend import Frontend
from edge_agent.model.indicators import window_indicators


def infer_signal(engine, frontend: Frontend, x: np.ndarray, hop_samples: int, batch: int = 16) -> dict[str, np.ndarray]:
    """A mono signal at the model's rate -> every output of the model (embedding, logits, ...) for
    each window (hop ``hop_samples``), and the window's ``indicators`` (level, crest factor,
    kurtosis); ``embedding`` rows are (embeddings_per_window * dim), L2-normalised."""
    w = frame_windows(x, frontend.window_samples, hop_samples)
    outs = [engine.infer(frontend(w[i : i + batch])) for i in range(0, len(w), batch)]
    return with_indicators({k: np.concatenate([o[k] for o in outs]) for k in outs[0]}, w)


def with_indicators(outputs: dict[str, np.ndarray], windows: np.ndarray) -> dict[str, np.ndarray]:
    """The model's outputs for a batch of windows plus the windows' ``indicators``, the model-free
    head's input, from the very samples the model heard."""
    return {**outputs, "indicators": window_indicators(windows)}


def embed_signal(engine, frontend: Frontend, x: np.ndarray, hop_samples: int, batch: int = 16) -> np.ndarray:
    """Only the embeddings of ``infer_signal``."""
    return infer_signal(engine, frontend, x, hop_samples, batch)["embedding"]
