"""Score heads: how a window's model outputs become its anomaly score, one module per head.

A bank records the head it was calibrated with in its metadata (``score``: a head's spec, or an
ensemble of them); ``scorer`` makes the objects once, and the runtime, calibration and evaluation
score through them alike. A new head is a module with a ``Head`` subclass and a line in
``REGISTRY``; calibration, the learning period, the manifest and ``--score`` read what it
declares (outputs, class, model-free, learnable).

``A+B[+...]`` is an ensemble: each member is z-normalised with the mean and spread of its scores
on the enrolled normal windows, and the window's score is the mean of the members' z-scores.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from edge_agent.scoring.heads.base import Enrolment, Head, ScoreError
from edge_agent.scoring.heads.classifier import Classifier, softmax_score
from edge_agent.scoring.heads.indicators import Indicators
from edge_agent.scoring.heads.knn import KNN
from edge_agent.scoring.heads.rec_kld import RecKLD, RecKLDCenter

REGISTRY: dict[str, type[Head]] = {h.kind: h for h in (KNN, Classifier, RecKLD, RecKLDCenter, Indicators)}
HEADS = tuple(REGISTRY)

__all__ = [
    "HEADS",
    "REGISTRY",
    "Enrolment",
    "Head",
    "ScoreError",
    "Scorer",
    "describe",
    "ensemble_spec",
    "head",
    "parse_score",
    "score_windows",
    "softmax_score",
]


def parse_score(text: str) -> list[str]:
    """'rec-kld+rec-kld-center' -> ['rec-kld', 'rec-kld-center'] (checked)."""
    parts = [p.strip() for p in text.split("+") if p.strip()]
    bad = [p for p in parts if p not in REGISTRY]
    if not parts or bad:
        raise ScoreError(f"--score {text!r}: use one of {', '.join(HEADS)} or several joined by '+' (an ensemble)")
    if len(set(parts)) != len(parts):
        raise ScoreError(f"--score {text!r} names a head twice")
    return parts


def head(spec: dict) -> Head:
    cls = REGISTRY.get(spec.get("kind"))
    if cls is None:
        raise ScoreError(f"unknown score kind {spec.get('kind')!r} in the bank; recalibrate")
    return cls(spec)


class Scorer:
    """One bank's score: a head, or an ensemble of z-normalised heads."""

    def __init__(self, spec: Optional[dict]):
        self.spec = spec or {"kind": "knn"}
        if self.spec["kind"] == "ensemble":
            self.members = [head(m) for m in self.spec["members"]]
            self.stats = [(m["mean"], max(m["std"], 1e-9)) for m in self.spec["members"]]
        else:
            self.members, self.stats = [head(self.spec)], None

    def score(self, outputs: dict[str, np.ndarray], bank=None) -> np.ndarray:
        if self.stats is None:
            return self.members[0].score(outputs, bank)
        z = [(h.score(outputs, bank) - mu) / sd for h, (mu, sd) in zip(self.members, self.stats)]
        return np.mean(z, axis=0).astype(np.float32)

    def describe(self, k: int = 1) -> str:
        if self.stats is None:
            return self.members[0].describe(k)
        return "ensemble of " + " + ".join(h.describe(k) for h in self.members) + " (z-scores averaged)"


def score_windows(spec: Optional[dict], outputs: dict[str, np.ndarray], bank=None) -> np.ndarray:
    """Anomaly score per window for a head's spec (None: the k-NN) made afresh; a bank keeps its own
    (``MemoryBank.anomaly_scores``)."""
    return Scorer(spec).score(outputs, bank)


def describe(spec: Optional[dict], k: int = 1) -> str:
    """One line for tables and logs."""
    return Scorer(spec).describe(k)


def ensemble_spec(members: list[dict], enrol_scores: list[np.ndarray]) -> dict:
    """An ensemble spec whose members carry the mean and spread of their enrolment scores."""
    out = []
    for m, s in zip(members, enrol_scores):
        s = np.asarray(s, np.float64)
        out.append({**m, "mean": float(s.mean()), "std": float(s.std() + 1e-9)})
    return {"kind": "ensemble", "members": out}
