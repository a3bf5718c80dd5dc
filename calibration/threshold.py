"""Alarm thresholds from enrolment scores: a gamma fit and its percentile (the DCASE baseline
convention), or a false-alarm budget per day that accounts for the hop and the k-of-n raise rule."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats
from scipy.optimize import brentq


@dataclass(frozen=True)
class GammaFit:
    shape: float
    loc: float
    scale: float

    def ppf(self, q: float) -> float:
        return float(stats.gamma.ppf(q, self.shape, loc=self.loc, scale=self.scale))

    def sf(self, x: float) -> float:
        return float(stats.gamma.sf(x, self.shape, loc=self.loc, scale=self.scale))

    def pdf(self, x: np.ndarray) -> np.ndarray:
        return stats.gamma.pdf(x, self.shape, loc=self.loc, scale=self.scale)

    def to_dict(self) -> dict:
        return {"distribution": "gamma", "shape": self.shape, "loc": self.loc, "scale": self.scale}


def fit_gamma(scores: np.ndarray) -> GammaFit:
    """Gamma fit of enrolment scores. Scores may be negative (z-normalised): the location is fitted
    below the smallest score so the support covers them all."""
    s = np.asarray(scores, dtype=np.float64)
    if s.size < 3 or np.ptp(s) <= 0:
        raise ValueError(f"need at least 3 distinct enrolment scores to fit a threshold, got {s.size}")
    floc = float(s.min() - 0.05 * np.ptp(s) - 1e-6)
    a, loc, scale = stats.gamma.fit(s, floc=floc)
    return GammaFit(float(a), float(loc), float(scale))


def threshold_from_percentile(fit: GammaFit, percentile: float = 0.90) -> float:
    if not 0 < percentile < 1:
        raise ValueError(f"percentile must be between 0 and 1 (e.g. 0.90), got {percentile}")
    return fit.ppf(percentile)


def alarm_rate_per_day(p_window: float, hop_seconds: float, raise_after: int, of_last: int) -> float:
    """Expected alarm starts per day when each window exceeds the threshold independently with
    probability p: an alarm starts at a window that is itself above and brings the count in the
    last ``of_last`` windows to ``raise_after``."""
    windows_per_day = 86400.0 / hop_seconds
    p_start = p_window * stats.binom.pmf(raise_after - 1, of_last - 1, p_window)
    return float(windows_per_day * p_start)


def threshold_from_alarm_rate(fit: GammaFit, alarms_per_day: float, hop_seconds: float, raise_after: int, of_last: int) -> float:
    """The per-window threshold whose expected alarm rate on normal sound is ``alarms_per_day``."""
    if alarms_per_day <= 0:
        raise ValueError("--false-alarms-per-day must be > 0")

    def gap(log_p: float) -> float:
        return np.log(alarm_rate_per_day(np.exp(log_p), hop_seconds, raise_after, of_last) + 1e-300) - np.log(alarms_per_day)

    lo, hi = np.log(1e-15), np.log(0.5)
    if gap(hi) < 0:  # even p = 0.5 gives fewer alarms than allowed
        p = 0.5
    elif gap(lo) > 0:
        p = 1e-15
    else:
        p = float(np.exp(brentq(gap, lo, hi, xtol=1e-10)))
    return fit.ppf(1.0 - p)
