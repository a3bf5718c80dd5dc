"""Augmentations for the few-shot target domain and for regularisation.

- time warping of waveforms: a smooth, monotonic, random re-timing (local speed 1 +- ``strength``);
- SMOTE (imbalanced-learn) on front-end features, to give target-domain classes as many samples as
  the source classes;
- mixup of features and (soft) targets.
"""

from __future__ import annotations

import numpy as np


def time_warp(x: np.ndarray, rng: np.random.Generator, strength: float = 0.1, knots: int = 4) -> np.ndarray:
    """Re-time a waveform with a random piecewise-linear speed curve; the length is kept."""
    n = x.shape[-1]
    speeds = 1.0 + rng.uniform(-strength, strength, size=knots)
    seg = np.repeat(speeds, int(np.ceil(n / knots)))[:n]
    pos = np.concatenate([[0.0], np.cumsum(seg)[:-1]])
    pos *= (n - 1) / pos[-1] if pos[-1] > 0 else 1.0
    return np.interp(pos, np.arange(n), x).astype(np.float32)


def smote(
    features: dict[str, np.ndarray], labels: np.ndarray, minority: np.ndarray, rng_seed: int, k_neighbors: int = 3
):
    """Oversample the rows flagged ``minority`` class by class with SMOTE until each of their
    classes has as many rows as the largest class. Returns (features, labels, synthetic_mask)."""
    from imblearn.over_sampling import SMOTE

    names = list(features)
    shapes = [features[n].shape[1:] for n in names]
    sizes = [int(np.prod(s)) for s in shapes]
    flat = np.concatenate([features[n].reshape(len(labels), -1) for n in names], axis=1)
    counts = np.bincount(labels)
    target_count = counts.max()
    minority_classes = np.unique(labels[minority])
    strategy = {int(c): int(target_count) for c in minority_classes if 2 <= counts[c] < target_count}
    if not strategy:
        return features, labels, np.zeros(len(labels), dtype=bool)
    k = int(min(k_neighbors, min(counts[c] for c in strategy) - 1))
    sm = SMOTE(sampling_strategy=strategy, k_neighbors=k, random_state=rng_seed)
    flat_res, lab_res = sm.fit_resample(flat, labels)
    out, off = {}, 0
    for n, s, sz in zip(names, shapes, sizes):
        out[n] = np.ascontiguousarray(flat_res[:, off : off + sz].reshape((-1,) + s), dtype=np.float32)
        off += sz
    synthetic = np.zeros(len(lab_res), dtype=bool)
    synthetic[len(labels) :] = True
    return out, lab_res, synthetic


def mixup_weights(rng: np.random.Generator, batch: int, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """(lambda per row, permutation) for mixup with Beta(alpha, alpha)."""
    lam = rng.beta(alpha, alpha, size=batch).astype(np.float32)
    return lam, rng.permutation(batch)
