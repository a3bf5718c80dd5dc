"""Health: systemd notify (READY, WATCHDOG, STATUS, STOPPING) and Prometheus metrics.

WATCHDOG pings are sent only while every live input delivers audio frames and the engine scores
windows: a stalled capture or a stuck engine stops the pings, and systemd (``WatchdogSec=``)
restarts the agent. READY is sent once config, model, engine warm-up and banks are loaded.
"""

from __future__ import annotations

import logging
import os
from typing import Optional

from edge_agent.alarms.lifecycle import LIFECYCLE_STATES
from edge_agent.clock import SYSTEM, Clock
from edge_agent.faults import Faults
from edge_agent.runtime.sink import AgentView, Sink
from edge_agent.runtime.stream import STATES, MachineStream

log = logging.getLogger("edge_agent.health.monitor")

STATUS_EVERY = 5.0  # seconds between STATUS= lines


class SystemdNotify:
    """sd_notify through sdnotify; a no-op when NOTIFY_SOCKET is not set (not under systemd)."""

    def __init__(self):
        import sdnotify

        self.enabled = bool(os.environ.get("NOTIFY_SOCKET"))
        self._n = sdnotify.SystemdNotifier() if self.enabled else None
        usec = os.environ.get("WATCHDOG_USEC")
        # Ping at half the watchdog interval, as sd_watchdog_enabled(3) advises.
        self.watchdog_interval: Optional[float] = int(usec) / 2e6 if usec and usec.isdigit() else None

    def send(self, msg: str) -> None:
        if self._n is not None:
            self._n.notify(msg)


class Health(Sink):
    """A sink of the agent: READY when it is ready, WATCHDOG while it makes progress, STATUS lines."""

    def __init__(
        self,
        streams: dict[str, MachineStream],
        faults: Faults,
        notify: Optional[SystemdNotify] = None,
        clock: Clock = SYSTEM,
    ):
        self.streams, self.faults, self.clock = streams, faults, clock
        self.notify = notify or SystemdNotify()
        self._last_frames: dict[str, int] = {}
        self._last_windows = -1
        self._last_check = 0.0
        self._last_status = 0.0
        self.pings = 0
        self.stalled_reason: Optional[str] = None
        self._status: list[str] = []  # the other sinks' status lines (broker and outbox), as last seen

    def ready(self, agent: AgentView) -> None:
        # Agent.start has loaded the banks and warmed the engine up before calling us.
        log.info("ready: %d machine(s)", len(self.streams))
        self._status = _sink_lines(agent)
        self.notify.send("READY=1\nSTATUS=" + self.summary())
        self._last_check = self.clock.monotonic()
        self._snapshot()

    def _snapshot(self) -> None:
        self._last_frames = {m: s.stats().frames_written for m, s in self.streams.items()}
        self._last_windows = self.windows()

    def windows(self) -> int:
        """Windows taken from every stream: scored, or seen while uncalibrated, silent or off."""
        return sum(s.stats().windows_processed for s in self.streams.values())

    def progress(self) -> Optional[str]:
        """None while audio and inference advance and no thread has died; else what is wrong."""
        dead = self.faults.problem()
        if dead:
            return dead
        for m, s in self.streams.items():
            st = s.stats()
            if st.finished:
                continue
            if st.frames_written == self._last_frames.get(m, -1):
                return f"{m}: no audio frames"
        if self.windows() == self._last_windows:
            return "no windows scored"
        return None

    def tick(self, agent: AgentView) -> None:
        now = self.clock.monotonic()
        # Judge progress over at least two hops, so that the wait between windows is not a stall.
        hop = max((s.cfg.hop_seconds for s in self.streams.values()), default=1.0)
        interval = max(self.notify.watchdog_interval or 5.0, 2 * hop)
        if now - self._last_check >= interval:
            reason = self.progress()
            if reason is None:
                self.notify.send("WATCHDOG=1")
                self.pings += 1
                if self.stalled_reason:
                    log.info("watchdog: progress again")
                self.stalled_reason = None
            elif reason != self.stalled_reason:
                log.error(
                    "watchdog: %s for %.0f s; not pinging systemd (it will restart the agent)",
                    reason,
                    now - self._last_check,
                )
                self.stalled_reason = reason
            self._snapshot()
            self._last_check = now
        if now - self._last_status >= STATUS_EVERY:
            self._last_status = now
            self._status = _sink_lines(agent)
            self.notify.send("STATUS=" + self.summary())

    def summary(self) -> str:
        parts = list(self._status)  # broker and outbox first: cut last when long
        for m, s in self.streams.items():
            st = s.stats()
            score = f" {st.last_score:.3f}" if st.last_score is not None else ""
            parts.append(f"{m} {st.state}{score}")
        return "; ".join(parts)[:200]

    def stopping(self, agent: AgentView) -> None:
        self.notify.send("STOPPING=1\nSTATUS=stopping: flushing alarms")


def _sink_lines(agent: AgentView) -> list[str]:
    return [line for s in agent.sinks if (line := s.status_line())]


class Metrics(Sink):
    """The Prometheus endpoint as a sink: engine batch times into a histogram; the rest is read from
    the streams when scraped."""

    def __init__(self, server, latency):
        self.server, self._latency = server, latency

    def batch(self, windows: int, seconds: float) -> None:
        self._latency.observe(seconds)

    def shutdown(self) -> None:
        self.server.shutdown()


def start_metrics(streams: dict[str, MachineStream], faults: Faults, listen: str, publisher=None) -> Metrics:
    """Prometheus endpoint on ``host:port``; values are read from the streams when scraped.
    ``publisher``: the durable sink (MQTT publisher or outbox-only), for outbox and broker metrics."""
    from prometheus_client import CollectorRegistry, Histogram, start_http_server
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    from edge_agent.publish.mqtt import MQTTPublisher

    host, _, port = listen.rpartition(":")
    registry = CollectorRegistry()
    latency = Histogram(
        "edge_agent_inference_seconds",
        "Front end + engine time per batch of windows",
        registry=registry,
        buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0),
    )

    class AgentCollector:
        def collect(self):
            windows = CounterMetricFamily(
                "edge_agent_windows_processed", "Windows scored (or seen, when uncalibrated)", labels=["machine"]
            )
            overruns = CounterMetricFamily(
                "edge_agent_ring_overruns", "Ring buffer overruns (audio lost)", labels=["machine"]
            )
            score = GaugeMetricFamily("edge_agent_last_score", "Last anomaly score", labels=["machine"])
            thr = GaugeMetricFamily("edge_agent_threshold", "Alarm threshold from calibration", labels=["machine"])
            level = GaugeMetricFamily("edge_agent_audio_level_dbfs", "RMS level of the last window", labels=["machine"])
            state = GaugeMetricFamily(
                "edge_agent_state", "1 for the machine's current state", labels=["machine", "state"]
            )
            learning = GaugeMetricFamily(
                "edge_agent_learning_progress", "Share of the learning period done (0-1)", labels=["machine"]
            )
            alarm = GaugeMetricFamily(
                "edge_agent_alarm_state", "1 for the latest alarm's ISA-18.2 state", labels=["machine", "state"]
            )
            for m, s in streams.items():
                st = s.stats()
                windows.add_metric([m], st.windows_processed)
                overruns.add_metric([m], st.overruns)
                if st.last_score is not None:
                    score.add_metric([m], st.last_score)
                if st.threshold is not None:
                    thr.add_metric([m], st.threshold)
                if st.last_level_dbfs is not None:
                    level.add_metric([m], st.last_level_dbfs)
                for name in STATES:
                    state.add_metric([m, name], 1.0 if st.state == name else 0.0)
                if st.learning_progress is not None:
                    learning.add_metric([m], st.learning_progress)
                for name in LIFECYCLE_STATES:
                    alarm.add_metric([m, name], 1.0 if st.alarm_state == name else 0.0)
            nonfinite = CounterMetricFamily(
                "edge_agent_nonfinite_samples",
                "NaN/Inf audio samples replaced by silence",
                labels=["machine"],
            )
            online = GaugeMetricFamily(
                "edge_agent_input_online",
                "1 while the machine's input delivers (or can deliver) audio",
                labels=["machine"],
            )
            failures = CounterMetricFamily(
                "edge_agent_input_failures", "Network input connections that failed or ended", labels=["machine"]
            )
            for m, s in streams.items():
                nonfinite.add_metric([m], s.nonfinite_samples)
                online.add_metric([m], 1.0 if s.source.online else 0.0)
                failures.add_metric([m], getattr(s.source, "failures", 0))
            yield from (windows, overruns, score, thr, level, state, learning, alarm, nonfinite, online, failures)
            counts, dead = faults.snapshot()
            errors = CounterMetricFamily(
                "edge_agent_thread_errors", "Exceptions caught and logged, by where they happened", labels=["place"]
            )
            for place, n in counts.items():
                errors.add_metric([place], n)
            yield errors
            threads = GaugeMetricFamily(
                "edge_agent_thread_dead",
                "1 for a thread that ended by an exception and is not running",
                labels=["thread"],
            )
            for name in dead:
                threads.add_metric([name], 1.0)
            yield threads
            if publisher is not None:
                depth = GaugeMetricFamily("edge_agent_outbox_depth", "Events waiting in the outbox", labels=["kind"])
                for k in ("alarm", "state", "score"):
                    depth.add_metric([k], publisher.outbox.depth(k))
                yield depth
                dropped = CounterMetricFamily(
                    "edge_agent_outbox_dropped", "Events dropped from a full or old outbox", labels=["kind"]
                )
                for k, v in publisher.outbox.dropped.items():
                    dropped.add_metric([k], v)
                yield dropped
                if isinstance(publisher, MQTTPublisher):  # not the outbox-only sink
                    yield GaugeMetricFamily(
                        "edge_agent_mqtt_connected",
                        "1 while connected to the broker (and its network thread runs)",
                        value=1.0 if publisher.connected.is_set() and publisher.network_alive() else 0.0,
                    )
                    yield GaugeMetricFamily(
                        "edge_agent_mqtt_disconnected_seconds",
                        "Seconds since the broker connection was lost (or never made); 0 while connected",
                        value=publisher.disconnected_seconds(),
                    )
                    yield CounterMetricFamily(
                        "edge_agent_mqtt_reconnects", "Reconnections to the broker", value=publisher.reconnects
                    )
                    yield CounterMetricFamily(
                        "edge_agent_mqtt_connect_failures",
                        "Failed attempts to connect to the broker",
                        value=publisher.connect_failures,
                    )

    registry.register(AgentCollector())
    server, thread = start_http_server(int(port), addr=host or "127.0.0.1", registry=registry)
    log.info("metrics on http://%s:%s/metrics", host or "127.0.0.1", port)
    return Metrics(server, latency)
