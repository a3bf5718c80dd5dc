"""The agent's sense of time, injected so that tests and simulations can move it by hand.

``time()`` is the wall clock (unix seconds: timestamps, shelves, learning), ``monotonic()`` the
clock for intervals (liveness, status lines). ``SYSTEM`` reads the machine's clocks; a
``ManualClock`` stands still until it is advanced.
"""

from __future__ import annotations

import threading
import time as _time
from typing import Protocol


class Clock(Protocol):
    def time(self) -> float: ...

    def monotonic(self) -> float: ...


class SystemClock:
    def time(self) -> float:
        return _time.time()

    def monotonic(self) -> float:
        return _time.monotonic()


SYSTEM = SystemClock()


class ManualClock:
    """Both clocks at a fixed point until ``advance`` moves them together (thread-safe)."""

    def __init__(self, start: float = 1_800_000_000.0):
        self._lock = threading.Lock()
        self._wall = float(start)
        self._mono = 1000.0

    def time(self) -> float:
        with self._lock:
            return self._wall

    def monotonic(self) -> float:
        with self._lock:
            return self._mono

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock does not go back")
        with self._lock:
            self._wall += seconds
            self._mono += seconds
