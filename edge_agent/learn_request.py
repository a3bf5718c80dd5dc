"""The learning request: the file through which ``calibrate --learn`` and the ``learn`` command ask
the running agent to learn a machine from its own sound (``calibration/learning.py`` takes it up)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from .atomic import atomic_write
from .bank import bank_path


def learning_paths(state_dir: Path, machine: str) -> tuple[Path, Path]:
    d = bank_path(state_dir, machine).parent
    return d / "learning.json", d / "learning.npz"


def request_learning(state_dir: Path, machine: str, seconds: float) -> Path:
    """Write (or restart) a learning request for the running agent."""
    meta, data = learning_paths(state_dir, machine)
    data.unlink(missing_ok=True)
    with atomic_write(meta, "w") as f:
        json.dump({"seconds": seconds, "done": 0.0, "requested": time.time(), "blocks_seen": 0}, f)
    return meta
