"""DCASE Task 2 scores, computed as the official evaluator does.

- AUC over source-domain normals + all anomalies, and over target-domain normals + all anomalies;
- pAUC at FPR 0.1 over all clips: scikit-learn's ``roc_auc_score(max_fpr=0.1)`` (standardised
  partial AUC, McClish correction);
- the harmonic mean of those; for data without domains, of AUC and pAUC;
- precision, recall and F1 of thresholded decisions (anomaly = positive class).
"""

from __future__ import annotations

from typing import Optional

import numpy as np
from scipy.stats import hmean
from sklearn.metrics import precision_recall_fscore_support, roc_auc_score

MAX_FPR = 0.1


def auc(y_true: np.ndarray, scores: np.ndarray) -> float:
    return float(roc_auc_score(y_true, scores))


def pauc(y_true: np.ndarray, scores: np.ndarray, max_fpr: float = MAX_FPR) -> float:
    return float(roc_auc_score(y_true, scores, max_fpr=max_fpr))


def harmonic_mean(values) -> float:
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    # sklearn AUC is > 0 for any non-degenerate ranking; guard the degenerate case anyway
    return float(hmean(np.maximum(v, np.finfo(float).eps))) if v.size else float("nan")


def section_scores(
    y_true: np.ndarray, scores: np.ndarray, domains: np.ndarray, decisions: Optional[np.ndarray] = None
) -> dict:
    """Scores of one section (machine id). ``domains``: "source"/"target" per clip."""
    y_true = np.asarray(y_true).astype(int)
    scores = np.asarray(scores, dtype=np.float64)
    domains = np.asarray(domains)
    out: dict = {"n_clips": int(len(y_true)), "n_anomalies": int(y_true.sum())}
    has_domains = (domains == "target").any() and ((domains == "source") & (y_true == 0)).any()
    if has_domains:
        for d in ("source", "target"):
            m = (domains == d) & (y_true == 0) | (y_true == 1)
            out[f"auc_{d}"] = auc(y_true[m], scores[m])
        out["pauc"] = pauc(y_true, scores)
        out["hmean"] = harmonic_mean([out["auc_source"], out["auc_target"], out["pauc"]])
    else:
        out["auc"] = auc(y_true, scores)
        out["pauc"] = pauc(y_true, scores)
        out["hmean"] = harmonic_mean([out["auc"], out["pauc"]])
    if decisions is not None:
        p, r, f, _ = precision_recall_fscore_support(
            y_true, np.asarray(decisions).astype(int), average="binary", zero_division=0
        )
        out.update(precision=float(p), recall=float(r), f1=float(f))
    return out


def _stratified_interval(strata_of, stat, n: int, seed: int) -> tuple[float, float]:
    """95 % percentile interval of ``stat(idx)`` over ``n`` resamplings, each stratum of clip indices
    resampled with replacement to its own size."""
    rng = np.random.default_rng(seed)
    strata = [s for s in strata_of if len(s)]
    values = [stat(np.concatenate([rng.choice(s, len(s), replace=True) for s in strata])) for _ in range(n)]
    return float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))


def bootstrap_hmean(y_true, scores, domains, n: int = 1000, seed: int = 0) -> tuple[float, float]:
    """95 % interval of a section's harmonic mean, resampling clips within each (condition, domain)
    stratum: on sets of ten clips a few h-mean points are noise."""
    y_true, scores, domains = np.asarray(y_true).astype(int), np.asarray(scores, dtype=np.float64), np.asarray(domains)
    strata = [np.where((y_true == c) & (domains == d))[0] for c in (0, 1) for d in np.unique(domains)]
    return _stratified_interval(
        strata, lambda idx: section_scores(y_true[idx], scores[idx], domains[idx])["hmean"], n, seed
    )


def bootstrap_hmean_difference(y_true, scores_a, scores_b, domains, n: int = 1000, seed: int = 0):
    """95 % interval of h-mean(b) - h-mean(a) on the same clips, resampled together (paired): two
    systems' intervals overlap far more often than their difference is in doubt."""
    y_true, domains = np.asarray(y_true).astype(int), np.asarray(domains)
    a, b = np.asarray(scores_a, dtype=np.float64), np.asarray(scores_b, dtype=np.float64)
    strata = [np.where((y_true == c) & (domains == d))[0] for c in (0, 1) for d in np.unique(domains)]

    def diff(idx):
        return (
            section_scores(y_true[idx], b[idx], domains[idx])["hmean"]
            - section_scores(y_true[idx], a[idx], domains[idx])["hmean"]
        )

    return _stratified_interval(strata, diff, n, seed)


def bootstrap_auc(y_true, scores, n: int = 1000, seed: int = 0) -> tuple[float, float]:
    """95 % interval of an AUC, resampling normal and anomalous clips separately."""
    y_true, scores = np.asarray(y_true).astype(int), np.asarray(scores, dtype=np.float64)
    strata = [np.where(y_true == c)[0] for c in (0, 1)]
    return _stratified_interval(strata, lambda idx: auc(y_true[idx], scores[idx]), n, seed)


def auc_by_attribute(y_true, scores, attributes) -> dict[str, tuple[float, float, float]]:
    """AUC of each attribute value's normals against its own anomalies, with its 95 % interval:
    how well one operating condition is told apart, free of the offsets between conditions that
    the domain AUCs mix in. ``attributes``: one label per clip (e.g. "pat=02"); values without
    both classes are left out."""
    y_true, scores, attributes = np.asarray(y_true).astype(int), np.asarray(scores), np.asarray(attributes)
    out = {}
    for value in sorted(set(attributes.tolist())):
        m = attributes == value
        if len(set(y_true[m].tolist())) == 2:
            out[str(value)] = (auc(y_true[m], scores[m]), *bootstrap_auc(y_true[m], scores[m]))
    return out
