"""Windows of audio -> embeddings: the front end and the engine, batched. Shared by the runtime,
calibration and evaluation so that all three score sound the same way."""
from __future__ import annotations

import numpy as np

from .frontend import Frontend, frame_windows


def embed_windows(engine, frontend: Frontend, windows: np.ndarray, batch: int = 16) -> np.ndarray:
    """(n, window_samples) -> (n, embeddings_per_window * dim) L2-normalised rows."""
    out = [engine.embed(frontend(windows[i : i + batch])) for i in range(0, len(windows), batch)]
    return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)


def embed_signal(engine, frontend: Frontend, x: np.ndarray, hop_samples: int, batch: int = 16) -> np.ndarray:
    """A mono signal at the model's rate -> one embedding per window (hop ``hop_samples``)."""
    return embed_windows(engine, frontend, frame_windows(x, frontend.window_samples, hop_samples), batch)


def infer_signal(engine, frontend: Frontend, x: np.ndarray, hop_samples: int, batch: int = 16) -> dict[str, np.ndarray]:
    """Like embed_signal, but every output of the model (embedding, logits, ...) per window."""
    w = frame_windows(x, frontend.window_samples, hop_samples)
    outs = [engine.infer(frontend(w[i : i + batch])) for i in range(0, len(w), batch)]
    return {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}
