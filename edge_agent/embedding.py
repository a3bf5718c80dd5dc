"""Windows of audio -> embeddings: the front end and the engine, batched. Shared by the runtime,
calibration and evaluation so that all three score sound the same way."""

from __future__ import annotations

import numpy as np

from .audio.windows import frame_windows
from .frontend import Frontend
from .indicators import window_indicators


def infer_signal(engine, frontend: Frontend, x: np.ndarray, hop_samples: int, batch: int = 16) -> dict[str, np.ndarray]:
    """A mono signal at the model's rate -> every output of the model (embedding, logits, ...) for
    each window (hop ``hop_samples``), and the window's ``indicators`` (level, crest factor,
    kurtosis); ``embedding`` rows are (embeddings_per_window * dim), L2-normalised."""
    w = frame_windows(x, frontend.window_samples, hop_samples)
    outs = [engine.infer(frontend(w[i : i + batch])) for i in range(0, len(w), batch)]
    return {"indicators": window_indicators(w), **{k: np.concatenate([o[k] for o in outs]) for k in outs[0]}}


def embed_signal(engine, frontend: Frontend, x: np.ndarray, hop_samples: int, batch: int = 16) -> np.ndarray:
    """Only the embeddings of ``infer_signal``."""
    return infer_signal(engine, frontend, x, hop_samples, batch)["embedding"]
