"""MQTT against a real Mosquitto: payload shapes as documented, alarms from real clips, a broker
that goes away during a burst, an agent killed with events in its outbox, the last will, wrong
credentials, TLS with auth, and Home Assistant discovery."""

from __future__ import annotations

import json
import re
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

from edge_agent.alarms.lifecycle import Lifecycle
from edge_agent.config import parse_config
from edge_agent.publish import events
from edge_agent.publish.discovery import Topics, discovery_payloads
from edge_agent.publish.mqtt import MQTTPublisher
from edge_agent.publish.outbox import Outbox
from edge_agent.scoring.detector import Decision
from tests.brokers import Subscriber, broker, secure_broker  # noqa: F401 - fixtures
from tests.conftest import DEMO, ROOT
from tests.test_run_replay import cli, spawn

MODEL = {"name": "default", "version": "1", "sha256": "ab" * 32}


def documented_examples() -> dict[str, list[dict]]:
    text = (ROOT / "docs" / "mqtt.md").read_text()
    out: dict[str, list[dict]] = {}
    for kind, block in re.findall(
        r"Topic `[^`]*/(alarm|state|score|command/result|feedback)`:\n\n```json\n(.*?)\n```", text, re.S
    ):
        out.setdefault(kind, []).append(json.loads(block))
    return out


def shape(x):
    if isinstance(x, dict):
        return {k: shape(v) for k, v in x.items()}
    return "number" if isinstance(x, (int, float)) and not isinstance(x, bool) else type(x).__name__


def test_payloads_have_exactly_the_documented_shape():
    docs = documented_examples()
    assert len(docs["alarm"]) == 3 and len(docs["state"]) == 2 and len(docs["score"]) == 1
    d = Decision("start", "a" * 32, 1.0e9, 0.3, 0.3, 1.0e9, 3)
    ev = {"wav": "/x/a.wav", "png": "/x/a.png"}
    why = {"bands": [{"centre_hz": 2000.0, "change_db": 14.2, "spreads": 9.6}], "level_change_db": 3.0}
    start = events.alarm_payload("fan01", d, 0.1, MODEL, 3, ev, why)
    update = events.alarm_payload(
        "fan01", Decision("update", "a" * 32, 1.0e9 + 30, 0.2, 0.4, 1.0e9, 20), 0.1, MODEL, 3, ev
    )
    end = events.alarm_payload(
        "fan01", Decision("end", "a" * 32, 1.0e9 + 60, 0.05, 0.4, 1.0e9, 40, "sound back to normal"), 0.1, MODEL, 3, ev
    )
    assert [shape(p) for p in (start, update, end)] == [shape(p) for p in docs["alarm"]]
    active = Lifecycle()
    active.alarm_started("a" * 32)
    online = {"online": True, "address": "rtsp://cam1/stream1", "error": None}
    st = events.state_payload("fan01", "anomaly", 1.0e9, 0.1, 0.2, MODEL, 1, "", active, online, ("normal", ""))
    assert shape(st) == shape(docs["state"][0])
    offline = {"online": False, "address": "rtsp://cam1/stream1", "error": "connection refused"}
    quiet = events.state_payload(
        "fan01", "no_audio", 1.0e9, 0.1, 0.2, MODEL, 1, "why", Lifecycle(), offline, ("normal", "")
    )
    assert shape(quiet) == shape(docs["state"][1])
    acked = Lifecycle()
    acked.alarm_started("a" * 32)
    acked.acknowledge(1.0e9, "mqtt")
    after = events.state_payload("fan01", "anomaly", 1.0e9, 0.1, 0.2, MODEL, 1, "", acked)
    ok = events.command_result_payload("fan01", 1.0e9, "acknowledge", "r1", True, "done", after)
    refused = events.command_result_payload("fan01", 1.0e9, "shelve", None, False, "minutes: ...", after)
    assert [shape(ok), shape(refused)] == [shape(p) for p in docs["command/result"]]
    assert shape(events.score_payload("fan01", 1.0e9, 0.1, 0.2, MODEL, 1, -30.0)) == shape(docs["score"][0])
    info = {"action": "normal", "feedback_id": "f" * 12, "by": "mqtt", "at": 1.0e9, "threshold_before": 0.1}
    info |= {
        "threshold_after": 0.12,
        "bank_version": 2,
        "alarm_id": "a" * 32,
        "note": "",
        "windows": 12,
        "message": "m",
    }
    assert shape(events.feedback_payload("fan01", 1.0e9, info)) == shape(docs["feedback"][0])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", start["ts"])


def agent_config(
    path: Path,
    state: Path,
    port: int,
    replay,
    extra: str = "",
    loop: bool = False,
    keepalive: int = 30,
    continuous: bool = False,
) -> Path:
    """``continuous``: the replayed files (and loop passes) are one recording, so an alarm lasts
    across them as it would on a live machine."""
    path.write_text(f"""node_id: testnode
state_dir: {state}
engine: cpu
machines:
  fan01:
    input: {{file: {replay}, realtime: false, loop: {str(loop).lower()}, continuous: {str(continuous).lower()}}}
mqtt:
  host: 127.0.0.1
  port: {port}
  keepalive: {keepalive}
  score_interval_seconds: 0
{extra}""")
    return path


def test_real_anomalous_clips_reach_mosquitto_sub(broker, calibrated, tmp_path):  # noqa: F811
    sub = subprocess.Popen(
        ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(broker.port), "-t", "edge-agent/#", "-v", "-q", "1"],
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(0.5)
    cfg = agent_config(tmp_path / "c.yaml", calibrated, broker.port, DEMO / "replay")
    r = cli("run", "--config", cfg, timeout=300)
    assert r.returncode == 0, r.stderr
    time.sleep(1.0)
    sub.terminate()
    out, _ = sub.communicate(timeout=10)
    lines = [ln.split(" ", 1) for ln in out.splitlines() if " " in ln]
    alarms = [json.loads(p) for t, p in lines if t == "edge-agent/testnode/fan01/alarm"]
    kinds = [a["event"] for a in alarms]
    assert "start" in kinds and "end" in kinds and kinds.index("start") < kinds.index("end")
    # every event names the alarm's evidence, and the files are there (and are what they say)
    for a in alarms:
        assert a["evidence"]["wav"] == str(calibrated / "evidence" / "fan01" / f"{a['alarm_id']}.wav")
        wav, png = Path(a["evidence"]["wav"]), Path(a["evidence"]["png"])
        assert wav.stat().st_size > 44 and png.read_bytes()[:4] == b"\x89PNG"
    docs = documented_examples()
    assert shape(next(a for a in alarms if a["event"] == "start")) == shape(docs["alarm"][0])
    status = [p for t, p in lines if t == "edge-agent/testnode/status"]
    assert status[0] == "online" and status[-1] == "offline"
    states = [json.loads(p)["state"] for t, p in lines if t == "edge-agent/testnode/fan01/state"]
    assert "anomaly" in states and states[-1] == "normal"
    assert Outbox(calibrated / "outbox.sqlite").depth() == 0


def _state_with_banks_of(calibrated: Path, tmp_path: Path) -> Path:
    """A fresh state directory (own outbox) that shares the calibrated machines' banks."""
    state = tmp_path / "st"
    state.mkdir()
    (state / "machines").symlink_to(calibrated / "machines")
    return state


def _publisher(port, state: Path, states=None, **mqtt):
    cfg = parse_config(
        {
            "node_id": "n1",
            "state_dir": str(state),
            "machines": {"m1": {}, "m2": {}},
            "mqtt": {"host": "127.0.0.1", "port": port, "keepalive": 5, **mqtt},
        }
    )
    return MQTTPublisher(
        cfg, Outbox(state / "outbox.sqlite"), ["m1", "m2"], {"name": "default", "version": "t"}, states=states
    )


def _alarm(machine: str, i: int) -> dict:
    p = events.alarm_payload(
        machine, Decision("start", f"{i:032x}", time.time(), 0.5, 0.5, time.time(), 3), 0.1, MODEL, 1
    )
    p["seq"] = i
    return p


def test_broker_restart_during_a_burst_loses_nothing_and_keeps_order(broker, tmp_path):  # noqa: F811
    sub = Subscriber(broker.port, "edge-agent/n1/+/alarm", client_id="durable-sub", persistent=True)
    pub = _publisher(broker.port, tmp_path / "st")
    pub.start()
    assert pub.connected.wait(10)
    sent = []
    for i in range(40):
        p = _alarm("m1" if i % 2 else "m2", i)
        sent.append(p)
        pub.handle("alarm", p["machine"], p)
        if i == 15:
            broker.stop()  # mid-burst
    assert sub.wait_for(lambda: not pub.connected.is_set(), 10)
    time.sleep(2.0)  # down for a while, events keep coming
    for i in range(40, 60):
        p = _alarm("m1", i)
        sent.append(p)
        pub.handle("alarm", "m1", p)
    broker.start()
    assert sub.wait_for(lambda: pub.outbox.depth() == 0, 60), f"{pub.outbox.depth()} rows left"
    ids = {p["event_id"] for p in sent}
    assert sub.wait_for(lambda: {json.loads(m)["event_id"] for _, m, _ in sub.messages} >= ids, 30)
    got = [json.loads(m) for _, m, _ in sub.messages]
    for machine in ("m1", "m2"):
        seqs, seen = [], set()
        for g in got:
            if g["machine"] == machine and g["event_id"] not in seen:
                seen.add(g["event_id"])
                seqs.append(g["seq"])
        assert seqs == sorted(seqs), f"{machine} out of order: {seqs}"
    pub.close()
    sub.close()


def test_outbox_survives_sigkill_and_is_delivered_after_restart(broker, calibrated, tmp_path):  # noqa: F811
    state = _state_with_banks_of(calibrated, tmp_path)
    broker.stop()  # the agent starts while the broker is down
    cfg = agent_config(tmp_path / "c.yaml", state, broker.port, DEMO / "replay", loop=True)
    agent = spawn("run", "--config", cfg, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    db = state / "outbox.sqlite"

    def alarm_rows():
        if not db.exists():
            return []
        try:  # the file appears before the agent has created the table in it
            with sqlite3.connect(db) as c:
                return [
                    json.loads(r[0])["event_id"]
                    for r in c.execute("SELECT payload FROM outbox WHERE kind = 'alarm' ORDER BY id")
                ]
        except sqlite3.OperationalError:
            return []

    t_end = time.monotonic() + 120
    while time.monotonic() < t_end and len(alarm_rows()) < 2:
        time.sleep(0.2)
    pending = alarm_rows()
    assert len(pending) >= 2, agent.stderr.read1().decode() if agent.poll() is not None else "no alarms yet"
    agent.send_signal(signal.SIGKILL)
    agent.wait(10)
    pending = alarm_rows()
    broker.start()
    sub = Subscriber(broker.port, "edge-agent/testnode/fan01/alarm")
    cfg2 = agent_config(tmp_path / "c2.yaml", state, broker.port, DEMO / "replay" / "01_normal_id_00_00000018.wav")
    r = cli("run", "--config", cfg2, timeout=120)
    assert r.returncode == 0, r.stderr
    assert sub.wait_for(lambda: {json.loads(m)["event_id"] for _, m, _ in sub.messages} >= set(pending), 20)
    sub.close()


def test_last_will_says_offline_when_the_agent_dies(broker, calibrated, tmp_path):  # noqa: F811
    sub = Subscriber(broker.port, "edge-agent/testnode/status")
    cfg = agent_config(tmp_path / "c.yaml", calibrated, broker.port, DEMO / "replay", loop=True, keepalive=5)
    agent = spawn("run", "--config", cfg, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert sub.wait_for(lambda: b"online" in sub.on("status"), 60)
        agent.send_signal(signal.SIGKILL)
        assert sub.wait_for(lambda: sub.on("status")[-1] == b"offline", 20), sub.on("status")
    finally:
        agent.kill()
        sub.close()


def test_wrong_password_is_reported_and_retried(secure_broker, tmp_path):  # noqa: F811
    pw = tmp_path / "pass"
    pw.write_text("wrong-password\n")
    pub = _publisher(secure_broker.port, tmp_path / "st", username="edge", password_file=str(pw))
    logs = []

    import logging

    class H(logging.Handler):
        def emit(self, rec):
            logs.append(rec.getMessage())

    h = H()
    logging.getLogger("edge_agent.mqtt").addHandler(h)
    try:
        pub.handle("alarm", "m1", _alarm("m1", 1))  # waiting before the first attempt
        pub.start()
        t_end = time.monotonic() + 15
        while time.monotonic() < t_end and pub.connect_failures < 2:
            time.sleep(0.1)
        assert pub.connect_failures >= 2  # retried, not crashed
        refused = [m for m in logs if "refused the connection" in m]
        assert len(refused) == 1, logs  # said once, not at every attempt (rate-limited)
        assert (
            "check mqtt.username and the password file" in refused[0]
            and "1 event(s) waiting in the outbox" in refused[0]
        )
        assert "NOT CONNECTED" in pub.status_line() and "Not authorized" in pub.status_line()
        assert "wrong-password" not in " ".join(logs)
        assert pub.outbox.depth() == 1 and not pub.connected.is_set()
    finally:
        logging.getLogger("edge_agent.mqtt").removeHandler(h)
        pub.close(deadline=0.5)


def test_tls_with_password_from_systemd_credentials(secure_broker, tmp_path, monkeypatch):  # noqa: F811
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "mqtt_password").write_text("s3cret-pass")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    cfg = parse_config(
        {
            "node_id": "n1",
            "state_dir": str(tmp_path / "st"),
            "machines": {"m1": {}},
            "mqtt": {
                "host": "localhost",
                "port": secure_broker.tls_port,
                "username": "edge",
                "tls": {"ca_file": str(secure_broker.certs["ca"])},
            },
        }
    )
    pub = MQTTPublisher(cfg, Outbox(tmp_path / "st" / "outbox.sqlite"), ["m1"], {"name": "default", "version": "t"})
    pub.start()
    try:
        assert pub.connected.wait(15), pub.last_error
        pub.handle("alarm", "m1", _alarm("m1", 7))
        t_end = time.monotonic() + 10
        while time.monotonic() < t_end and pub.outbox.depth():
            time.sleep(0.05)
        assert pub.outbox.depth() == 0
    finally:
        pub.close()


def test_home_assistant_discovery_and_rebirth(broker, tmp_path):  # noqa: F811
    sub = Subscriber(broker.port, "homeassistant/#")
    pub = _publisher(broker.port, tmp_path / "st")
    pub.start()
    try:
        assert sub.wait_for(lambda: len(sub.messages) >= 12, 10)
        configs = {t: json.loads(p) for t, p, _ in sub.messages if t.endswith("/config") and p}
        # commands are off: the controls are removed (an empty retained config), never offered
        removed = {t for t, p, _ in sub.messages if not p}
        assert removed == {
            f"homeassistant/{c}/n1/{m}_{e}/config"
            for m in ("m1", "m2")
            for c, e in (("button", "acknowledge"), ("button", "normal"), ("switch", "shelve"))
        }
        alarm_state = configs["homeassistant/sensor/n1/m1_alarm/config"]
        assert alarm_state["options"] == ["normal", "unacknowledged", "acknowledged", "returned_unacknowledged"]
        bs = configs["homeassistant/binary_sensor/n1/m1/config"]
        assert bs["device_class"] == "problem" and bs["state_topic"] == "edge-agent/n1/m1/state"
        assert bs["availability_topic"] == "edge-agent/n1/status" and bs["payload_available"] == "online"
        assert bs["device"]["identifiers"] == ["edge_agent_n1"] and bs["unique_id"] == "edge_agent_n1_m1_problem"
        assert "value_json.state == 'anomaly'" in bs["value_template"]
        sensor = configs["homeassistant/sensor/n1/m2/config"]
        assert sensor["state_topic"] == "edge-agent/n1/m2/score" and sensor["state_class"] == "measurement"
        level = configs["homeassistant/sensor/n1/m2_level/config"]
        assert level["value_template"] == "{{ value_json.level_dbfs }}" and level["unit_of_measurement"] == "dBFS"
        assert level["unique_id"] == "edge_agent_n1_m2_level" and level["state_topic"] == sensor["state_topic"]
        allowed = {
            "name",
            "unique_id",
            "device_class",
            "state_topic",
            "value_template",
            "payload_on",
            "payload_off",
            "json_attributes_topic",
            "qos",
            "device",
            "availability_topic",
            "payload_available",
            "payload_not_available",
            "state_class",
            "unit_of_measurement",
            "options",
        }
        for c in configs.values():
            assert set(c) <= allowed and {"identifiers", "name"} <= set(c["device"])
        n = len(sub.messages)
        sub.c.publish("homeassistant/status", "online")  # Home Assistant restarted
        assert sub.wait_for(lambda: len([1 for t, _, _ in sub.messages[n:] if t.endswith("/config")]) >= 12, 10)
        assert {t: c for t, c in discovery_payloads(Topics("edge-agent", "n1"), "m1", "default").items() if c} == {
            t: c for t, c in configs.items() if "/m1/" in t or "/m1_" in t
        }
    finally:
        pub.close()
        sub.close()


def test_home_assistant_gets_acknowledge_and_shelve_controls_with_commands_on(broker, tmp_path):  # noqa: F811
    sub = Subscriber(broker.port, "homeassistant/#")
    pub = _publisher(broker.port, tmp_path / "st", commands=True, homeassistant={"shelve_minutes": 120})
    pub.start()
    try:
        assert sub.wait_for(lambda: len([1 for _, p, _ in sub.messages if p]) >= 12, 10)
        configs = {t: json.loads(p) for t, p, _ in sub.messages if t.endswith("/config") and p}
        button = configs["homeassistant/button/n1/m1_acknowledge/config"]
        assert button["command_topic"] == "edge-agent/n1/m1/command"
        assert json.loads(button["payload_press"]) == {"command": "acknowledge"}
        normal = configs["homeassistant/button/n1/m1_normal/config"]  # "the last alarm was normal"
        assert json.loads(normal["payload_press"]) == {"command": "normal"}
        switch = configs["homeassistant/switch/n1/m2_shelve/config"]
        assert (
            switch["command_topic"] == "edge-agent/n1/m2/command" and switch["state_topic"] == "edge-agent/n1/m2/state"
        )
        assert json.loads(switch["payload_on"]) == {"command": "shelve", "minutes": 120}
        assert json.loads(switch["payload_off"]) == {"command": "unshelve"}
        assert "value_json.state == 'shelved'" in switch["value_template"]
    finally:
        pub.close()
        sub.close()


def test_without_a_broker_alarms_wait_in_the_outbox_until_one_is_configured(broker, calibrated, tmp_path):  # noqa: F811
    state = _state_with_banks_of(calibrated, tmp_path)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"node_id: testnode\nstate_dir: {state}\nengine: cpu\nmachines:\n  fan01:\n"
        f"    input: {{file: {DEMO / 'replay'}, realtime: false}}\n"
    )
    r = cli("run", "--config", cfg)
    assert r.returncode == 0 and "ALARM START" in r.stdout
    waiting = Outbox(state / "outbox.sqlite").depth("alarm")
    assert waiting >= 2
    sub = Subscriber(broker.port, "edge-agent/testnode/fan01/alarm")
    cfg2 = agent_config(tmp_path / "c2.yaml", state, broker.port, DEMO / "replay" / "01_normal_id_00_00000018.wav")
    r = cli("run", "--config", cfg2)
    assert r.returncode == 0, r.stderr
    assert sub.wait_for(lambda: len(sub.on("alarm")) >= waiting, 20)
    sub.close()


def test_alarms_reach_the_broker_when_the_disk_is_full(broker, tmp_path, caplog):  # noqa: F811
    """The outbox cannot write (SQLITE_FULL, as on a full disk): alarms still go out, in order, and
    the one sending thread survives a publish that fails."""
    import logging

    import paho.mqtt.client as mqtt

    failures = []

    class FlakyClient(mqtt.Client):  # the real client, whose first alarm publish fails
        def publish(self, topic, payload=None, *a, **kw):
            if topic.endswith("/alarm") and not failures:
                failures.append(topic)
                raise OSError("simulated socket failure")
            return super().publish(topic, payload, *a, **kw)

    sub = Subscriber(broker.port, "edge-agent/n1/+/alarm")
    assert sub.connected.wait(10)
    state = tmp_path / "st"
    cfg = parse_config(
        {
            "node_id": "n1",
            "state_dir": str(state),
            "machines": {"m1": {}},
            "mqtt": {"host": "127.0.0.1", "port": broker.port, "keepalive": 5},
        }
    )
    outbox = Outbox(state / "outbox.sqlite")
    outbox._db.execute("CREATE TABLE filler (x BLOB)")
    outbox._db.execute(f"PRAGMA max_page_count = {outbox._db.execute('PRAGMA page_count').fetchone()[0] + 2}")
    with caplog.at_level(logging.WARNING):
        try:
            while True:
                outbox._db.execute("INSERT INTO filler VALUES (zeroblob(3000))")
        except sqlite3.OperationalError as e:
            assert "full" in str(e)
        pub = MQTTPublisher(cfg, outbox, ["m1"], {"name": "default", "version": "t"}, client_factory=FlakyClient)
        pub.start()
        assert pub.connected.wait(10)
        sent = [_alarm("m1", i) for i in range(30)]
        for p in sent:
            pub.handle("alarm", "m1", p)
        assert outbox.in_memory > 0
        assert sub.wait_for(lambda: outbox.depth() == 0, 30), f"{outbox.depth()} rows left"
        assert sub.wait_for(lambda: len({json.loads(m)["event_id"] for _, m, _ in sub.messages}) == 30, 30)
        pub.close()
    seqs = []
    for _, m, _ in sub.messages:
        if json.loads(m)["seq"] not in seqs:
            seqs.append(json.loads(m)["seq"])
    assert seqs == list(range(30)) and failures
    assert "cannot write to" in caplog.text and "MQTT sender failed; retrying" in caplog.text
    assert "lost with this stop" not in caplog.text  # everything was delivered
    sub.close()
