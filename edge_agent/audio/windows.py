"""Cutting audio into the model's windows: a whole signal at once (``frame_windows``) or a stream
block by block (``Windower``), with the same window and hop."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def n_frames(n_samples: int, n_fft: int, hop: int) -> int:
    return 1 + (n_samples - n_fft) // hop


def framed(x: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """Read-only view of the frames ``x[..., t * hop : t * hop + n_fft]``: (..., N) -> (..., frames, n_fft).
    The same view as ``sliding_window_view(x, n_fft, axis=-1)[..., ::hop, :]``, built directly: that
    one's argument handling cost more than the window's multiply (measured, docs/performance.md)."""
    x = np.asarray(x)
    s = x.strides[-1]
    shape = (*x.shape[:-1], max(0, n_frames(x.shape[-1], n_fft, hop)), n_fft)
    return np.lib.stride_tricks.as_strided(x, shape, (*x.strides[:-1], hop * s, s), writeable=False)


def frame_windows(x: np.ndarray, window: int, hop: int) -> np.ndarray:
    """Cut a mono signal into (n, window) windows with the given hop; a signal shorter than one
    window is padded by repeating it (a short clip still gets one score)."""
    if x.shape[-1] < window:
        reps = int(np.ceil(window / max(1, x.shape[-1])))
        x = np.tile(x, reps)[:window]
    return framed(np.asarray(x), window, hop).astype(np.float32)


@dataclass
class Windower:
    window_seconds: float
    hop_seconds: float
    sample_rate: int
    channels: int
    _pending: list = field(default_factory=list)
    _pending_n: int = 0
    consumed: int = 0  # frames dropped from the front so far (the stream position of _pending[0])

    @property
    def window(self) -> int:
        return int(round(self.window_seconds * self.sample_rate))

    @property
    def hop(self) -> int:
        return max(1, int(round(self.hop_seconds * self.sample_rate)))

    def frames_needed(self) -> int:
        """Frames still to push before the next window is complete."""
        return max(0, self.window - self._pending_n)

    def push(self, frames: np.ndarray) -> list[tuple[np.ndarray, int]]:
        """Add frames; return the complete windows (samples, end position in frames)."""
        if len(frames):
            self._pending.append(frames)
            self._pending_n += len(frames)
        out = []
        if self._pending_n < self.window:
            return out
        buf = np.concatenate(self._pending) if len(self._pending) > 1 else self._pending[0]
        start = 0
        while len(buf) - start >= self.window:
            out.append((buf[start : start + self.window], self.consumed + start + self.window))
            start += self.hop
        self.consumed += start
        rest = buf[start:]
        self._pending, self._pending_n = ([rest] if len(rest) else []), len(rest)
        return out

    def reset(self) -> None:
        self._pending, self._pending_n = [], 0

    def restart_at(self, position: int) -> None:
        """A new recording begins at ``position`` (frames): what is pending of the last one (less than
        a window) is dropped, and windows are cut from there."""
        self.reset()
        self.consumed = position
