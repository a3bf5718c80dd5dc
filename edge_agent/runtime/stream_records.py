"""What a machine's stream hands out: its windows, what came of each (for the sinks), and snapshots of
its state for health and metrics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

if TYPE_CHECKING:
    from edge_agent.scoring.detector import Decision


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


@dataclass(frozen=True)
class WindowEvent:
    """One scored window of one machine, as the sinks see it."""

    machine: str
    ts: float  # wall-clock time of the window's end
    offset: float  # stream seconds at the window's end
    recording: str  # the recording it belongs to ("" for live input)
    score: float
    threshold: Optional[float]  # in force: the calibrated one times the operator's scale
    level_dbfs: float
    state: str  # the machine's state after the decision
    bank_version: Optional[int]
    decision: Optional["Decision"]  # an alarm start, update or end, else None
