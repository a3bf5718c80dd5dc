"""Fault injection: a real broker stopped and restarted, and the agent SIGKILLed and restarted, at
random points during alarm bursts from two machines; then every alarm event the agent printed must
have reached a real subscriber (at least once, in order per machine), and every alarm that
started must have ended.

The broker is stopped with SIGTERM, so that it saves its persistent sessions: a broker that is
SIGKILLed loses what it had acknowledged but not yet delivered, which no publisher can recover."""

from __future__ import annotations

import json
import random
import signal
import time
from pathlib import Path

from tests.agentproc import AgentProcess
from tests.brokers import Subscriber, broker  # noqa: F401 - fixture
from tests.conftest import DEMO
from tests.test_run_replay import cli

ROUNDS = 3
SEED = 20261122


def _config(path: Path, state: Path, port: int, replay: Path, loop: bool) -> Path:
    inp = f"{{file: {replay}, realtime: false, loop: {str(loop).lower()}}}"
    path.write_text(
        f"node_id: n1\nstate_dir: {state}\nengine: cpu\nstatus_interval_seconds: 1000\nmachines:\n"
        f"  fan01:\n    input: {inp}\n  fan02:\n    input: {inp}\n"
        f"mqtt: {{host: 127.0.0.1, port: {port}, keepalive: 5}}\n"
    )
    return path


def _logged(lines: list[str]) -> list[tuple[str, str, str, str]]:
    """(machine, alarm id prefix, event, ts) of every alarm line an agent printed."""
    out = []
    for ln in lines:
        if ": ALARM " in ln:
            ts, machine, _, event, aid = ln.split()[:5]
            out.append((machine.rstrip(":"), aid, event.lower(), ts))
    return out


def test_alarms_survive_broker_restarts_and_agent_kills(broker, tmp_path):  # noqa: F811
    rng = random.Random(SEED)
    state = tmp_path / "st"
    for m in ("fan01", "fan02"):
        r = cli("calibrate", "--machine", m, "--from", DEMO / "enrol", "--state-dir", state, "--no-plot")
        assert r.returncode == 0, r.stderr
    sub = Subscriber(broker.port, "edge-agent/n1/+/alarm", client_id="fault-sub", persistent=True)
    cfg = _config(tmp_path / "c.yaml", state, broker.port, DEMO / "replay", loop=True)
    logged, kills, broker_stops = [], 0, 0
    for _ in range(ROUNDS):
        agent = AgentProcess("run", "--config", cfg)
        try:
            assert agent.wait_for("ALARM START", 90), agent.err[-20:]
            time.sleep(rng.uniform(0.0, 1.5))
            broker.stop()  # mid-burst
            broker_stops += 1
            time.sleep(rng.uniform(0.5, 2.5))
            broker.start()
            time.sleep(rng.uniform(0.0, 2.0))
            agent.p.send_signal(signal.SIGKILL)  # at a random point, alarms open or not
            kills += 1
            agent.finish()
        finally:
            agent.kill()
        logged += _logged(agent.out)
    # A last run that is stopped cleanly: it closes the alarm the last kill left open, then its own.
    agent = AgentProcess("run", "--config", cfg)
    try:
        assert agent.wait_for("ALARM START", 90, count=2), agent.err[-20:]
        agent.p.send_signal(signal.SIGTERM)
        assert agent.finish() == 0, agent.err[-20:]
    finally:
        agent.kill()
    logged += _logged(agent.out)

    def received():
        got = []
        for _, payload, _ in list(sub.messages):
            p = json.loads(payload)
            got.append((p["machine"], p["alarm_id"][:8], p["event"], p["ts"]))
        return got

    want = set(logged)
    assert sub.wait_for(lambda: want <= set(received()), 30), f"never delivered: {sorted(want - set(received()))[:5]}"
    got = received()
    for machine in ("fan01", "fan02"):
        first, seen = [], set()
        for key in got:
            if key[0] == machine and key in want and key not in seen:
                seen.add(key)
                first.append(key)
        assert first == [k for k in logged if k[0] == machine], f"{machine}: delivered out of order"
    started = {(m, a) for m, a, e, _ in got if e == "start"}
    ended = {(m, a) for m, a, e, _ in got if e == "end"}
    assert started and started <= ended, f"alarms that never ended: {sorted(started - ended)}"
    print(
        f"fault injection: {ROUNDS} rounds, {broker_stops} broker restarts, {kills} agent kills; "
        f"{len(logged)} alarm events printed, {len(got)} received ({len(got) - len(set(got))} duplicates), "
        f"{len(started)} alarms started, all ended"
    )
    sub.close()
