"""A preallocated single-producer, single-consumer ring buffer of audio frames.

The producer is PortAudio's callback thread (or a replay or network thread): ``write`` copies into
the preallocated array and advances a counter; it never blocks. The consumer reads what is new; if
it fell more than a buffer behind, the oldest frames are lost, counted as an overrun and the read
skips to the newest data.

The ring holds 16-bit samples, the format sound cards, WAV files and network streams deliver: half
the memory of float32 for the same seconds (30 s at 16 kHz is 0.96 MB a machine). Every input asks
its driver or decoder for 16-bit samples, which are copied as they are; float frames (float WAVs,
a 24-bit device) are converted on the way in, and reading gives float32 in [-1, 1] (k / 32768, so
16-bit audio comes back exactly as a float reader would give it).
"""

from __future__ import annotations

import threading

import numpy as np

from edge_agent.audio.convert import float_to_pcm16


class RingBuffer:
    def __init__(self, capacity: int, channels: int = 1):
        self.capacity = int(capacity)
        self.channels = int(channels)
        self._buf = np.zeros((self.capacity, self.channels), dtype=np.int16)
        self._written = 0  # total frames ever written (only the producer changes it)
        self._read = 0  # total frames ever consumed (only the consumer changes it)
        self.overruns = 0  # times the consumer found data overwritten
        self.frames_lost = 0
        self.nonfinite = 0  # NaN/Inf samples written, stored as silence (only the producer changes it)
        self._nonfinite_taken = 0  # of those, the ones the consumer was told of (only the consumer changes it)
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
        """Copy (n, channels) frames in: int16 as they are (safe in a real-time callback), floats in
        [-1, 1] converted (beyond it clipped; NaN/Inf stored as 0 and counted in ``nonfinite``)."""
        if frames.dtype != np.int16:
            frames, bad = float_to_pcm16(frames)
            self.nonfinite += bad
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
        """Everything new (up to ``max_frames``), oldest first, as a new float32 array."""
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
        first = min(n, self.capacity - start)
        out = np.empty((n, self.channels), dtype=np.float32)
        out[:first] = self._buf[start : start + first]
        out[first:] = self._buf[: n - first]
        # A producer that lapped us while we copied would have torn the data: detect and count it.
        if self._written - self._read > self.capacity:
            self.overruns += 1
        self._read += n
        if self._read >= self._written:
            self._data.clear()
        out *= 1.0 / 32768.0  # a power of two: exact
        return out

    def take_nonfinite(self) -> int:
        """NaN/Inf samples written (as silence) since the consumer last asked."""
        seen, self._nonfinite_taken = self._nonfinite_taken, self.nonfinite
        return self._nonfinite_taken - seen

    def wait(self, timeout: float) -> bool:
        return self._data.wait(timeout)
