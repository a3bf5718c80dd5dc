"""The learning request: the file through which ``calibrate --learn`` and the ``learn`` command ask
the running agent to learn a machine from its own sound (``calibration/learning.py`` takes it up)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

from .atomic import atomic_write
from .bank import bank_path


def learning_paths(state_dir: Path, machine: str) -> tuple[Path, Path]:
    d = bank_path(state_dir, machine).parent
    return d / "learning.json", d / "learning.npz"


LEARNABLE_HEADS = ("knn", "indicators")  # what a learning period keeps per window: embeddings and indicators


def request_learning(state_dir: Path, machine: str, seconds: float, score: Optional[str] = None) -> Path:
    """Write (or restart) a learning request for the running agent; ``score``: the head the learned
    bank scores with (``calibrate --score``; None: the bundle's own)."""
    meta, data = learning_paths(state_dir, machine)
    data.unlink(missing_ok=True)
    req = {"seconds": seconds, "done": 0.0, "requested": time.time(), "blocks_seen": 0}
    with atomic_write(meta, "w") as f:
        json.dump({**req, "score": score} if score else req, f)
    return meta


def learnable_score(spec: Optional[dict]) -> Optional[str]:
    """A bank's score spec as ``--score`` text when a learning period can make it again (k-NN and
    indicators, alone or together), else None: the operator's re-learning keeps the machine's head."""
    if not spec:
        return None
    kinds = [m["kind"] for m in spec["members"]] if spec["kind"] == "ensemble" else [spec["kind"]]
    return "+".join(kinds) if all(k in LEARNABLE_HEADS for k in kinds) else None
