"""Operator commands and the ISA-18.2 alarm states: parsing and transitions in-process, then the
whole loop on a real Mosquitto against an agent replaying real anomalous clips."""

from __future__ import annotations

import json
import threading
import time

import pytest

from edge_agent.alarms.lifecycle import Lifecycle, LifecycleError, LifecycleStore
from edge_agent.config import load_config
from edge_agent.runtime.commands import CommandError, parse_command
from edge_agent.runtime.daemon import build_daemon
from tests.brokers import Broker, Subscriber, broker, wait_for  # noqa: F401 - fixture
from tests.conftest import DEMO, ROOT
from tests.test_mqtt import _state_with_banks_of, agent_config


@pytest.mark.parametrize(
    "raw, words",
    [
        (b"acknowledge", "not valid JSON"),
        (b"\xff\xfe", "not UTF-8"),
        (b"[1, 2]", "JSON object"),
        (b"{}", "no 'command' key"),
        (b'{"command": "reboot"}', "unknown command 'reboot': use one of acknowledge, shelve"),
        (b'{"command": "shelve"}', "shelve: minutes: Field required"),
        (b'{"command": "shelve", "minutes": -5}', "minutes: Input should be greater than 0"),
        (b'{"command": "shelve", "minutes": 1e6}', "minutes: Input should be less than or equal to 10080"),
        (b'{"command": "threshold", "scale": 9}', "scale: Input should be less than or equal to 4"),
        (b'{"command": "learn", "hours": "soon"}', "hours: Input should be a valid number"),
        (b'{"command": "acknowledge", "please": true}', "please: unknown key"),
        (b"x" * 5000, "at most 4096"),
    ],
)
def test_bad_commands_are_named(raw, words):
    with pytest.raises(CommandError) as e:
        parse_command(raw)
    assert words in str(e.value)


def test_good_commands_parse():
    assert parse_command('{"command": "shelve", "minutes": 30, "note": "bearing swap"}').minutes == 30
    assert parse_command(b'{"command": "threshold", "scale": 1.2, "id": "r1"}').id == "r1"
    assert parse_command('{"command": "acknowledge", "alarm_id": "ab12"}').alarm_id == "ab12"


def test_isa_18_2_transitions_and_persistence(tmp_path):
    lc = Lifecycle()
    with pytest.raises(LifecycleError, match="no alarm to acknowledge"):
        lc.acknowledge(1.0, "mqtt")
    lc.alarm_started("a1")
    assert lc.state == "unacknowledged"
    with pytest.raises(LifecycleError, match="not the machine's current alarm"):
        lc.acknowledge(2.0, "mqtt", alarm_id="zz")
    assert lc.state == "unacknowledged"  # a refused command changes nothing
    lc.acknowledge(2.0, "web")
    assert (lc.state, lc.acknowledged_by) == ("acknowledged", "web")
    with pytest.raises(LifecycleError, match="already acknowledged"):
        lc.acknowledge(3.0, "mqtt")
    lc.alarm_ended("a1")
    assert lc.state == "normal" and lc.alarm_id is None  # acknowledged and over
    lc.alarm_started("a2")
    lc.alarm_ended("a2")
    assert lc.state == "returned_unacknowledged"  # over before anyone saw it
    lc.alarm_ended("old")  # an older alarm closed late changes nothing
    assert lc.state == "returned_unacknowledged"
    assert "returned to normal" in lc.acknowledge(4.0, "mqtt") and lc.state == "normal"
    lc.shelve(100.0, "mqtt", "maintenance")
    assert lc.shelved(99.0) and lc.shelf_expired(100.0)
    store = LifecycleStore(tmp_path)
    lc.alarm_started("a3")
    store.save("fan01", lc)
    back = store.load("fan01")
    assert back == lc and back.state == "unacknowledged" and back.shelve_note == "maintenance"
    (tmp_path / "operator" / "fan01.json").write_text("{broken")
    assert store.load("fan01") == Lifecycle()  # unreadable: logged, starts from normal
    lc.unshelve()
    with pytest.raises(LifecycleError, match="not shelved"):
        lc.unshelve()


class Running:
    """The production wiring (build_daemon: MQTT, commands, learning) with the agent on a thread."""

    def __init__(self, cfg_path, learning: bool = True):
        from calibration.feedback import feedback_factory
        from calibration.learning import learner_factory

        self.cfg = load_config(cfg_path)
        self.daemon = build_daemon(
            self.cfg,
            config_path=cfg_path,
            console=False,
            health=False,
            learner_factory=learner_factory if learning else None,
            feedback_factory=feedback_factory,
        )
        self.agent = self.daemon.agent
        self.thread = threading.Thread(target=self.agent.run, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.agent.stop()
        self.thread.join(60)
        assert not self.thread.is_alive()


class Operator:
    """A dashboard on the broker: sends commands to fan01 and reads its results, states and alarms."""

    def __init__(self, port: int, node: str = "testnode", **login):
        self.node = node
        self.sub = Subscriber(port, f"edge-agent/{node}/#", **login)
        self.sent = 0

    def payloads(self, suffix: str) -> list[dict]:
        return [json.loads(p) for p in self.sub.on(suffix) if p]

    def send(self, command, machine: str = "fan01") -> dict:
        rid = f"r{self.sent}"
        self.sent += 1
        body = command if isinstance(command, (bytes, str)) else json.dumps({**command, "id": rid})
        self.sub.c.publish(f"edge-agent/{self.node}/{machine}/command", body, qos=1)
        got = []

        def answered():
            got[:] = [
                r for r in self.payloads(f"{machine}/command/result") if r["id"] == rid or not isinstance(command, dict)
            ]
            return len(got) > 0

        assert wait_for(answered, 20), f"no result for {body!r}"
        return got[-1]

    def state(self) -> dict:
        return self.payloads("fan01/state")[-1]


def test_commands_over_mqtt_acknowledge_shelve_and_survive_a_restart(broker, calibrated, tmp_path):  # noqa: F811
    state_dir = _state_with_banks_of(calibrated, tmp_path)
    anomalous = tmp_path / "anomalous"
    anomalous.mkdir()
    for f in sorted((DEMO / "replay").glob("0[23]_anomaly_*.wav")):
        (anomalous / f.name).symlink_to(f)
    extra = "  commands: true\nevidence: {enabled: false}\n"
    cfg = agent_config(tmp_path / "c.yaml", state_dir, broker.port, anomalous, extra, loop=True, continuous=True)
    op = Operator(broker.port)
    run = Running(cfg)
    try:
        assert wait_for(lambda: any(a["event"] == "start" for a in op.payloads("fan01/alarm")), 120)
        first = next(a for a in op.payloads("fan01/alarm") if a["event"] == "start")
        assert wait_for(lambda: op.state().get("alarm", {}).get("state") == "unacknowledged", 10)

        # bad commands: each answered with an error, nothing changed
        for bad, words in [
            ("not json", "not valid JSON"),
            ({"command": "reboot"}, "unknown command"),
            ({"command": "shelve", "minutes": 0}, "greater than 0"),
            ({"command": "acknowledge", "alarm_id": "0" * 32}, "not the machine's current alarm"),
        ]:
            r = op.send(bad)
            assert r["ok"] is False and words in r["error"] and r["alarm"]["state"] == "unacknowledged", r
        r = op.send({"command": "acknowledge"}, machine="pump99")
        assert r["ok"] is False and "unknown machine 'pump99'" in r["error"]

        r = op.send({"command": "acknowledge", "alarm_id": first["alarm_id"]})
        assert r["ok"] is True and r["alarm"]["state"] == "acknowledged" and r["state"] == "anomaly", r
        assert wait_for(lambda: op.state()["alarm"]["acknowledged_by"] == "mqtt", 10)

        r = op.send({"command": "shelve", "minutes": 600, "note": "bearing swap"})
        assert r["ok"] is True and r["state"] == "shelved" and r["shelved_until"], r
        # the alarm's end travels on its own topic, after or before the answer: wait for it
        assert wait_for(lambda: any(a["event"] == "end" for a in op.payloads("fan01/alarm")), 10)
        end = [a for a in op.payloads("fan01/alarm") if a["event"] == "end"]
        assert end[-1]["alarm_id"] == first["alarm_id"] and end[-1]["reason"] == "shelved by mqtt"
        assert r["alarm"]["state"] == "normal"  # acknowledged, then over
        n_alarms, n_scores = len(op.payloads("fan01/alarm")), len(op.payloads("fan01/score"))
        assert wait_for(lambda: len(op.payloads("fan01/score")) > n_scores + 20, 60)  # still scored...
        assert len(op.payloads("fan01/alarm")) == n_alarms  # ...but no alarm while shelved
        run.stop()
    finally:
        if run.thread.is_alive():
            run.stop()

    # the shelf is in the state directory: a restarted agent is still shelved
    saved = json.loads((state_dir / "operator" / "fan01.json").read_text())
    assert saved["shelved_until"] and saved["shelve_note"] == "bearing swap"
    n_alarms = len(op.payloads("fan01/alarm"))
    # a retained command would run again at every start: the agent refuses it when it subscribes
    retained = json.dumps({"command": "unshelve", "id": "retained"})
    op.sub.c.publish("edge-agent/testnode/fan01/command", retained, qos=1, retain=True).wait_for_publish(10)
    run = Running(cfg)
    try:
        assert wait_for(lambda: any(r["id"] == "retained" for r in op.payloads("fan01/command/result")), 30)
        r = next(r for r in op.payloads("fan01/command/result") if r["id"] == "retained")
        assert r["ok"] is False and "retained commands are ignored" in r["error"], r
        op.sub.c.publish("edge-agent/testnode/fan01/command", b"", qos=1, retain=True)  # cleared as the error says
        assert wait_for(lambda: op.state()["state"] == "shelved" and "bearing swap" in op.state()["reason"], 30)
        r = op.send({"command": "unshelve"})
        assert r["ok"] is True and r["state"] != "shelved"
        assert wait_for(lambda: len(op.payloads("fan01/alarm")) > n_alarms, 120)  # the anomaly alarms again
        assert wait_for(lambda: op.state()["alarm"]["state"] == "unacknowledged", 10)
        r = op.send({"command": "threshold", "scale": 1.5})
        assert r["ok"] is True and r["threshold_scale"] == 1.5
        thr = run.agent.streams["fan01"].bank.threshold
        # the state message follows the command's answer on another topic: wait for it, not race it
        assert r["alarm"] and wait_for(lambda: abs(op.state()["threshold"] - round(1.5 * thr, 6)) < 1e-6, 10)
        r = op.send({"command": "learn", "hours": 1})
        assert r["ok"] is True and r["state"] == "learning", r
    finally:
        run.stop()
        op.sub.close()


def test_learn_over_mqtt_keeps_the_machines_score_head(broker, tmp_path):  # noqa: F811
    """An operator's 'learn' re-learns the machine with the head it was calibrated with, here the
    k-NN and the indicators together, not the bundle's k-NN alone."""
    from tests.test_run_replay import cli

    state_dir = tmp_path / "st"
    r = cli(
        "calibrate", "--machine", "fan01", "--from", DEMO / "enrol", "--state-dir", state_dir, "--no-plot",
        "--score", "knn+indicators",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    cfg = agent_config(tmp_path / "c.yaml", state_dir, broker.port, DEMO / "enrol", "  commands: true\n", loop=True)
    op = Operator(broker.port)
    run = Running(cfg)
    try:
        assert wait_for(lambda: len(op.payloads("fan01/state")) > 0, 60)
        r = op.send({"command": "learn", "hours": 2})
        assert r["ok"] is True and r["state"] == "learning", r
        assert run.agent.streams["fan01"].learner.score == "knn+indicators"
        request = json.loads((state_dir / "machines" / "fan01" / "learning.json").read_text())
        assert request["score"] == "knn+indicators" and request["seconds"] == 7200
    finally:
        run.stop()
        op.sub.close()


def test_commands_are_ignored_unless_enabled(broker, calibrated, tmp_path):  # noqa: F811
    state_dir = _state_with_banks_of(calibrated, tmp_path)
    cfg = agent_config(tmp_path / "c.yaml", state_dir, broker.port, DEMO / "replay", loop=True)
    op = Operator(broker.port)
    run = Running(cfg)
    try:
        assert wait_for(lambda: len(op.payloads("fan01/state")) > 0, 60)
        op.sub.c.publish("edge-agent/testnode/fan01/command", '{"command": "shelve", "minutes": 60}', qos=1)
        time.sleep(2.0)
        assert op.payloads("fan01/command/result") == []
        assert all(s["state"] != "shelved" for s in op.payloads("fan01/state"))
        assert (
            not (state_dir / "operator" / "fan01.json").exists()
            or json.loads((state_dir / "operator" / "fan01.json").read_text())["shelved_until"] is None
        )
    finally:
        run.stop()
        op.sub.close()


def test_the_documented_broker_acl_lets_operators_command_and_no_one_else(calibrated, tmp_path):
    text = (ROOT / "docs" / "mqtt.md").read_text()
    acl = text.split("```\n# the agent (mqtt.username: edge)", 1)[1].split("```", 1)[0]
    users = {"edge": "agent-pw", "operator": "op-pw", "viewer": "view-pw"}
    b = Broker(tmp_path / "acl-broker", users=users, acl="# the agent (mqtt.username: edge)" + acl).start()
    try:
        state_dir = _state_with_banks_of(calibrated, tmp_path)
        (tmp_path / "pw").write_text("agent-pw\n")
        cfg = agent_config(
            tmp_path / "c.yaml",
            state_dir,
            b.port,
            DEMO / "replay",
            f"  commands: true\n  username: edge\n  password_file: {tmp_path / 'pw'}\n",
            loop=True,
        )
        cfg.write_text(cfg.read_text().replace("node_id: testnode", "node_id: line3-jetson"))
        viewer = Operator(b.port, "line3-jetson", username="viewer", password="view-pw")
        op = Operator(b.port, "line3-jetson", username="operator", password="op-pw")
        run = Running(cfg, learning=False)
        try:
            assert wait_for(lambda: len(op.payloads("fan01/state")) > 0, 60)  # the agent may publish
            topic = "edge-agent/line3-jetson/fan01/command"
            viewer.sub.c.publish(topic, '{"command": "shelve", "minutes": 60}', qos=1).wait_for_publish(10)
            time.sleep(1.0)
            assert op.payloads("fan01/command/result") == []  # never reached the agent
            r = op.send({"command": "shelve", "minutes": 60})
            assert r["ok"] is True and r["state"] == "shelved"
            # everyone may read the answers (the viewer's copy comes on its own connection: wait for it)
            assert wait_for(lambda: len(viewer.payloads("fan01/command/result")) > 0, 10)
        finally:
            run.stop()
            viewer.sub.close()
            op.sub.close()
    finally:
        b.stop()


def test_a_shelf_expires_on_the_machines_clock_and_learn_needs_the_learning_period(calibrated, tmp_path):
    state_dir = _state_with_banks_of(calibrated, tmp_path)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"node_id: testnode\nstate_dir: {state_dir}\nengine: cpu\nevidence: {{enabled: false}}\nmachines:\n"
        f"  fan01:\n    input: {{file: {DEMO / 'replay'}, realtime: false, loop: true}}\n"
    )
    run = Running(cfg, learning=False)  # no broker: the desk is the status page's way in
    try:
        s = run.agent.streams["fan01"]
        r = run.agent.commands.call("fan01", '{"command": "shelve", "minutes": 0.25}', "test")
        assert r["ok"] is True and r["state"] == "shelved" and s.shelved
        assert wait_for(lambda: not s.shelved, 60)  # 15 s of audio: about a second of fast replay
        saved = state_dir / "operator" / "fan01.json"  # written by the agent's thread just after
        assert wait_for(lambda: json.loads(saved.read_text())["shelved_until"] is None, 10)
        r = run.agent.commands.call("fan01", '{"command": "learn", "hours": 2}', "test")
        assert r["ok"] is False and "without the learning period" in r["error"] and s.learner is None
        r = run.agent.commands.call("fan01", '{"command": "unshelve"}', "test")
        assert r["ok"] is False and r["error"] == "the machine is not shelved"
    finally:
        run.stop()
