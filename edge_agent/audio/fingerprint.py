"""Fingerprints of recordings, so that calibration can tell when it is asked to enrol clips the
model was trained on. A network embeds the clips it learnt from closer together than new sound of
the same machine, so their leave-one-clip-out scores understate how far new normal sound lies and a
threshold fitted on them raises false alarms (docs/performance.md measures it).

The fingerprint covers the decoded samples at 16-bit resolution, the sample rate and the channel
count, not the file: a renamed, re-headed or losslessly re-encoded copy has the same fingerprint; a
resampled, re-mixed or re-recorded one does not."""

from __future__ import annotations

import hashlib

import numpy as np

SCHEME = "sha256/pcm16/v1"  # recorded next to the fingerprints in a bundle


def audio_fingerprint(x: np.ndarray, sample_rate: int) -> str:
    """``x``: samples as read (float in [-1, 1], frames x channels or mono) -> 32 hex characters."""
    x = np.asarray(x)
    channels = 1 if x.ndim == 1 else x.shape[1]
    q = np.clip(np.round(x.astype(np.float64) * 32768.0), -32768, 32767).astype("<i2")
    h = hashlib.sha256(f"{SCHEME}:{int(sample_rate)}:{channels}:".encode())
    h.update(np.ascontiguousarray(q).tobytes())
    return h.hexdigest()[:32]
