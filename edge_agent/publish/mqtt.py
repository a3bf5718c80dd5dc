"""MQTT publishing with paho-mqtt's 2.x API, through the durable outbox.

Every alarm, state and score payload is first written to the outbox; a sender thread hands rows
to paho oldest first while the broker is connected, and a row is deleted only when paho reports
the PUBACK (QoS 1) of the very message that carried it — so a broker outage, a broker restart or a
SIGKILL of the agent loses nothing: undelivered rows are sent after recovery, in order, at least
once. paho itself re-sends the messages it holds after a reconnect; rows it never held are sent
from the outbox. On every (re)connect the backlog goes out before the current state of each
machine, so a subscriber never sees an old alarm arrive after the newer state.

paho numbers messages with a 16-bit id that wraps every 65,535 publishes, and it calls
``on_publish`` from its network thread, possibly before ``publish()`` has returned the id to the
sender. So acknowledgements are queued as they come and matched by the sender thread alone, after
it has recorded what it handed over; an acknowledgement that matches nothing handed over (status,
discovery, state re-publication) is dropped at once and can never delete a later row.

Topics (prefix default ``edge-agent``):
  <prefix>/<node>/status            retained "online"; last will and clean stop: "offline"
  <prefix>/<node>/<machine>/state   retained JSON state
  <prefix>/<node>/<machine>/alarm   QoS ``mqtt.qos`` (1), not retained: start / update / end
  <prefix>/<node>/<machine>/score   QoS 0, rate-limited telemetry
  <prefix>/<node>/<machine>/command         subscribed with ``mqtt.commands: true``: operator commands
  <prefix>/<node>/<machine>/command/result  QoS 1, not retained: one answer per command
plus Home Assistant discovery (one device per node; per machine a binary_sensor, score, level and
alarm-state sensors, and with commands an acknowledge button and a shelve switch), re-sent on
every connect and whenever Home Assistant announces itself on ``<discovery>/status``.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections import deque
from typing import Callable, Optional

from edge_agent import strict_json
from edge_agent.config import Config
from edge_agent.faults import Faults
from edge_agent.publish import events
from edge_agent.publish.connect_errors import describe_connect_error
from edge_agent.publish.discovery import Topics, discovery_payloads
from edge_agent.publish.mqtt_setup import secure
from edge_agent.publish.outbox import Outbox
from edge_agent.runtime.sink import Sink, WindowEvent

log = logging.getLogger("edge_agent.mqtt")

MAX_HANDED = 50  # rows handed to paho and not yet acknowledged
FAIL_LOG_EVERY = 60.0  # seconds between repeated "cannot reach the broker" lines


class MQTTPublisher(Sink):
    """A sink for the agent: outbox first, then the broker."""

    def __init__(
        self,
        cfg: Config,
        outbox: Outbox,
        machines: list[str],
        model_info: Optional[dict] = None,
        states: Optional[Callable[[], list[tuple[str, dict]]]] = None,
        client_factory=None,
        faults: Optional[Faults] = None,
        on_command: Optional[Callable[..., None]] = None,
    ):
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.cfg, self.mq = cfg, cfg.mqtt
        self.outbox = outbox
        self.faults = faults or Faults()
        self.machines = machines
        self.model_info = model_info or {"name": "", "version": ""}
        self.states = states  # current retained state per machine, re-published on every connect
        # CommandDesk.submit(machine, payload, source, reply, retained=) for each command; None: ignored
        self.on_command = on_command
        self._scores = events.ScoreThrottle(self.mq.score_interval_seconds)
        self.topics = Topics(self.mq.topic_prefix, cfg.node_id, self.mq.homeassistant.discovery_prefix)
        self.connected = threading.Event()
        self.connects = 0
        self.reconnects = 0
        self.connect_failures = 0
        self.network_restarts = 0
        self._network: Optional[threading.Thread] = None
        self.last_error: Optional[str] = None
        self.down_since: Optional[float] = time.monotonic()  # not connected since (monotonic), None while connected
        self._fail_logged_at = float("-inf")
        self._fails_since_log = 0
        self._handed: dict[int, tuple[int, int]] = {}  # paho mid -> (outbox row id, qos)
        self._acks: deque[int] = deque()  # mids paho reported acknowledged, matched by the sender thread
        self._states_due = False  # re-publish every machine's state once the backlog is handed over
        self._last_row = 0  # highest row id handed to paho in this process
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        factory = client_factory or mqtt.Client
        self.client = factory(CallbackAPIVersion.VERSION2, client_id=f"edge-agent-{cfg.node_id}", clean_session=True)
        c = self.client
        # Every callback runs on paho's network thread: one that raised would end that thread, and
        # with it every delivery, while the agent went on scoring. So each is guarded (logged, counted).
        g = self.faults.guard
        c.on_connect = g("MQTT on_connect")(self._on_connect)
        c.on_disconnect = g("MQTT on_disconnect")(self._on_disconnect)
        c.on_publish = g("MQTT on_publish")(self._on_publish)
        c.on_message = g("MQTT on_message")(self._on_message)
        c.on_connect_fail = g("MQTT on_connect_fail")(self._on_connect_fail)
        # Exponential back-off from 1 s, capped low: a restarted broker gets the backlog within seconds.
        c.reconnect_delay_set(1, max(1, int(round(self.mq.reconnect_max_seconds))))
        c.max_inflight_messages_set(20)
        c.will_set(self.topics.status, "offline", qos=1, retain=True)
        secure(c, self.mq)  # credentials and TLS
        self._sender = threading.Thread(target=self._send_loop, name="mqtt-sender", daemon=True)

    # -- life cycle ----------------------------------------------------------------------------
    def start(self) -> None:
        log.info(
            "MQTT: connecting to %s:%d as %s (TLS %s)",
            self.mq.host,
            self.mq.port,
            self.mq.username or "anonymous",
            "on" if self.mq.tls else "off",
        )
        self._start_network()
        self._sender.start()

    def _start_network(self) -> None:
        self.client.connect_async(self.mq.host, self.mq.port, keepalive=self.mq.keepalive)
        self.client.loop_start()
        self._network = getattr(self.client, "_thread", None)  # watched by the sender (_check_network)

    def network_alive(self) -> bool:
        """paho's network thread is running (it reads acknowledgements and commands, and reconnects)."""
        return self._network is not None and self._network.is_alive()

    def _check_network(self) -> None:
        """paho's network thread ended by an exception (its callbacks are guarded, but paho itself
        can raise): say so, count it, and start a fresh connection with a new thread."""
        if self._network is None or self._network.is_alive() or self._stop.is_set():
            return
        self.connected.clear()
        self.down_since = self.down_since or time.monotonic()
        self.last_error = "the MQTT network thread ended (see the log); reconnecting"
        log.error("MQTT: %s", self.last_error)
        self.network_restarts += 1
        self._start_network()
        self.faults.revive(self._network.name if self._network is not None else "")  # marked by the excepthook

    def close(self, deadline: float = 10.0) -> None:
        """Flush the outbox within ``deadline`` seconds, publish 'offline' and disconnect."""
        t_end = time.monotonic() + deadline
        while self.connected.is_set() and time.monotonic() < t_end and self.outbox.depth() > 0:
            self._wake.set()
            time.sleep(0.05)
        left = self.outbox.depth() - self.outbox.in_memory  # those in memory: the outbox logs their loss
        if left:
            log.warning("MQTT: %d event(s) still in the outbox at stop; they will be sent after the next start", left)
        self._stop.set()
        self._wake.set()
        if self.connected.is_set():
            info = self.client.publish(self.topics.status, "offline", qos=1, retain=True)
            try:
                info.wait_for_publish(timeout=max(0.5, t_end - time.monotonic()))
            except (RuntimeError, ValueError):
                pass
        self.client.disconnect()
        self.client.loop_stop()
        # The sender wakes on _stop and ends within one pass; what is left of the deadline bounds the
        # wait, so a stop takes at most about ``deadline`` seconds (systemd's TimeoutStopSec is 30).
        self._sender.join(max(1.0, t_end - time.monotonic()))
        self.outbox.close()

    # -- sink interface ------------------------------------------------------------------------
    def handle(self, kind: str, machine: str, payload: dict) -> None:
        self.outbox.put(machine, kind, payload)
        self._wake.set()

    def window(self, ev: WindowEvent) -> None:
        if self._scores.due(ev.machine, ev.ts):  # telemetry, at most one per score_interval_seconds
            p = events.score_payload(
                ev.machine, ev.ts, ev.score, ev.threshold, self.model_info, ev.bank_version, ev.level_dbfs
            )
            self.handle("score", ev.machine, p)

    # -- paho callbacks (paho's network thread) --------------------------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            text = str(reason_code)
            hint = (
                " (check mqtt.username and the password file)"
                if "authori" in text.lower() or "password" in text.lower()
                else ""
            )
            self._connect_failed(f"the broker refused the connection: {text}{hint}")
            return
        self.connects += 1
        if self.connects > 1:
            self.reconnects += 1
        down = time.monotonic() - self.down_since if self.down_since is not None else 0.0
        self.last_error, self.down_since, self._fails_since_log = None, None, 0
        self._fail_logged_at = float("-inf")
        log.info(
            "MQTT: connected to %s:%d%s; %d event(s) waiting in the outbox",
            self.mq.host,
            self.mq.port,
            f" after {down:.0f} s without a broker" if self.connects > 1 or down > 5 else "",
            self.outbox.depth(),
        )
        client.publish(self.topics.status, "online", qos=1, retain=True)
        if self.mq.homeassistant.enabled:
            client.subscribe(self.topics.ha_status, qos=1)
            self._publish_discovery()
        if self.mq.commands:
            client.subscribe(self.topics.machine("+", "command"), qos=1)
        self._states_due = True  # after the backlog (sender thread)
        self.connected.set()
        self._wake.set()

    def _on_connect_fail(self, client, userdata) -> None:
        # paho calls this from inside its ``except OSError`` block, so the error is still at hand.
        err = sys.exc_info()[1]
        self._connect_failed(describe_connect_error(err, self.mq.host, self.mq.port))

    def _connect_failed(self, why: str) -> None:
        self.connect_failures += 1
        self.last_error = why
        if self.down_since is None:
            self.down_since = time.monotonic()
        self._fails_since_log += 1
        now = time.monotonic()
        if now - self._fail_logged_at >= FAIL_LOG_EVERY:
            down = now - self.down_since
            log.error(
                "MQTT: cannot connect to %s:%d: %s (%d failed attempt(s) in %.0f s; %d event(s) waiting in the "
                "outbox); "
                "retrying every %g s at most",
                self.mq.host,
                self.mq.port,
                why,
                self._fails_since_log,
                down,
                self.outbox.depth(),
                self.mq.reconnect_max_seconds,
            )
            self._fail_logged_at, self._fails_since_log = now, 0
        else:
            log.debug("MQTT: cannot connect to %s:%d: %s", self.mq.host, self.mq.port, why)

    def status_line(self) -> str:
        """Broker state and backlog, for the status line, STATUS= and logs."""
        waiting = self.outbox.depth()
        if self.connected.is_set():
            return f"mqtt: connected to {self.mq.host}:{self.mq.port}, outbox {waiting}"
        down = time.monotonic() - self.down_since if self.down_since is not None else 0.0
        return (
            f"mqtt: NOT CONNECTED to {self.mq.host}:{self.mq.port} for {down:.0f} s"
            f"{f' ({self.last_error})' if self.last_error else ''}, outbox {waiting} waiting"
        )

    def disconnected_seconds(self) -> float:
        return 0.0 if self.down_since is None else time.monotonic() - self.down_since

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        was = self.connected.is_set()
        self.connected.clear()
        if was:
            self.down_since = time.monotonic()
        # paho re-sends QoS 1 messages after a reconnect but drops QoS 0 ones: let their rows go.
        with self._lock:
            lost = [(mid, row) for mid, (row, qos) in self._handed.items() if qos == 0]
            for mid, _ in lost:
                del self._handed[mid]
        for _, row in lost:
            self.outbox.ack(row)
        if lost:
            log.info("MQTT: %d score telemetry message(s) lost with the connection", len(lost))
        if was and not self._stop.is_set():
            self.last_error = str(reason_code)
            log.warning(
                "MQTT: disconnected from %s:%d (%s); reconnecting with back-off",
                self.mq.host,
                self.mq.port,
                reason_code,
            )

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        # Only queued here: the sender matches it once everything it handed over is recorded.
        self._acks.append(mid)
        self._wake.set()

    def _on_message(self, client, userdata, msg) -> None:
        if msg.topic == self.topics.ha_status and msg.payload == b"online":
            log.info("MQTT: Home Assistant came online; re-sending discovery")
            self._publish_discovery()
            return
        machine = self.topics.command_machine(msg.topic)
        if machine is None or not self.mq.commands:
            return
        if not msg.payload:
            # An empty message clears a retained command at the broker; it is no command.
            log.debug("MQTT: empty message on %s ignored", msg.topic)
            return
        if self.on_command is not None:
            self.on_command(machine, msg.payload, "mqtt", self._replier(machine), retained=msg.retain)

    def _replier(self, machine: str) -> Callable[[dict], None]:
        topic = self.topics.machine(machine, "command/result")

        def reply(result: dict) -> None:
            # An answer to a live request: straight to the broker (not the outbox, where it could
            # arrive after the sender has given up and its state changed again).
            self.client.publish(topic, strict_json.dumps(result), qos=1, retain=False)

        return reply

    def _publish_discovery(self) -> None:
        ha = self.mq.homeassistant
        for machine in self.machines:
            confs = discovery_payloads(
                self.topics,
                machine,
                self.model_info["name"],
                commands=self.mq.commands,
                shelve_minutes=ha.shelve_minutes,
            )
            for topic, conf in confs.items():
                self.client.publish(topic, json.dumps(conf) if conf is not None else b"", qos=1, retain=True)

    # -- sender thread ---------------------------------------------------------------------------
    def _match_acks(self) -> None:
        """Delete the rows whose messages the broker acknowledged; drop acknowledgements of anything
        else. Runs on the sender thread only, so every mid it handed over is recorded already."""
        while self._acks:
            mid = self._acks.popleft()
            with self._lock:
                entry = self._handed.pop(mid, None)
            if entry is not None:
                self.outbox.ack(entry[0])

    def _send_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(1.0)
            self._wake.clear()
            try:
                self._check_network()
                self._send_once()
            except Exception as e:  # noqa: BLE001 - the one thread that delivers alarms must outlive any failure
                self.faults.record("MQTT sender", e, "failed; retrying")
                self._stop.wait(1.0)

    def _send_once(self) -> None:
        """Match acknowledgements, then hand paho the next rows of the outbox (and the states once
        the backlog is out)."""
        self._match_acks()
        if not self.connected.is_set():
            return
        with self._lock:
            room = MAX_HANDED - len(self._handed)
        rows = self.outbox.pending(after_id=self._last_row, limit=room) if room > 0 else []
        for row in rows:
            topic = self.topics.machine(row.machine, row.kind)
            qos = 0 if row.kind == "score" else self.mq.qos
            retain = row.kind == "state"
            # Never hold our lock across publish(): paho's thread holds its own locks while it
            # calls callbacks that take ours.
            info = self.client.publish(topic, row.payload, qos=qos, retain=retain)
            with self._lock:
                self._handed[info.mid] = (row.id, qos)
            self._last_row = row.id
            if qos == 0 and info.rc != 0:
                break
        if room > 0 and len(rows) < room and self._states_due and self.connected.is_set():
            # The backlog is handed over (paho sends in order): now the current state.
            self._states_due = False
            for machine, payload in self.states() if self.states else []:
                self.client.publish(
                    self.topics.machine(machine, "state"), strict_json.dumps(payload), qos=1, retain=True
                )
