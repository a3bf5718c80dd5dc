"""The injected clock: the agent's liveness, shelves and watchdog follow the clock they are given,
so the logic that waits minutes in production is tested in milliseconds (the real-time tests with a
real replay, broker and capture stay in their own modules)."""

from __future__ import annotations

import shutil
from types import SimpleNamespace

import numpy as np
import pytest

from edge_agent.clock import ManualClock
from edge_agent.runtime.sink import Sink


class _States(Sink):
    def __init__(self):
        self.states: list[tuple[str, str]] = []

    def handle(self, kind, machine, p):
        if kind == "state":
            self.states.append((p["state"], p.get("reason", "")))


def _live_agent(tmp_path, state_dir, clock, sinks, silence=2.0):
    """A calibrated machine on a real-time replay source that is never started: the test writes the
    audio into its ring itself, and moves the clock."""
    from edge_agent.audio.wavio import write_wav
    from edge_agent.config import parse_config
    from edge_agent.runtime.daemon import agent_from_config

    sr = 16000
    write_wav(tmp_path / "a.wav", np.zeros(sr, np.float32), sr)
    inp = {"file": str(tmp_path / "a.wav"), "realtime": True, "silence_seconds": silence}
    cfg = parse_config({"state_dir": str(state_dir), "engine": "cpu", "machines": {"fan01": {"input": inp}}})
    return agent_from_config(cfg, sinks, clock=clock)


@pytest.fixture
def state_dir(calibrated, tmp_path):
    d = tmp_path / "state"
    shutil.copytree(calibrated, d)
    return d


def test_a_manual_clock_moves_only_when_told():
    c = ManualClock(1000.0)
    t, m = c.time(), c.monotonic()
    assert (c.time(), c.monotonic()) == (t, m)
    c.advance(2.5)
    assert (c.time() - t, c.monotonic() - m) == (2.5, 2.5)
    with pytest.raises(ValueError):
        c.advance(-1)


def test_no_audio_follows_the_agents_clock(tmp_path, state_dir):
    clock, rec = ManualClock(), _States()
    agent = _live_agent(tmp_path, state_dir, clock, [rec], silence=2.0)
    s = agent.streams["fan01"]
    s.started()
    agent.step()
    assert not s.no_audio
    clock.advance(1.9)
    agent.step()
    assert not s.no_audio  # within silence_seconds on this clock, however long the test took
    clock.advance(0.2)
    agent.step()
    assert s.no_audio and rec.states[-1][0] == "no_audio" and "no audio frames for 2 s" in rec.states[-1][1]
    s.source.ring.write(np.zeros((1600, 1), np.float32))  # audio again
    agent.step()
    assert not s.no_audio and rec.states[-1][1] == "sound is back"


def test_a_shelf_expires_when_the_clock_says_so(tmp_path, state_dir):
    clock, rec = ManualClock(), _States()
    agent = _live_agent(tmp_path, state_dir, clock, [rec], silence=86400)
    s = agent.streams["fan01"]
    agent.alarms.load(s)
    agent.alarms.shelve(s, 90.0, "test")  # an hour and a half
    assert s.lifecycle.shelved_until == pytest.approx(clock.time() + 5400.0)
    clock.advance(5399.0)
    agent.step()
    assert s.shelved
    clock.advance(2.0)
    agent.step()
    assert not s.shelved and rec.states[-1][1] == "the shelf expired: monitoring again"


class _Notify:
    watchdog_interval = 2.0

    def __init__(self):
        self.sent: list[str] = []

    def send(self, msg: str) -> None:
        self.sent.append(msg)


def test_the_watchdog_pings_while_audio_and_windows_advance_and_stops_when_they_do_not(tmp_path, state_dir):
    from edge_agent.health.monitor import Health

    clock = ManualClock()
    agent = _live_agent(tmp_path, state_dir, clock, [])
    s = agent.streams["fan01"]
    notify = _Notify()
    health = Health(agent.streams, agent.faults, notify, clock=clock)
    view = SimpleNamespace(streams=agent.streams, sinks=[])

    def advance(audio: bool) -> None:
        if audio:
            s.source.ring.write(np.zeros((16000, 1), np.float32))
            s.windows_processed += 1
        clock.advance(2.1)
        health.tick(view)

    health.ready(view)
    assert notify.sent[0].startswith("READY=1")
    advance(audio=True)
    assert notify.sent.count("WATCHDOG=1") == 1 and health.stalled_reason is None
    advance(audio=False)  # a stalled input: no ping, and the reason
    advance(audio=False)
    assert notify.sent.count("WATCHDOG=1") == 1
    assert health.stalled_reason == "fan01: no audio frames"
    advance(audio=True)
    assert notify.sent.count("WATCHDOG=1") == 2 and health.stalled_reason is None
    agent.faults.mark_dead("capture-x", "RuntimeError: boom")  # a dead thread stops the pings too
    advance(audio=True)
    assert notify.sent.count("WATCHDOG=1") == 2 and "capture-x" in health.stalled_reason
