"""The trends as the agent runs: a sink that gathers each machine's hour (every scored window's
score, threshold and level, alarms started, seconds in each state), writes it to the store when
the hour is over, and works out the machine's severity from the last days. Hours are the agent's
own wall-clock hours (a replay faster than real time lands in the hours it ran in)."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Optional

import numpy as np

from edge_agent.clock import SYSTEM, Clock
from edge_agent.runtime.sink import AgentView, Sink, WindowEvent
from edge_agent.trends.severity import WATCH_DAYS, severity
from edge_agent.trends.store import HOUR, Hour, TrendStore

log = logging.getLogger("edge_agent.trends")

MAX_POINTS = 36_000  # scores kept for one machine's hour: hop 0.1 s; beyond it every other one


class _Bucket:
    def __init__(self, machine: str, hour: int, before: Optional[Hour] = None):
        self.hour = Hour(machine, hour)
        self.before = before  # what a run before a restart in this hour wrote
        self.scores: list[float] = []
        self.levels: list[float] = []
        self.thresholds: list[float] = []

    def add(self, ev: WindowEvent) -> None:
        if len(self.scores) >= MAX_POINTS:  # keep the hour bounded, evenly thinned
            del self.scores[::2], self.levels[::2], self.thresholds[::2]
        self.scores.append(ev.score)
        self.levels.append(ev.level_dbfs)
        if ev.threshold is not None:
            self.thresholds.append(ev.threshold)
        self.hour.windows += 1

    def snapshot(self) -> Hour:
        """This hour so far, without closing it (read from the page's threads: copies first)."""
        part = _Bucket(self.hour.machine, self.hour.hour, self.before)
        part.hour = replace(self.hour, seconds=dict(self.hour.seconds))
        part.scores, part.levels, part.thresholds = list(self.scores), list(self.levels), list(self.thresholds)
        return part.done()

    def done(self) -> Hour:
        h = self.hour
        if self.scores:
            s = np.asarray(self.scores)
            h.score_median, h.score_p95 = float(np.median(s)), float(np.percentile(s, 95))
            h.level_median = float(np.median(self.levels))
        if self.thresholds:
            h.threshold = float(np.median(self.thresholds))
        b = self.before
        if b is not None:  # counts add up; the medians of the two parts are weighted by their windows
            n = h.windows + b.windows
            if b.windows and h.windows:
                h.score_median = (h.score_median * h.windows + b.score_median * b.windows) / n
                h.level_median = (h.level_median * h.windows + b.level_median * b.windows) / n
                h.score_p95 = max(h.score_p95, b.score_p95)
            elif b.windows:
                h.score_median, h.score_p95, h.level_median = b.score_median, b.score_p95, b.level_median
            h.threshold = h.threshold if h.threshold is not None else b.threshold
            h.windows, h.alarms = n, h.alarms + b.alarms
            h.seconds = {k: h.seconds.get(k, 0.0) + b.seconds.get(k, 0.0) for k in {*h.seconds, *b.seconds}}
        return h

    @property
    def empty(self) -> bool:
        return not (self.hour.windows or self.hour.seconds or self.hour.alarms)


class TrendRecorder(Sink):
    def __init__(self, store: TrendStore, machines: list[str], clock: Clock = SYSTEM):
        self.store, self.clock = store, clock
        now = clock.time()
        self._buckets = {m: self._resume(m, _hour(now)) for m in machines}
        self._state = {m: "" for m in machines}
        self._last_tick = clock.monotonic()
        self._severity = {m: self._assess(m, now) for m in machines}
        self._announced = {m: "normal" for m in machines}  # the severity the retained state last carried

    # -- what the agent asks ---------------------------------------------------------------------
    def severity(self, machine: str) -> tuple[str, str]:
        """("watch", why) or ("normal", "")."""
        return self._severity.get(machine, ("normal", ""))

    def history(self, machine: str, since: float) -> list[Hour]:
        """The machine's hours since ``since``, the one under way included (for the status page)."""
        hours = self.store.hours(machine, since=since)
        b = self._buckets.get(machine)
        if b is not None and not b.empty:
            hours = [h for h in hours if h.hour != b.hour.hour] + [b.snapshot()]
        return hours

    # -- sink ------------------------------------------------------------------------------------
    def handle(self, kind: str, machine: str, payload: dict) -> None:
        if machine not in self._buckets:
            return
        if kind == "state":
            self._state[machine] = payload.get("state", "")
        elif kind == "alarm" and payload.get("event") == "start":
            self._bucket(machine).hour.alarms += 1

    def window(self, ev: WindowEvent) -> None:
        if ev.machine in self._buckets:
            self._bucket(ev.machine).add(ev)

    def tick(self, agent: AgentView) -> None:
        mono = self.clock.monotonic()
        dt, self._last_tick = mono - self._last_tick, mono
        for m in self._buckets:
            b = self._bucket(m)
            if self._state[m]:
                b.hour.seconds[self._state[m]] = b.hour.seconds.get(self._state[m], 0.0) + dt
            level, why = self._severity[m]
            if level != self._announced[m]:
                self._announced[m] = level
                log.log(logging.WARNING if level == "watch" else logging.INFO, "%s: severity %s: %s", m, level, why)
                agent.publish_state(agent.streams[m], why or "severity normal: the drift toward the threshold is over")

    def close(self) -> None:
        for b in self._buckets.values():
            if not b.empty:
                self.store.put(b.done())  # the hour so far; a start within the hour adds to it
        self.store.close()

    # -- inside ----------------------------------------------------------------------------------
    def _bucket(self, machine: str) -> _Bucket:
        """The machine's bucket for this hour; the last one is written first when the hour turned."""
        now = self.clock.time()
        b = self._buckets[machine]
        if b.hour.hour != _hour(now):
            if not b.empty:
                self.store.put(b.done())
            b = self._buckets[machine] = _Bucket(machine, _hour(now))
            self._severity[machine] = self._assess(machine, now)
        return b

    def _resume(self, machine: str, hour: int) -> _Bucket:
        before = self.store.hours(machine, since=hour, until=hour + 1)
        return _Bucket(machine, hour, before[0] if before else None)

    def _assess(self, machine: str, now: float) -> tuple[str, str]:
        today = int(now - now % 86400)
        return severity(self.store.hours(machine, since=today - (WATCH_DAYS + 2) * 86400), today)


def _hour(t: float) -> int:
    return int(t - t % HOUR)
