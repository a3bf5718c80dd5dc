"""Hostile MQTT input against a running agent and a real Mosquitto broker: a nested command, the same
payload retained, tiny learning periods, empty messages, and exceptions injected into every paho
callback and into paho's own network thread. Monitoring goes on and every alarm reaches a subscriber."""

from __future__ import annotations

import json

import pytest

from edge_agent.config import parse_config
from edge_agent.faults import Faults
from edge_agent.publish.mqtt import MQTTPublisher
from edge_agent.publish.outbox import Outbox
from edge_agent.publish.sinks import open_outbox
from tests.brokers import Subscriber, broker, wait_for  # noqa: F401 - fixture
from tests.conftest import DEMO
from tests.test_commands import Operator, Running
from tests.test_mqtt import _alarm, _state_with_banks_of, agent_config

NESTED = b"[" * 1100 + b"]" * 1100  # 2,200 bytes: json.loads recurses past Python's limit


def _strict(text):
    """JSON.parse's rules: NaN and Infinity are no JSON."""
    return json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in a payload"))


def _send_raw(op: Operator, body) -> dict:
    """Publish any payload and return the next result (the Operator matches dict commands by id)."""
    before = len(op.payloads("fan01/command/result"))
    op.sub.c.publish(f"edge-agent/{op.node}/fan01/command", body, qos=1)
    assert wait_for(lambda: len(op.payloads("fan01/command/result")) > before, 20), f"no result for {body[:40]!r}"
    return op.payloads("fan01/command/result")[before]


def _starts(op: Operator) -> set[str]:
    return {a["alarm_id"] for a in op.payloads("fan01/alarm") if a["event"] == "start"}


def test_hostile_commands_leave_an_agent_that_delivers_every_alarm(broker, calibrated, tmp_path):  # noqa: F811
    state_dir = _state_with_banks_of(calibrated, tmp_path)
    cfg = agent_config(
        tmp_path / "c.yaml",
        state_dir,
        broker.port,
        DEMO / "replay",  # looped: normal, two anomalous clips, normal: an alarm every pass
        "  commands: true\nevidence: {enabled: false}\n",
        loop=True,
    )
    op = Operator(broker.port)
    topic = "edge-agent/testnode/fan01/command"
    # retained before the agent starts: the broker hands it over at every (re)connect
    op.sub.c.publish(topic, NESTED, qos=1, retain=True).wait_for_publish(10)
    bank = state_dir / "machines" / "fan01" / "bank.npz"
    bank_before = bank.read_bytes()
    run = Running(cfg)
    pub = run.daemon.durable
    try:
        # refused with an answer; paho's thread lives on
        assert wait_for(lambda: any("retained" in r["error"] for r in op.payloads("fan01/command/result")), 30)
        assert wait_for(lambda: _starts(op), 120)
        op.sub.c.publish(topic, b"", qos=1, retain=True).wait_for_publish(10)  # cleared; no answer to it

        r = _send_raw(op, NESTED)  # live: an error result, never a traceback
        assert r["ok"] is False and "nested deeper than" in r["error"], r
        for hours in (0.001, 1e-300, 0):
            r = op.send({"command": "learn", "hours": hours})
            assert r["ok"] is False and "hours: Input should be greater than or equal to 0.0166" in r["error"], r
        r = _send_raw(op, b'{"command": "shelve", "minutes": NaN}')
        assert r["ok"] is False and "NaN is not a JSON number" in r["error"], r
        r = _send_raw(op, b"\x00" * 5000)
        assert r["ok"] is False and "at most 4096" in r["error"], r
        # a retained command published while the agent listens: MQTT 3.1.1 hands it to current
        # subscribers as a live message (retain flag cleared), so it runs once (docs/mqtt.md)
        op.sub.c.publish(topic, json.dumps({"command": "unshelve", "id": "live"}), qos=1, retain=True)
        assert wait_for(lambda: any(r["id"] == "live" for r in op.payloads("fan01/command/result")), 20)
        op.sub.c.publish(topic, b"", qos=1, retain=True).wait_for_publish(10)

        assert run.thread.is_alive() and pub.network_alive() and pub.connected.is_set()
        n = len(_starts(op))
        assert wait_for(lambda: len(_starts(op)) >= n + 2, 120)  # still monitoring, still delivering
        results = op.payloads("fan01/command/result")
        assert not [r for r in results if "not valid JSON" in (r["error"] or "")]  # the empty messages
        assert not run.agent.faults.snapshot()[0]  # nothing even needed the guards
    finally:
        run.stop()
    # every alarm the agent raised reached the subscriber; the bank was never touched
    assert len(_starts(op)) == run.agent.streams["fan01"].alarms_raised
    assert open_outbox(run.cfg).depth() == 0
    assert bank.read_bytes() == bank_before
    for topic_, payload, _ in op.sub.messages:  # everything the agent published is strict JSON
        if payload and topic_.endswith(("/alarm", "/state", "/score", "/result")):
            _strict(payload)
    op.sub.close()


def _pub(port: int, tmp_path, faults: Faults, **mqtt) -> MQTTPublisher:
    cfg = parse_config(
        {
            "node_id": "n1",
            "state_dir": str(tmp_path),
            "machines": {"m1": {}},
            "mqtt": {"host": "127.0.0.1", "port": port, "keepalive": 5, **mqtt},
        }
    )
    return MQTTPublisher(
        cfg, Outbox(tmp_path / "outbox.sqlite"), ["m1"], {"name": "default", "version": "t"}, faults=faults
    )


@pytest.mark.parametrize("callback", ["_on_connect", "_on_message", "_on_publish", "_on_disconnect"])
def test_an_exception_in_any_paho_callback_is_counted_and_the_client_goes_on(
    broker,  # noqa: F811
    tmp_path,
    monkeypatch,
    callback,
):
    """Each callback raises once: logged and counted under its name; delivery goes on."""
    real = getattr(MQTTPublisher, callback)
    raised = []

    def once(self, *a, **kw):
        if not raised:
            raised.append(1)
            raise RuntimeError(f"injected into {callback}")
        return real(self, *a, **kw)

    monkeypatch.setattr(MQTTPublisher, callback, once)
    faults = Faults()
    pub = _pub(broker.port, tmp_path, faults, **({"commands": True} if callback == "_on_message" else {}))
    got = []
    pub.on_command = lambda machine, payload, source, reply, retained=False: got.append(payload)
    sub = Subscriber(broker.port, "edge-agent/n1/#")
    pub.start()
    try:
        if callback == "_on_connect":  # the first connect's callback failed: the next connect makes good
            assert wait_for(lambda: raised, 20) and not pub.connected.is_set()
            broker.stop()
            broker.start()
        assert wait_for(pub.connected.is_set, 30)
        if callback == "_on_disconnect":
            broker.stop()
            broker.start()
            assert wait_for(lambda: pub.connects >= 2, 30)
        if callback == "_on_message":
            sub.c.publish("edge-agent/n1/m1/command", b'{"command": "unshelve"}', qos=1)
            sub.c.publish("edge-agent/n1/m1/command", b'{"command": "acknowledge"}', qos=1)
            assert wait_for(lambda: got == [b'{"command": "acknowledge"}'], 20), got
        for i in range(5):
            pub.handle("alarm", "m1", _alarm("m1", i))
        assert wait_for(lambda: pub.outbox.depth() == 0, 30), pub.outbox.depth()
        assert wait_for(lambda: len({_strict(m)["seq"] for t, m, _ in sub.messages if t.endswith("/alarm")}) == 5, 20)
        counts, dead = faults.snapshot()
        assert counts == {f"MQTT {callback[1:]}": 1} and not dead and pub.network_alive()
    finally:
        pub.close()
        sub.close()


def test_paho_network_thread_that_dies_is_seen_and_restarted(broker, tmp_path, monkeypatch):  # noqa: F811
    """An exception inside paho itself ends its thread: health shows it (mqtt_connected drops, the
    thread is marked dead), and the sender starts a new connection that delivers the backlog."""
    from edge_agent.faults import install_excepthook, remove_excepthook

    faults = Faults()
    install_excepthook(faults)
    pub = _pub(broker.port, tmp_path, faults)
    pub.start()
    try:
        assert wait_for(pub.connected.is_set, 20)
        first = pub._network
        real_loop = pub.client._loop
        calls = []

        def failing(timeout=1.0):
            if not calls:
                calls.append(1)
                raise RuntimeError("injected into paho's loop")
            return real_loop(timeout)

        monkeypatch.setattr(pub.client, "_loop", failing)  # this client only (others may be running)
        assert wait_for(lambda: not first.is_alive(), 10)
        assert wait_for(lambda: pub.network_restarts == 1 and pub.network_alive(), 10)
        assert faults.counts.get(f"thread {first.name}") == 1
        for i in range(3):
            pub.handle("alarm", "m1", _alarm("m1", i))
        assert wait_for(lambda: pub.connected.is_set() and pub.outbox.depth() == 0, 30)
        assert not faults.snapshot()[1]  # restarted: no longer dead
    finally:
        pub.close()
        remove_excepthook(faults)


def test_publisher_refuses_tls_files_that_are_not_pem(tmp_path):
    from edge_agent.publish.mqtt_setup import MQTTConfigError

    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate\n")
    cfg = parse_config({"machines": {"m1": {}}, "mqtt": {"tls": {"ca_file": str(bad)}}, "state_dir": str(tmp_path)})
    with pytest.raises(MQTTConfigError, match="must be PEM files"):
        MQTTPublisher(cfg, Outbox(tmp_path / "o.sqlite"), ["m1"])
