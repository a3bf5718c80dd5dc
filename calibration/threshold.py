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


def threshold_from_alarm_rate(
    fit: GammaFit, alarms_per_day: float, hop_seconds: float, raise_after: int, of_last: int
) -> float:
    """The per-window threshold whose expected alarm rate on normal sound is ``alarms_per_day``."""
    if alarms_per_day <= 0:
        raise ValueError("--false-alarms-per-day must be > 0")

    def gap(log_p: float) -> float:
        return np.log(alarm_rate_per_day(np.exp(log_p), hop_seconds, raise_after, of_last) + 1e-300) - np.log(
            alarms_per_day
        )

    lo, hi = np.log(1e-15), np.log(0.5)
    if gap(hi) < 0:  # even p = 0.5 gives fewer alarms than allowed
        p = 0.5
    elif gap(lo) > 0:
        p = 1e-15
    else:
        p = float(np.exp(brentq(gap, lo, hi, xtol=1e-10)))
    return fit.ppf(1.0 - p)


# -- false-alarm budgets with the real decision rule -------------------------------------------
# Windows overlap and scores are autocorrelated, so treating windows as independent promises far
# fewer alarms than come. Instead the decision rule itself (smoothing, k of n) runs over every
# enrolment clip's leave-one-clip-out score sequence; the largest decision statistic of each clip
# (a block maximum) says whether that clip would have raised an alarm at a threshold, and an
# extreme-value distribution fitted to the block maxima extrapolates to rarer thresholds.
MIN_GEV_BLOCKS = 20  # below this, the shape of a GEV is guesswork: fit a Gumbel (shape 0)
BOOTSTRAP = 100


@dataclass(frozen=True)
class RateFit:
    """Extreme-value fit of per-block maxima of the decision statistic."""

    shape: float  # scipy's genextreme c (0: Gumbel)
    loc: float
    scale: float
    block_hours: float  # stream time per block: the windows at which an alarm could start, a hop each
    blocks: int
    audio_hours: float = 0.0  # the enrolled audio behind the blocks (0: blocks x block_hours)

    @property
    def hours(self) -> float:
        """Hours of enrolled audio the fit rests on."""
        return self.audio_hours or self.block_hours * self.blocks

    def rate_per_hour(self, threshold: float) -> float:
        """Expected alarm starts per hour of normal sound (at most one per block)."""
        return float(stats.genextreme.sf(threshold, self.shape, loc=self.loc, scale=self.scale)) / self.block_hours

    def threshold(self, per_hour: float) -> float:
        p = min(max(per_hour * self.block_hours, 1e-12), 0.5)
        return float(stats.genextreme.isf(p, self.shape, loc=self.loc, scale=self.scale))

    def to_dict(self) -> dict:
        return {
            "distribution": "genextreme",
            "shape": self.shape,
            "loc": self.loc,
            "scale": self.scale,
            "block_hours": self.block_hours,
            "blocks": self.blocks,
            "audio_hours": self.hours,
        }


def block_maxima(
    scores: np.ndarray,
    groups: np.ndarray,
    hop_seconds: float,
    raise_after: int,
    of_last: int,
    smooth_windows: int = 1,
    how: str = "median",
) -> tuple[np.ndarray, float, float]:
    """Per clip (in the order its windows were scored, from a start as after a reset), the largest
    decision statistic; the hours of stream a clip stands for, on average: its windows at which an
    alarm could start (after the warm-up and the first ``raise_after`` - 1), one hop each, as every
    window of a running stream is one; and the hours of audio in those clips. Clips with no such
    window cannot alarm alone and are left out."""
    from edge_agent.scoring.detector import decision_statistic, smooth, warm_up_windows

    scores, groups = np.asarray(scores, dtype=np.float64), np.asarray(groups)
    warm_up = warm_up_windows(smooth_windows)
    maxima, positions, windows = [], [], 0
    for g in dict.fromkeys(groups):  # first-seen order
        seq = scores[groups == g]
        n = len(seq) - warm_up - raise_after + 1
        if n < 1:
            continue
        stat = decision_statistic(smooth(seq, smooth_windows, how), raise_after, of_last, warm_up=warm_up)
        maxima.append(float(stat.max()))
        positions.append(n)
        windows += len(seq)
    block_hours = float(np.mean(positions)) * hop_seconds / 3600 if positions else 0.0
    return np.array(maxima), block_hours, windows * hop_seconds / 3600


def fit_block_maxima(
    maxima: np.ndarray, block_hours: float, shape: float | None = None, audio_hours: float = 0.0
) -> RateFit:
    """GEV (Gumbel below ``MIN_GEV_BLOCKS`` blocks) fitted to block maxima; ``shape`` fixes the
    GEV shape (the bootstrap refits location and scale only)."""
    m = np.asarray(maxima, dtype=np.float64)
    if len(m) < 3 or np.ptp(m) <= 0:
        raise ValueError(
            f"need at least 3 enrolment clips (or recording chunks) with distinct scores to fit a false-alarm "
            f"rate, got {len(m)}"
        )
    c = 0.0
    gloc, gscale = stats.gumbel_r.fit(m)  # also the GEV's starting point: scipy's default start
    # can end far from the optimum on small-scale scores (c 1.22 for data drawn with c 0.3)
    if shape is not None and shape != 0.0:
        c, loc, scale = stats.genextreme.fit(m, f0=shape, loc=gloc, scale=gscale)
    elif shape is None and len(m) >= MIN_GEV_BLOCKS:
        c, loc, scale = stats.genextreme.fit(m, 0.0, loc=gloc, scale=gscale)
        # Scores are bounded (a cosine distance is at most 2), so their maxima cannot have a heavy
        # tail: a heavy-tailed fit (c < 0) from a few dozen blocks is estimation noise, and
        # extrapolated to a rare budget it put thresholds above any score the model can give (7.3
        # on a measured slider enrolment). Such fits, and implausibly short tails, fall back to Gumbel.
        if not 0.0 <= c <= 0.5 or not np.isfinite(c):
            c = 0.0
    if c == 0.0:
        loc, scale = gloc, gscale
    return RateFit(float(c), float(loc), float(scale), block_hours, len(m), audio_hours)


def rate_interval(
    maxima: np.ndarray, block_hours: float, threshold: float, n: int = BOOTSTRAP, seed: int = 0, shape: float = 0.0
) -> tuple[float, float]:
    """95 % bootstrap interval (clips resampled; location and scale refitted at the point fit's
    ``shape``) of the alarm rate per hour at a threshold."""
    rng = np.random.default_rng(seed)
    m = np.asarray(maxima)
    rates = []
    for _ in range(n):
        sample = rng.choice(m, len(m), replace=True)
        if np.ptp(sample) <= 0:
            continue
        rates.append(fit_block_maxima(sample, block_hours, shape=shape).rate_per_hour(threshold))
    return float(np.percentile(rates, 2.5)), float(np.percentile(rates, 97.5))


def support_note(fit: RateFit, per_hour: float) -> str:
    """Whether the audio behind the estimate can support the budget, and what would."""
    period = 1.0 / per_hour  # hours between alarms the budget allows
    if fit.hours * 10 >= period:
        return ""
    return (
        f"the budget of one false alarm per {_hours(period)} is extrapolated from {_hours(fit.hours)} of enrolled "
        "audio "
        f"({period / fit.hours:.0f}x beyond it); for an estimate that rests on audio rather than on the fitted tail, "
        f"enrol at least {_hours(period / 10)} of normal sound covering day, night and load changes"
    )


def _hours(h: float) -> str:
    return f"{h * 60:.0f} min" if h < 1 else f"{h:.1f} h" if h < 48 else f"{h / 24:.0f} days"
