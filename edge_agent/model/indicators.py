"""Classic condition indicators of a window of sound, and the ``indicators`` score head built on them.

Condition monitoring watched a machine's overall level, its crest factor (peak over RMS: how
impulsive the sound is) and its kurtosis (how heavy the tails of the waveform are) long before
embeddings. They need no model, and they see what an embedding trained on spectrograms can
normalise away: a fan whose faulty units run 5 dB louder, a valve whose clicks grow dull
(benchmarks/indicators.py and docs/model.md measure both).

The head standardises a window's three indicators with the enrolment windows' mean and spread
(each spread at least a floor, so that a set of recordings normalised to one level does not make a
tenth of a dB an anomaly) and scores the distance to the nearest enrolment window: a window unlike
every enrolled one, in either direction, is anomalous. Pure functions over numpy arrays.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

NAMES = ("level_db", "crest_db", "log_kurtosis")
FLOORS = np.array([1.0, 0.5, 0.1])  # dB, dB, log kurtosis: smaller spreads are measurement detail
GRID = 0.02  # enrolled rows are kept on this grid of standardised units (duplicates dropped): bounded, exact to 0.02
_TINY = 1e-20


def window_indicators(windows: np.ndarray) -> np.ndarray:
    """(n, samples) windows -> (n, 3): RMS level (dBFS), crest factor (dB) and log kurtosis (the 4th
    central moment over the squared variance; log 3 for Gaussian noise). Float32 products with
    float64 sums: about 0.1 ms a 2 s window here, 2 % of the default model's inference, since the
    runtime computes it for every window."""
    w = np.atleast_2d(np.asarray(windows, np.float32))
    n = w.shape[1]
    ms = np.maximum(np.einsum("ij,ij->i", w, w, dtype=np.float64) / n, _TINY)
    c = w - w.mean(axis=1, keepdims=True, dtype=np.float64).astype(np.float32)
    c2 = c * c
    var = np.maximum(c2.mean(axis=1, dtype=np.float64), _TINY)
    m4 = np.einsum("ij,ij->i", c2, c2, dtype=np.float64) / n
    level = 10 * np.log10(ms)
    crest = 20 * np.log10(np.maximum(np.abs(w).max(axis=1), 1e-10) / np.sqrt(ms))
    kurt = np.log(np.maximum(m4 / var**2, 1e-6))
    return np.stack([level, crest, kurt], axis=1).astype(np.float32)


def indicator_spec(rows: np.ndarray) -> dict:
    """The head's reference from the enrolment windows' indicators (n, 3), as stored in a bank."""
    rows = np.asarray(rows, np.float64)
    if rows.ndim != 2 or rows.shape[1] != len(NAMES) or len(rows) < 2:
        raise ValueError("the indicators head needs the indicators of at least 2 enrolment windows")
    center = rows.mean(axis=0)
    spread = np.maximum(rows.std(axis=0), FLOORS)
    z = np.unique(np.round((rows - center) / spread / GRID).astype(np.int32), axis=0)
    return {
        "kind": "indicators",
        "center": center.round(4).tolist(),
        "spread": spread.round(4).tolist(),
        "grid": GRID,
        "rows": z.tolist(),  # standardised enrolment windows, in units of ``grid``
    }


def _standardise(spec: dict, x: np.ndarray) -> np.ndarray:
    return (np.asarray(x, np.float64) - np.asarray(spec["center"])) / np.asarray(spec["spread"])


def reference(spec: dict) -> np.ndarray:
    return np.asarray(spec["rows"], np.float64) * float(spec["grid"])


def nearest_distance(z: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Euclidean distance of each standardised row to its nearest reference row."""
    d2 = (z * z).sum(axis=1)[:, None] + (ref * ref).sum(axis=1)[None, :] - 2.0 * z @ ref.T
    return np.sqrt(np.maximum(d2.min(axis=1), 0.0)).astype(np.float32)


def indicator_scores(spec: dict, indicators: np.ndarray, ref: Optional[np.ndarray] = None) -> np.ndarray:
    """The head's score per window: distance to the nearest enrolment window, standardised. ``ref``:
    ``reference(spec)`` when the caller keeps it (parsing the stored rows costs more than scoring)."""
    return nearest_distance(_standardise(spec, indicators), reference(spec) if ref is None else ref)


def held_out_scores(spec: dict, indicators: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Each enrolment window's score against the other clips' windows only (leave one clip out), as
    the threshold fit needs: against its own clip a window would score about 0. Standardised with the
    whole enrolment's statistics, as the stored head scores new sound."""
    z = np.round(_standardise(spec, indicators) / GRID) * float(spec["grid"])  # on the stored grid
    groups = np.asarray(groups)
    out = np.empty(len(z), np.float32)
    for g in np.unique(groups):
        m = groups == g
        others = z[~m]
        out[m] = nearest_distance(z[m], others) if len(others) else np.inf
    return out
