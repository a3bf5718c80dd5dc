"""Audio conversion shared by capture, replay, calibration and the model front end: one channel,
the model's rate, and the level in dBFS."""

from __future__ import annotations

from math import gcd
from typing import Union

import numpy as np


class ChannelError(ValueError):
    """A channel that the input does not have."""


def to_mono(x: np.ndarray, channel: Union[int, str] = "mix") -> np.ndarray:
    """(frames, channels) or (frames,) -> (frames,), picking one channel or averaging all ('mix')."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 1:
        if channel not in ("mix", 0):
            raise ChannelError(f"channel {channel} requested but the audio has 1 channel")
        return x
    if channel == "mix":
        return x.mean(axis=1, dtype=np.float32)
    if not isinstance(channel, int) or not 0 <= channel < x.shape[1]:
        raise ChannelError(
            f"channel {channel} requested but the audio has {x.shape[1]} channels (use 0..{x.shape[1] - 1} or 'mix')"
        )
    return np.ascontiguousarray(x[:, channel])


def float_to_pcm16(x: np.ndarray) -> tuple[np.ndarray, int]:
    """Float audio in [-1, 1] -> int16 (k / 32768 gives k back exactly; beyond full scale clipped),
    and how many NaN/Inf samples it held (stored as 0)."""
    x, bad = finite(np.asarray(x, dtype=np.float32))
    return np.rint(np.clip(x, -1.0, 32767 / 32768) * 32768.0).astype(np.int16), bad


def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Polyphase resampling along the last axis (scipy's resample_poly, anti-aliased)."""
    if sr_in == sr_out:
        return np.asarray(x, dtype=np.float32)
    # Imported here: scipy.signal adds ~75 MB of RSS, and a device that delivers the model's rate
    # (the capture source asks for it first) never needs it.
    from scipy.signal import resample_poly

    g = gcd(int(sr_in), int(sr_out))
    return resample_poly(x, sr_out // g, sr_in // g, axis=-1).astype(np.float32)


SILENT_PEAK = 1e-4  # a peak below -80 dBFS: digital silence (a muted or disconnected input)


def level_dbfs(x: np.ndarray) -> float:
    """RMS level of a signal in dBFS (full scale = 1.0)."""
    rms = float(np.sqrt(np.mean(np.asarray(x, dtype=np.float64) ** 2))) if np.size(x) else 0.0
    return 20 * float(np.log10(max(rms, 1e-10)))


def finite(x: np.ndarray) -> tuple[np.ndarray, int]:
    """``x`` with NaN/Inf samples (a corrupt float WAV, a broken driver) replaced by 0, and how many
    there were: one such sample makes every window that holds it score NaN."""
    bad = ~np.isfinite(x)
    n = int(bad.sum())
    return (np.where(bad, np.float32(0), x) if n else x), n


def prepare(x: np.ndarray, sr_in: int, sr_out: int, channel: Union[int, str] = "mix") -> np.ndarray:
    """Any rate and channel count -> mono float32 at the model's rate."""
    return resample(to_mono(x, channel), sr_in, sr_out)
