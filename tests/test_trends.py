"""Trends: hourly statistics kept in SQLite, the ``watch`` severity when the normal score drifts
toward the threshold over days, and ``edge-agent report``. The recorder runs on a ManualClock, so
hours and days pass in milliseconds; the end-to-end test replays real clips through ``run``."""

from __future__ import annotations

import csv
import shutil
from types import SimpleNamespace

import pytest

from edge_agent.clock import ManualClock
from edge_agent.runtime.stream_records import WindowEvent
from edge_agent.trends.recorder import TrendRecorder
from edge_agent.trends.severity import severity
from edge_agent.trends.store import Hour, TrendStore
from tests.conftest import DEMO
from tests.test_run_replay import cli

DAY = 86400
T0 = 1_800_000_000 - 1_800_000_000 % DAY  # a midnight


def _ev(score, threshold=0.2, level=-30.0, machine="m"):
    return WindowEvent(machine, 0.0, 0.0, "", score, threshold, level, "normal", 1, None)


class _Agent:
    def __init__(self):
        self.streams = {"m": SimpleNamespace(machine="m")}
        self.sinks = []
        self.published: list[str] = []

    def publish_state(self, s, reason=""):
        self.published.append(reason)


def test_an_hour_is_written_when_it_is_over(tmp_path):
    clock = ManualClock(T0 + 10)
    store = TrendStore(tmp_path / "trends.sqlite")
    rec, agent = TrendRecorder(store, ["m"], clock), _Agent()
    rec.handle("state", "m", {"state": "normal"})
    for i in range(100):
        rec.window(_ev(0.01 * (i + 1)))
        clock.advance(1.0)
        rec.tick(agent)
    rec.handle("alarm", "m", {"event": "start"})
    rec.handle("state", "m", {"state": "no_audio"})
    clock.advance(600.0)
    rec.tick(agent)
    assert store.hours("m") == []  # the hour is not over
    clock.advance(3600.0)
    rec.tick(agent)
    [h] = store.hours("m")
    assert h.hour == T0 and h.windows == 100 and h.alarms == 1
    assert h.score_median == pytest.approx(0.505) and h.score_p95 == pytest.approx(0.9505)
    assert h.threshold == pytest.approx(0.2) and h.level_median == pytest.approx(-30.0)
    # a tick's time goes to the hour it ends in
    assert h.seconds["normal"] == pytest.approx(100.0) and h.seconds["no_audio"] == pytest.approx(600.0)
    rec.close()
    hours = TrendStore(tmp_path / "trends.sqlite").hours("m")
    assert [x.hour for x in hours] == [T0, T0 + 3600] and hours[1].seconds == {"no_audio": pytest.approx(3600.0)}


def test_a_restart_within_an_hour_adds_to_it(tmp_path):
    clock = ManualClock(T0 + 10)
    for run in range(2):
        rec = TrendRecorder(TrendStore(tmp_path / "trends.sqlite"), ["m"], clock)
        rec.handle("alarm", "m", {"event": "start"})
        for _ in range(10):
            rec.window(_ev(0.1 * (run + 1)))
        rec.close()
        clock.advance(60)
    [h] = TrendStore(tmp_path / "trends.sqlite").hours("m")
    assert h.windows == 20 and h.alarms == 2 and h.score_median == pytest.approx(0.15)


def _days(ratios, threshold=0.2, windows=3600):
    return [
        Hour("m", T0 + d * DAY + hh * 3600, windows // 24, r * threshold, r * threshold * 2, threshold, -30.0)
        for d, r in enumerate(ratios)
        for hh in range(24)
    ]


@pytest.mark.parametrize(
    "ratios,expect",
    [
        ([0.2, 0.55, 0.6, 0.7], "watch"),  # at least half the threshold for 3 days, and rising
        ([0.3, 0.3, 0.3, 0.3], "normal"),  # far from the threshold
        ([0.6, 0.7, 0.6, 0.55], "normal"),  # near it but falling
        ([0.2, 0.4, 0.6, 0.7], "normal"),  # rising, but half the threshold on two days only
    ],
)
def test_watch_needs_three_days_near_the_threshold_and_rising(ratios, expect):
    level, why = severity(_days(ratios), today=T0 + len(ratios) * DAY)
    assert level == expect and (("3 days" in why) if expect == "watch" else why == "")


def test_a_day_with_little_scored_sound_does_not_count():
    hours = _days([0.6, 0.7, 0.8], windows=240)  # 10 windows an hour: a machine mostly off
    assert severity(hours, today=T0 + 3 * DAY) == ("normal", "")


def test_the_recorder_raises_watch_on_the_state_when_a_day_turns(tmp_path):
    store = TrendStore(tmp_path / "trends.sqlite")
    for h in _days([0.55, 0.6, 0.7]):
        store.put(h)
    clock, agent = ManualClock(T0 + 3 * DAY - 10), _Agent()
    rec = TrendRecorder(store, ["m"], clock)
    assert rec.severity("m") == ("normal", "")  # the third day is not over
    rec.tick(agent)
    clock.advance(20)
    rec.tick(agent)
    assert rec.severity("m")[0] == "watch" and agent.published and "drifted" in agent.published[-1]


def test_report_writes_a_csv_and_a_plot(tmp_path):
    import time

    store = TrendStore(tmp_path / "st" / "trends.sqlite")
    now = int(time.time()) // 3600 * 3600
    for i in range(48):
        store.put(Hour("fan01", now - i * 3600, 3600, 0.05, 0.08, 0.2, -31.0, int(i == 5), {"normal": 3500.0}))
    store.close()
    r = cli("report", "--machine", "fan01", "--state-dir", tmp_path / "st", "--since", "3d", "--out", tmp_path / "r")
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(open(tmp_path / "r" / "fan01-trends.csv")))
    assert len(rows) == 48 and rows[0]["minutes_normal"] == "58.3" and sum(int(x["alarms"]) for x in rows) == 1
    assert (tmp_path / "r" / "fan01-trends.png").stat().st_size > 10_000
    assert "severity normal" in r.stdout
    r = cli("report", "--machine", "pump9", "--state-dir", tmp_path / "st")
    assert r.returncode == 2 and "fan01" in r.stderr and "Traceback" not in r.stderr


def test_a_run_keeps_its_hours(calibrated, tmp_path):
    st = tmp_path / "st"
    shutil.copytree(calibrated, st)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"state_dir: {st}\nengine: cpu\nmachines:\n  fan01:\n    input: {{file: {DEMO / 'replay'}, realtime: false}}\n"
    )
    r = cli("run", "--config", cfg)
    assert r.returncode == 0, r.stderr[-2000:]
    hours = TrendStore(st / "trends.sqlite").hours("fan01")
    assert sum(h.windows for h in hours) == 36  # every scored window of the demo's 40 s
    assert all(h.threshold and h.score_median is not None for h in hours if h.windows)
