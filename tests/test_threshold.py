"""Thresholds in-process: the detector's smoothing and raise rule as sequence functions, the
extreme-value false-alarm rate against a long simulated stream, and what is said when the
enrolment is too short for the budget."""

from __future__ import annotations

import numpy as np
import pytest

from calibration.enrol import Enrolment, enrol, pick_threshold
from calibration.policy import ThresholdPolicy
from calibration.threshold import block_maxima, fit_block_maxima, rate_interval, support_note
from edge_agent.scoring.detector import Detector, decision_statistic, smooth


def ar1_scores(n: int, rng, rho: float = 0.8) -> np.ndarray:
    """Positive, autocorrelated scores like overlapping windows give (AR(1) in log space)."""
    e = rng.standard_normal(n)
    x = np.empty(n)
    x[0] = e[0]
    for i in range(1, n):
        x[i] = rho * x[i - 1] + np.sqrt(1 - rho**2) * e[i]
    return 0.05 * np.exp(0.35 * x)


@pytest.mark.parametrize("windows", [1, 5])
def test_sequence_rule_equals_the_online_detector(windows):
    rng = np.random.default_rng(3)
    x = ar1_scores(400, rng)
    thr = float(np.percentile(x, 97))
    det = Detector(thr, 3, 5, 5, 30.0, smooth_windows=windows)
    online = [i for i, v in enumerate(x) if (d := det.update(float(v), float(i))) is not None and d.kind == "start"]
    stat = decision_statistic(smooth(x, windows), 3, 5, warm_up=det.warm_up)
    assert online and online[0] == int(np.argmax(stat > thr))
    det.reset()
    assert not det.recent and not det.raw


def test_no_alarm_while_the_running_median_fills_after_a_start():
    """A machine's (or the agent's) first windows after a start: three loud windows, then normal
    sound. With a 5-window median they decided alone (the median of 1-3 windows is theirs) and
    raised an alarm; now the first 4 windows cannot count, online and in the fitted sequences alike,
    and a steady anomaly still alarms."""
    start = np.array([0.5, 0.5, 0.5] + [0.01] * 20)
    det = Detector(0.1, 3, 5, 5, 1e9, smooth_windows=5)
    assert det.warm_up == 4
    assert not [d for i, v in enumerate(start) if (d := det.update(float(v), float(i)))]
    assert decision_statistic(smooth(start, 5), 3, 5, warm_up=4).max() < 0.1
    assert decision_statistic(smooth(start, 5), 3, 5).max() > 0.1  # what decided before
    maxima, block_hours, audio_hours = block_maxima(
        np.concatenate([start, start]), np.repeat([0, 1], len(start)), 1.0, 3, 5, 5
    )
    assert maxima.max() < 0.1
    # each clip stands for the 23 - 4 - 2 windows at which an alarm could start; the audio is all of it
    assert block_hours == pytest.approx(17 / 3600) and audio_hours == pytest.approx(46 / 3600)
    det.reset()
    steady = [0.01] * 5 + [0.5] * 10
    starts = [i for i, v in enumerate(steady) if (d := det.update(float(v), float(i))) and d.kind == "start"]
    assert starts == [9]  # the median turns at the 3rd loud window, 3 of 5 above two windows later


def test_predicted_rate_matches_a_long_simulated_stream():
    rng = np.random.default_rng(11)
    clips, per_clip = 40, 10  # enrolment: 40 clips of 10 windows
    scores = ar1_scores(clips * per_clip, rng)
    groups = np.repeat(np.arange(clips), per_clip)
    maxima, block_hours, _ = block_maxima(scores, groups, 1.0, 3, 5, smooth_windows=5)
    fit = fit_block_maxima(maxima, block_hours)
    budget = 20.0  # per hour: frequent enough to count in the simulation
    thr = fit.threshold(budget)
    assert fit.rate_per_hour(thr) == pytest.approx(budget, rel=1e-6)
    lo, hi = rate_interval(maxima, block_hours, thr)
    assert lo < budget < hi
    # 10 hours of unseen normal sound from the same process, through the real detector
    hours = 10
    stream = ar1_scores(int(hours * 3600), np.random.default_rng(12))
    det = Detector(thr, 3, 5, 5, 1e9, smooth_windows=5)
    alarms = sum(
        1 for i, v in enumerate(stream) if (d := det.update(float(v), float(i))) is not None and d.kind == "start"
    )
    measured = alarms / hours
    assert budget / 3 < measured < budget * 3, (measured, budget)


def test_a_heavy_tailed_fit_from_a_few_dozen_clips_falls_back_to_gumbel():
    from scipy import stats

    # maxima of 40 clips drawn from a heavy-tailed (Frechet) law: a free GEV fit finds the heavy
    # tail and, extrapolated to one alarm a week, a threshold far beyond any cosine distance (<= 2)
    m = stats.genextreme.rvs(-0.4, loc=0.05, scale=0.01, size=40, random_state=np.random.default_rng(3))
    assert stats.genextreme.fit(m)[0] < 0
    fit = fit_block_maxima(m, 10 / 3600)
    assert fit.shape == 0.0
    assert fit.threshold(1 / 168) < 2.0
    # a bounded tail (c > 0, as bounded scores give) is kept, and found from a sound starting point
    b = stats.genextreme.rvs(0.3, loc=0.05, scale=0.01, size=200, random_state=np.random.default_rng(4))
    assert fit_block_maxima(b, 10 / 3600).shape == pytest.approx(0.3, abs=0.1)


def test_independent_windows_promise_too_few_alarms_on_autocorrelated_scores():
    rng = np.random.default_rng(5)
    scores = ar1_scores(400, rng, rho=0.9)
    groups = np.repeat(np.arange(40), 10)
    seq = pick_threshold(scores, ThresholdPolicy(false_alarms_per_day=24.0), groups)
    ind = pick_threshold(scores, ThresholdPolicy(false_alarms_per_day=24.0, independent_windows=True), groups)
    assert seq[4]["method"].startswith("decision rule") and "independent" in ind[4]["method"]
    assert seq[1] > ind[1]  # the honest threshold is higher for the same budget


def test_too_little_audio_for_the_budget_is_said_with_what_would_do():
    fit = fit_block_maxima(np.linspace(0.1, 0.2, 30), 10 / 3600)  # 30 clips of 10 s = 5 min
    note = support_note(fit, 1 / 168)
    assert "one false alarm per 7 days" in note and "5 min" in note and "16.8 h" in note
    big = fit_block_maxima(np.linspace(0.1, 0.2, 30), 1.0)  # 30 h of audio
    assert support_note(big, 1 / 168) == ""


def test_enrol_records_the_rate_its_interval_and_the_audio_behind_it():
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((120, 16)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    res = enrol(
        "ab" * 32,
        Enrolment(emb, np.repeat([f"c{i}" for i in range(12)], 10), "source"),
        n_centres=4,
        policy=ThresholdPolicy(false_alarms_per_day=1 / 7, smooth_windows=5),
    )
    info = res.bank.meta["alarm_rate"]
    assert info["clips"] == 12 and info["hours"] == pytest.approx(120 / 3600)
    assert res.expected_alarms_per_day == pytest.approx(1 / 7, rel=1e-3)
    assert info["per_day_ci"][0] <= 1 / 7 <= info["per_day_ci"][1]
    assert "extrapolated from 2 min of enrolled audio" in info["note"]
    assert res.bank.meta["threshold_rule"]["smooth_windows"] == 5


@pytest.mark.parametrize("policy", [ThresholdPolicy(percentile=0.9, false_alarms_per_day=None), ThresholdPolicy()])
def test_clips_shorter_than_the_alarm_rule_fall_back_to_independent_windows(policy):
    """One window per clip (a whole-clip model): no clip holds the k of n rule, so the rate cannot
    be measured over clips; the threshold is still set and the estimate says it is optimistic
    (this raised, and evaluate skipped the machine)."""
    rng = np.random.default_rng(0)
    scores = rng.gamma(4.0, 0.02, 40)
    fit, thr, rule, per_day, info = pick_threshold(scores, policy, np.arange(40).astype(str))
    assert np.isfinite(thr) and np.isfinite(per_day)
    assert info["method"] == "windows taken as independent"
    assert "0 clip(s) of 3 windows or more" in info["note"] and "optimistic" in info["note"]
