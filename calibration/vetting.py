"""Which clips may be enrolled. ``check_clip`` refuses unreadable, silent, clipped and short clips with
the reason. Clips that sound unlike the rest (white noise, another machine, someone talking, a
fault) are found before they reach the bank: one such clip among normal ones can raise the
threshold several-fold and hide real faults.

A clip's distance to the rest is the median, over its windows, of the cosine distance to the
nearest window of any *other* clip. Normal enrolments have a long but continuous tail of such
distances (a slider's positions, a valve's patterns); a clip is an outlier only when its distance
is ``factor`` times the 90th percentile of the other clips' distances. Measured with the default
model: real normal clips reach at most 2.2x (dcase2020 slider, 75 clips; DCASE 2023 valve; MIMII
fan), white noise 12-50x and a pure tone 5-30x.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from calibration.dataset import LabelError, parse_path
from edge_agent.audio.convert import SILENT_PEAK, prepare
from edge_agent.audio.fingerprint import audio_fingerprint
from edge_agent.audio.wavio import AudioFileError, read_wav
from edge_agent.scoring.bank import knn_distance

FACTOR = 4.0
CLIPPED_FRACTION = 0.01  # more than 1 % of samples at full scale
MIN_CLIPS = 5  # fewer clips say too little about what is typical
MAX_REFERENCE = 5000  # windows the distances are taken to (a random subset of larger enrolments)


@dataclass(frozen=True)
class Outlier:
    clip: str
    distance: float  # median distance of its windows to the other clips
    typical: float  # 90th percentile of the other clips' distances


def clip_distances(emb: np.ndarray, groups: np.ndarray, seed: int = 0) -> dict[str, float]:
    """Each clip's median nearest-window distance to the other clips."""
    rng = np.random.default_rng(seed)
    ref = (
        np.arange(len(emb))
        if len(emb) <= MAX_REFERENCE
        else np.sort(rng.choice(len(emb), MAX_REFERENCE, replace=False))
    )
    out = {}
    for g in np.unique(groups):
        others = ref[groups[ref] != g]
        out[str(g)] = float(np.median(knn_distance(emb[groups == g], emb[others], 1)))
    return out


def outlier_clips(
    emb: np.ndarray, groups: np.ndarray, factor: float = FACTOR, min_clips: int = MIN_CLIPS
) -> list[Outlier]:
    groups = np.asarray(groups)
    if len(np.unique(groups)) < min_clips:
        return []
    dist = clip_distances(emb, groups)
    out = []
    for clip, d in dist.items():
        typical = float(np.percentile([v for c, v in dist.items() if c != clip], 90))
        if d > factor * max(typical, 1e-6):
            out.append(Outlier(clip, d, typical))
    return sorted(out, key=lambda o: -o.distance)


@dataclass
class ClipCheck:
    path: Path
    ok: bool
    reason: str = ""
    domain: str = "source"
    audio: Optional[np.ndarray] = None  # mono at the model's rate
    fingerprint: str = ""  # of the clip as read: was the model trained on it?


def check_clip(
    path: Path, model_rate: int, window_seconds: float, channel="mix", domain: Optional[str] = None
) -> ClipCheck:
    """Read and vet one clip: unreadable, silent, clipped or too short clips are refused with the reason."""
    try:
        x, sr = read_wav(path)
    except AudioFileError as e:
        return ClipCheck(path, False, str(e).split(": ", 1)[-1])
    seconds = x.shape[0] / sr
    if seconds + 1e-6 < window_seconds:
        return ClipCheck(path, False, f"too short: {seconds:.2f} s, the model needs windows of {window_seconds:g} s")
    peak = float(np.abs(x).max())
    if peak < SILENT_PEAK:
        return ClipCheck(path, False, "silent (digital silence or a muted input)")
    clipped = float(np.mean(np.abs(x) >= 0.999))
    if clipped > CLIPPED_FRACTION:
        return ClipCheck(path, False, f"clipped: {100 * clipped:.1f} % of samples at full scale (lower the input gain)")
    if domain is None:
        try:
            domain = "target" if parse_path(path).domain == "target" else "source"
        except LabelError:
            domain = "source"
    try:
        mono = prepare(x, sr, model_rate, channel)
    except ValueError as e:
        return ClipCheck(path, False, str(e))
    return ClipCheck(path, True, domain=domain, audio=mono, fingerprint=audio_fingerprint(x, sr))


def usable_clips(files, sample_rate: int, window_seconds: float, channel, domain, skipped: list, use="enrolled"):
    """Each normal clip of ``files`` that can be used, read and vetted: (path, ClipCheck); the others
    are added to ``skipped`` with the reason (anomalous by its file name, unreadable, silent, clipped,
    too short). ``use``: what is done with normal sound, for the message."""
    for f in files:
        try:
            if parse_path(f).condition == "anomaly":
                skipped.append((f, f"labelled anomalous in its file name; only normal sound is {use}"))
                continue
        except LabelError:
            pass
        c = check_clip(f, sample_rate, window_seconds, channel, domain)
        if not c.ok:
            skipped.append((f, c.reason))
            continue
        yield f, c
