"""Enrolment clips that sound unlike the rest (white noise, another machine, someone talking, a
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

import numpy as np

from edge_agent.bank import knn_distance

FACTOR = 4.0
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
    ref = np.arange(len(emb)) if len(emb) <= MAX_REFERENCE else np.sort(rng.choice(len(emb), MAX_REFERENCE, replace=False))
    out = {}
    for g in np.unique(groups):
        others = ref[groups[ref] != g]
        out[str(g)] = float(np.median(knn_distance(emb[groups == g], emb[others], 1)))
    return out


def outlier_clips(emb: np.ndarray, groups: np.ndarray, factor: float = FACTOR, min_clips: int = MIN_CLIPS) -> list[Outlier]:
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
