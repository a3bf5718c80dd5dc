"""``watch``: a machine whose normal sound drifts toward its threshold over days, before anything
alarms. The alarm stays the alarm; ``watch`` never pages anyone, it is shown on the page, in Home
Assistant and in the retained state.

The rule, on days with enough scored audio: the daily median score has been at least
``WATCH_FRACTION`` of the threshold in force on each of the last ``WATCH_DAYS`` days, and it rose
from the first of those days to the last. A pure function of the hourly rows (``store.Hour``)."""

from __future__ import annotations

from statistics import median
from typing import Optional

from edge_agent.trends.store import Hour

WATCH_DAYS = 3
WATCH_FRACTION = 0.5
MIN_WINDOWS_PER_DAY = 600  # ten minutes of scored sound at hop 1 s


def daily(hours: list[Hour]) -> list[tuple[int, float, float]]:
    """(day start, median of the hourly score medians, median threshold) of each day with enough
    scored windows, in order."""
    days: dict[int, list[Hour]] = {}
    for h in hours:
        if h.score_median is not None and h.threshold is not None:
            days.setdefault(h.hour - h.hour % 86400, []).append(h)
    out = []
    for day, hs in sorted(days.items()):
        if sum(h.windows for h in hs) >= MIN_WINDOWS_PER_DAY:
            out.append((day, median(h.score_median for h in hs), median(h.threshold for h in hs)))
    return out


def severity(hours: list[Hour], today: Optional[int] = None) -> tuple[str, str]:
    """("watch", why) or ("normal", "") from the hourly rows of the last days (today's partial day
    left out when ``today`` is given)."""
    days = [d for d in daily(hours) if today is None or d[0] < today]
    if len(days) < WATCH_DAYS:
        return "normal", ""
    last = days[-WATCH_DAYS:]
    if last[-1][0] - last[0][0] > (WATCH_DAYS + 1) * 86400:  # not consecutive enough to speak of a drift
        return "normal", ""
    ratios = [m / t for _, m, t in last if t > 0]
    if len(ratios) == WATCH_DAYS and min(ratios) >= WATCH_FRACTION and ratios[-1] > ratios[0]:
        pct = ", ".join(f"{100 * r:.0f} %" for r in ratios)
        return "watch", f"the daily median score drifted toward the threshold over {WATCH_DAYS} days ({pct} of it)"
    return "normal", ""
