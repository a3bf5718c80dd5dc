"""A preallocated single-producer, single-consumer ring buffer of audio frames.

The producer is PortAudio's callback thread (or a replay thread): ``write`` only copies into the
preallocated array and advances a counter; it never allocates and never blocks. The consumer reads
what is new; if it fell more than a buffer behind, the oldest frames are lost, counted as an
overrun and the read skips to the newest data.
"""

from __future__ import annotations

import threading

import numpy as np


class RingBuffer:
    def __init__(self, capacity: int, channels: int = 1):
        self.capacity = int(capacity)
        self.channels = int(channels)
        self._buf = np.zeros((self.capacity, self.channels), dtype=np.float32)
        self._written = 0  # total frames ever written (only the producer changes it)
        self._read = 0  # total frames ever consumed (only the consumer changes it)
        self.overruns = 0  # times the consumer found data overwritten
        self.frames_lost = 0
        self._data = threading.Event()

    @property
    def frames_written(self) -> int:
        return self._written

    @property
    def frames_read(self) -> int:
        """Stream position just past the last frame read (lost frames included)."""
        return self._read

    def available(self) -> int:
        return self._written - self._read

    def free(self) -> int:
        return self.capacity - self.available()

    def write(self, frames: np.ndarray) -> None:
        """Copy (n, channels) frames in. Safe to call from a real-time callback."""
        n = frames.shape[0]
        if n > self.capacity:  # keep only what fits; the reader will count the loss
            frames = frames[-self.capacity :]
            self._written += n - self.capacity
            n = self.capacity
        start = self._written % self.capacity
        first = min(n, self.capacity - start)
        self._buf[start : start + first] = frames[:first]
        if first < n:
            self._buf[: n - first] = frames[first:]
        self._written += n
        self._data.set()

    def read(self, max_frames: int | None = None) -> np.ndarray:
        """Everything new (up to ``max_frames``), oldest first, as a new array."""
        written = self._written
        lag = written - self._read
        if lag > self.capacity:
            self.overruns += 1
            self.frames_lost += lag - self.capacity
            self._read = written - self.capacity
            lag = self.capacity
        n = lag if max_frames is None else min(lag, max_frames)
        if n <= 0:
            return np.zeros((0, self.channels), dtype=np.float32)
        start = self._read % self.capacity
        idx = (start + np.arange(n)) % self.capacity
        out = self._buf[idx]
        # A producer that lapped us while we copied would have torn the data: detect and count it.
        if self._written - self._read > self.capacity:
            self.overruns += 1
        self._read += n
        if self._read >= self._written:
            self._data.clear()
        return out

    def wait(self, timeout: float) -> bool:
        return self._data.wait(timeout)
