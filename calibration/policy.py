"""How a threshold is chosen: the policy calibrate, the learning period and evaluate apply.

Kept apart from the fitting code (``threshold.py``, scipy) so that the running agent, which needs
the policy of each machine but fits nothing unless a learning period ends, does not load scipy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from edge_agent.config import AlarmConfig


@dataclass
class ThresholdPolicy:
    """A percentile of the gamma fit of window scores (the DCASE convention, for evaluation), or a
    false-alarm budget estimated with the real decision rule (the default: 1 a week)."""

    percentile: Optional[float] = None
    false_alarms_per_day: Optional[float] = 1.0 / 7
    hop_seconds: float = 1.0
    raise_after: int = 3
    of_last: int = 5
    smooth_windows: int = 1
    smooth: str = "median"
    independent_windows: bool = False  # the former rate model (windows taken as independent), for comparison

    def rule(self) -> dict:
        return {
            "hop_seconds": self.hop_seconds,
            "raise_after": self.raise_after,
            "of_last": self.of_last,
            "smooth_windows": self.smooth_windows,
            "smooth": self.smooth,
        }


DCASE_POLICY = ThresholdPolicy(percentile=0.90, false_alarms_per_day=None)  # evaluate: the DCASE baseline's convention


def threshold_policy(
    percentile: Optional[float],
    false_alarms_per_day: Optional[float],
    hop: float,
    alarm=None,
    false_alarms_per_week: Optional[float] = None,
) -> ThresholdPolicy:
    """The threshold rule calibrate applies (also used by the benchmarks): the asked percentile (the
    DCASE convention) or false-alarm budget, else the machine's budget (``alarm.false_alarms_per_week``,
    1 a week), always with the machine's hop, smoothing and raise rule."""
    alarm = alarm or AlarmConfig()
    if percentile is None and false_alarms_per_day is None:
        false_alarms_per_day = (false_alarms_per_week or alarm.false_alarms_per_week) / 7
    return ThresholdPolicy(
        percentile=percentile,
        false_alarms_per_day=None if percentile is not None else false_alarms_per_day,
        hop_seconds=hop,
        raise_after=alarm.raise_after,
        of_last=alarm.of_last,
        smooth_windows=alarm.smooth_windows(hop),
        smooth=alarm.smooth,
    )
