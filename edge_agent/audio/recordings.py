"""Where one recording ends and the next begins in a stream, and what each held.

A folder replay plays its files one after the other through one ring buffer. Each file is its own
recording: a window that held the end of one and the start of the next would score a splice no
real stream has, and the detector's smoothing and raise/clear history would carry over the join.
So the stream cuts its frames at every recording start (``split``), the windower starts afresh
there, and the agent ends an open alarm and resets the detector before the first window of the
next recording. A per-recording tally feeds the replay's summary lines.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np


@dataclass
class Tally:
    """What one recording gave: windows taken, alarms raised, the highest score."""

    name: str = ""
    windows: int = 0
    alarms: int = 0
    highest: Optional[float] = None

    def score(self, score: float, alarm_started: bool) -> None:
        self.windows += 1
        self.alarms += int(alarm_started)
        self.highest = score if self.highest is None else max(self.highest, score)

    def summary(self, machine: str) -> str:
        scores = f", highest score {self.highest:.4f}" if self.highest is not None else ", none scored"
        return f"{machine}: recording {self.name}: {self.windows} windows, {self.alarms} alarm(s){scores}"


@dataclass
class Recordings:
    """The pump's side: the recording starts applied so far, and the recording it is in."""

    applied: int = 0  # stream position (frames) of the last recording start applied
    name: str = ""  # the recording the latest frames belong to
    ended: Optional[str] = None  # a recording that ended and whose successor has no window yet

    def split(
        self, frames: np.ndarray, position: int, starts: list[tuple[int, str]]
    ) -> list[tuple[np.ndarray, Optional[tuple[int, str]]]]:
        """``frames`` (which begin at stream ``position``) cut at each recording start among
        ``starts`` not applied yet: [(piece, (start, name) where a recording begins before it)]."""
        end = position + len(frames)
        if not self.name:
            self.name = next((name for p, name in reversed(starts) if p <= position), "")
        # a start in frames the ring lost (the reader fell behind) takes effect where reading resumed
        cuts = [(max(p, position), name) for p, name in starts if self.applied < p < end]
        out, at = [], position
        for p, name in cuts:
            if p > at:
                out.append((frames[at - position : p - position], None))
                at = p
            out.append((frames[:0], (p, name)))
        out.append((frames[at - position :], None))
        return [(piece, start) for piece, start in out if len(piece) or start is not None]

    def begin(self, start: int, name: str) -> None:
        """A new recording begins at ``start``; the last one is over (the agent hears of it with the
        next window, after the windows that came before)."""
        self.applied = start
        self.ended = self.ended or self.name or None
        self.name = name

    def take_ended(self) -> Optional[str]:
        """For the first window of a new recording: the one that ended before it (once)."""
        ended, self.ended = self.ended, None
        return ended
