"""Score heads: how a window's model outputs become its anomaly score.

A bank records the head it was calibrated with in ``meta["score"]``; ``score_windows`` applies it,
in the runtime, in calibration and in evaluation alike.

- ``knn``: cosine distance to the nearest bank entries (the default; works for any machine).
- ``classifier``: 1 - softmax(logits)[class] (STgram recipes; machines the model was trained on).
- ``rec-kld``: the reconstruction loss plus the KL divergence of a VAE (the clvae recipe's
  ``rec_kld`` output), for any machine.
- ``rec-kld-center``: ``rec-kld`` + lambda * the center-loss distance of the latent mean to its
  section's center (``center_dist`` output; machines the model was trained on).
- ``indicators``: level, crest factor and kurtosis of the window's sound, standardised, distance to
  the nearest enrolment window (``indicators``; no model output needed, any machine).
- ``A+B[+...]``: an ensemble. Each member is z-normalised with the mean and spread of its scores
  on the enrolled normal windows, and the window's score is the mean of the members' z-scores.

Pure functions over numpy arrays; the bundle's manifest says which heads it carries.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from .errors import UserError
from .indicators import indicator_scores, reference

HEADS = ("knn", "classifier", "rec-kld", "rec-kld-center", "indicators")
CLASS_HEADS = ("classifier", "rec-kld-center")  # need the machine's class among the model's classes
MODEL_FREE_HEADS = ("indicators",)  # computed from the window's samples, so every bundle has them


class ScoreError(UserError):
    pass


def parse_score(text: str) -> list[str]:
    """'rec-kld+rec-kld-center' -> ['rec-kld', 'rec-kld-center'] (checked)."""
    parts = [p.strip() for p in text.split("+") if p.strip()]
    bad = [p for p in parts if p not in HEADS]
    if not parts or bad:
        raise ScoreError(f"--score {text!r}: use one of {', '.join(HEADS)} or several joined by '+' (an ensemble)")
    if len(set(parts)) != len(parts):
        raise ScoreError(f"--score {text!r} names a head twice")
    return parts


def softmax_score(logits: np.ndarray, class_index: int) -> np.ndarray:
    """1 - softmax(logits)[class]: the STgram papers' anomaly score for a machine the model knows."""
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    return (1.0 - p[:, class_index]).astype(np.float32)


def head_scores(head: dict, outputs: dict[str, np.ndarray], bank=None) -> np.ndarray:
    """One head's score per window. ``head`` is a member spec as stored in a bank
    (kind, and class_index / weight where the kind needs them)."""
    kind = head["kind"]
    try:
        if kind == "knn":
            return bank.score(outputs["embedding"])
        if kind == "classifier":
            return softmax_score(outputs["logits"], head["class_index"])
        if kind == "rec-kld":
            return outputs["rec_kld"].reshape(-1).astype(np.float32)
        if kind == "indicators":
            ref = bank.derived(head, reference) if bank is not None else reference(head)
            return indicator_scores(head, outputs["indicators"], ref)
        if kind == "rec-kld-center":
            return (
                outputs["rec_kld"].reshape(-1) + head["weight"] * outputs["center_dist"][:, head["class_index"]]
            ).astype(np.float32)
    except KeyError as e:
        raise ScoreError(
            f"the bank scores with {kind!r}, but the model has no {e} output; recalibrate with this model's heads"
        ) from None
    raise ScoreError(f"unknown score kind {kind!r} in the bank; recalibrate")


def score_windows(spec: Optional[dict], outputs: dict[str, np.ndarray], bank) -> np.ndarray:
    """Anomaly score per window for a bank's score spec (None or absent = k-NN)."""
    spec = spec or {"kind": "knn"}
    if spec["kind"] != "ensemble":
        return head_scores(spec, outputs, bank)
    z = [(head_scores(m, outputs, bank) - m["mean"]) / max(m["std"], 1e-9) for m in spec["members"]]
    return np.mean(z, axis=0).astype(np.float32)


def ensemble_spec(members: list[dict], enrol_scores: list[np.ndarray]) -> dict:
    """An ensemble spec whose members carry the mean and spread of their enrolment scores."""
    out = []
    for m, s in zip(members, enrol_scores):
        s = np.asarray(s, np.float64)
        out.append({**m, "mean": float(s.mean()), "std": float(s.std() + 1e-9)})
    return {"kind": "ensemble", "members": out}


def describe(spec: Optional[dict], k: int = 1) -> str:
    """One line for tables and logs."""
    spec = spec or {"kind": "knn"}
    if spec["kind"] == "ensemble":
        return "ensemble of " + " + ".join(describe(m, k) for m in spec["members"]) + " (z-scores averaged)"
    if spec["kind"] == "knn":
        return f"k-NN cosine distance (k={k})"
    if spec["kind"] == "classifier":
        return f"classifier 1 - softmax[{spec['class']}]"
    if spec["kind"] == "rec-kld":
        return "VAE reconstruction + KL divergence"
    if spec["kind"] == "indicators":
        return "level, crest factor and kurtosis (distance to the nearest enrolment window)"
    return f"VAE reconstruction + KL + {spec['weight']:g} x center distance [{spec['class']}]"
