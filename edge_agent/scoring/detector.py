"""Alarm decisions per machine: window scores are smoothed over a short horizon (a running median
by default), then k-of-n smoothed scores above the threshold raise an alarm and m consecutive below
clear it (hysteresis, as voice activity detectors do), with start / update / end events.

``smooth`` and ``decision_statistic`` are the same rule as pure functions over a whole sequence;
calibration fits the threshold with them, so the threshold is fitted to exactly what decides."""

from __future__ import annotations

import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

SMOOTHERS = ("median", "mean")


def smoothed(values, how: str = "median") -> float:
    """One smoothed score from the most recent raw scores."""
    return float(np.median(values) if how == "median" else np.mean(values))


def smooth(seq: np.ndarray, windows: int, how: str = "median") -> np.ndarray:
    """The detector's smoothing over a whole sequence (causal: each value uses itself and the
    ``windows - 1`` before it, fewer at the start, as after a reset)."""
    seq = np.asarray(seq, dtype=np.float64)
    if windows <= 1:
        return seq.copy()
    return np.array([smoothed(seq[max(0, i - windows + 1) : i + 1], how) for i in range(len(seq))])


def warm_up_windows(smooth_windows: int) -> int:
    """Windows after a start (or a reset) that cannot count as above: until the running median is
    full, one or two windows of a machine's start-up (or of the agent's) would decide alone. The
    detector and the threshold fit both take it from here."""
    return max(0, smooth_windows - 1)


def decision_statistic(smoothed_seq: np.ndarray, raise_after: int, of_last: int, warm_up: int = 0) -> np.ndarray:
    """For each window, the ``raise_after``-th largest of the last ``of_last`` smoothed scores: an
    alarm is raised at the first window where this exceeds the threshold (-inf before k windows).
    The first ``warm_up`` windows count as below any threshold (``Detector``: the smoothing is not
    yet full after a start)."""
    x = np.asarray(smoothed_seq, dtype=np.float64).copy()
    x[:warm_up] = -np.inf
    out = np.full(len(x), -np.inf)
    for i in range(raise_after - 1, len(x)):
        w = x[max(0, i - of_last + 1) : i + 1]
        out[i] = np.partition(w, len(w) - raise_after)[len(w) - raise_after]
    return out


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
    smooth_windows: int = 1  # running median/mean over this many windows before the threshold
    smooth: str = "median"
    recent: deque = field(init=False)
    raw: deque = field(init=False)
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
        if self.smooth not in SMOOTHERS:
            raise ValueError(f"smooth must be one of {SMOOTHERS}")
        self.recent = deque(maxlen=self.of_last)
        self.raw = deque(maxlen=max(1, self.smooth_windows))

    @property
    def state(self) -> str:
        return "anomaly" if self.active else "normal"

    @property
    def warm_up(self) -> int:
        return warm_up_windows(self.smooth_windows)

    def update(self, score: float, ts: float) -> Optional[Decision]:
        """Feed one window's raw score; the decision (and the score it reports) is the smoothed one."""
        self.raw.append(score)
        score = smoothed(self.raw, self.smooth) if len(self.raw) > 1 else float(score)
        above = score > self.threshold and len(self.raw) > self.warm_up
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
        self.raw.clear()
        self.below = 0

    def end(self, ts: float, score: float, reason: str) -> Optional[Decision]:
        """Close an open alarm (also used when the stream ends or the agent stops)."""
        if not self.active:
            return None
        d = Decision("end", self.alarm_id, ts, score, self.peak, self.started_at, self.above_count, reason)
        self.active, self.alarm_id, self.below = False, None, 0
        self.recent.clear()
        return d
