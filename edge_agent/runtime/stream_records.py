"""What a machine's stream hands out: its windows, and snapshots of its state for health and metrics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np


@dataclass(frozen=True)
class StreamStats:
    """A consistent snapshot of one stream for health, metrics and status (read, never written)."""

    machine: str
    state: str
    reason: str
    windows_processed: int
    frames_written: int  # audio frames the source delivered so far
    overruns: int  # ring overruns + device input overflows: audio lost
    finished: bool  # a replay that has played everything
    last_score: Optional[float]
    last_level_dbfs: Optional[float]
    threshold: Optional[float]
    learning_progress: Optional[float]  # 0-1 while learning, else None
    alarm_state: str = "normal"  # the latest alarm's ISA-18.2 state (alarm_states.py)


@dataclass
class Window:
    stream: Any  # the MachineStream it came from (not imported: it imports this module)
    samples: np.ndarray  # at the model's rate, mono
    ts: float  # wall-clock time at the window's end
    offset: float  # seconds of audio from the stream start to the window's end
    level_dbfs: float
    peak: float = 1.0
    start: Optional[int] = None  # first sample at the model's rate when the stream delivers that rate
    recording: str = ""  # the recording (file) it belongs to
    after: Optional[str] = None  # on a recording's first window: the recording that ended before it

    def features(self) -> dict[str, np.ndarray]:
        """The model inputs of this window, reusing the frames it shares with its stream's previous one."""
        return self.stream.features(self.samples, self.start)
