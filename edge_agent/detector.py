"""Alarm decisions per machine: k-of-n to raise, m consecutive to clear (hysteresis, as voice
activity detectors do), with start / update / end events."""
from __future__ import annotations

import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Optional


@dataclass
class Decision:
    kind: str  # "start" | "update" | "end"
    alarm_id: str
    ts: float  # end time of the window that caused it (unix seconds)
    score: float
    peak_score: float
    started_at: float
    windows_above: int
    reason: str = ""


@dataclass
class Detector:
    threshold: float
    raise_after: int = 3
    of_last: int = 5
    clear_after: int = 5
    update_seconds: float = 30.0
    recent: deque = field(init=False)
    active: bool = field(default=False, init=False)
    alarm_id: Optional[str] = field(default=None, init=False)
    started_at: float = field(default=0.0, init=False)
    peak: float = field(default=float("-inf"), init=False)
    below: int = field(default=0, init=False)
    last_update: float = field(default=0.0, init=False)
    above_count: int = field(default=0, init=False)

    def __post_init__(self):
        if self.raise_after > self.of_last:
            raise ValueError("raise_after cannot exceed of_last")
        self.recent = deque(maxlen=self.of_last)

    @property
    def state(self) -> str:
        return "anomaly" if self.active else "normal"

    def update(self, score: float, ts: float) -> Optional[Decision]:
        above = score > self.threshold
        self.recent.append(above)
        if not self.active:
            if sum(self.recent) >= self.raise_after:
                self.active, self.alarm_id = True, uuid.uuid4().hex
                self.started_at, self.peak, self.below, self.last_update = ts, score, 0, ts
                self.above_count = sum(self.recent)
                return Decision("start", self.alarm_id, ts, score, score, ts, self.above_count)
            return None
        self.peak = max(self.peak, score)
        self.above_count += int(above)
        self.below = 0 if above else self.below + 1
        if self.below >= self.clear_after:
            return self.end(ts, score, "sound back to normal")
        if ts - self.last_update >= self.update_seconds:
            self.last_update = ts
            return Decision("update", self.alarm_id, ts, score, self.peak, self.started_at, self.above_count)
        return None

    def reset(self) -> None:
        """Forget the recent windows (after a gap in scoring: machine off, no audio)."""
        self.recent.clear()
        self.below = 0

    def end(self, ts: float, score: float, reason: str) -> Optional[Decision]:
        """Close an open alarm (also used when the stream ends or the agent stops)."""
        if not self.active:
            return None
        d = Decision("end", self.alarm_id, ts, score, self.peak, self.started_at, self.above_count, reason)
        self.active, self.alarm_id, self.below = False, None, 0
        self.recent.clear()
        return d
