"""The agent: every machine's stream through one shared engine, decisions out to the sinks.

One processing thread pumps all streams, batches the windows that are ready together (from any
machine) through the front end and the engine, scores each against its machine's bank and feeds
the detector. Audio arrives on the sources' own threads. Everything the agent does goes out
through its sinks (``runtime/sink.py``), given to the constructor with the command desk, the
learners and the clock; nothing is attached from outside.

One window's path, top to bottom: ``step`` (pump, gate) -> ``_score`` (front end, engine, score
heads) -> ``_decide`` (detector) -> ``Alarms`` and the sinks.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from edge_agent.alarms.alarm_windows import AlarmWindows
from edge_agent.alarms.dispatch import Alarms
from edge_agent.alarms.evidence import EvidenceRecorder
from edge_agent.clock import SYSTEM, Clock
from edge_agent.config import Config
from edge_agent.engine import Engine
from edge_agent.faults import Faults
from edge_agent.model.bundle import Bundle
from edge_agent.model.outputs import with_indicators
from edge_agent.model.stream_frontend import stack_features
from edge_agent.publish import events
from edge_agent.runtime.commands import CommandDesk
from edge_agent.runtime.heap import trim
from edge_agent.runtime.learner import FeedbackEnroller, Learner
from edge_agent.runtime.models import Models
from edge_agent.runtime.reload import reload_agent
from edge_agent.runtime.replay_report import ReplayError, replay_summary, unscored_replay
from edge_agent.runtime.sink import Sink
from edge_agent.runtime.stream import MachineStream, Window

log = logging.getLogger("edge_agent.runtime.agent")

# Windows per engine call. Measured on the default model (2-core x86, ONNX Runtime CPU): batch 4
# costs 5.9 ms per window against 5.8 ms at batch 32, while peak RSS in fast replay is 147 MB
# against 231 MB (the runtime's budget is 150 MB).
MAX_BATCH = 4
# The loop's idle wait (Agent.idle_seconds): a replay fed as fast as possible is looked at again
# after POLL_SECONDS; live audio at most IDLE_MAX_SECONDS later (the latency of a command or a signal).
POLL_SECONDS = 0.02
IDLE_MAX_SECONDS = 0.25

# a machine's stream -> its learner, or None without a learning period (calibration.learning.learner_factory)
LearnerFactory = Callable[[MachineStream, Callable[[], None]], Optional[Learner]]


@dataclass
class Stats:
    windows: int = 0
    batches: int = 0

    def record(self, n: int) -> None:
        self.windows += n
        self.batches += 1


class Agent:
    def __init__(
        self,
        cfg: Config,
        bundle: Bundle,
        engine: Engine,
        streams: dict[str, MachineStream],
        sinks: list[Sink],
        *,
        commands: Optional[CommandDesk] = None,
        learners: Optional[LearnerFactory] = None,
        config_path: Optional[Path] = None,
        evidence_url: Optional[str] = None,
        faults: Optional[Faults] = None,
        clock: Clock = SYSTEM,
        severity: Optional[Callable[[str], tuple[str, str]]] = None,
        feedback: Optional[FeedbackEnroller] = None,
    ):
        self.cfg, self.bundle, self.engine, self.streams = cfg, bundle, engine, streams
        self.models = Models(cfg, bundle)  # machines' adapted models (runtime/models.py)
        self.sinks = list(sinks)  # in order: the durable one first, so what the console shows is already kept
        self.faults = faults or Faults()  # exceptions of every thread, for logs, metrics and health
        self.clock = clock
        self.frontend = bundle.frontend
        self.model_info = bundle.describe()
        self.status_interval = cfg.status_interval_seconds
        self.stats = Stats()
        self.stop_event = threading.Event()
        # operator commands (MQTT, the status page) run on this thread between steps; a command wakes the loop
        self.commands = commands or CommandDesk()
        self.learner_factory = learners
        self.config_path = config_path  # re-read on SIGHUP
        self.severity = severity  # machine -> ("watch", why) or ("normal", ""): the trends (trends/recorder.py)
        self.feedback = feedback  # "that was normal": the alarm's windows join the bank (calibration.feedback)
        self.alarm_windows = AlarmWindows()
        # Set by signal handlers. A handler runs in the main thread between two bytecodes, possibly while
        # that thread holds the lock inside stop_event.wait(); Event.set() there deadlocks (the Python
        # docs warn against locks in handlers). So a handler only stores a name here; run() acts on it.
        self.signalled: Optional[str] = None
        self.reload_signalled = False
        self.reload_requested = threading.Event()
        self.evidence = EvidenceRecorder.for_agent(cfg, self.frontend, self.faults)
        self.alarms = Alarms(cfg.resolved_state_dir(), self._emit, self.model_info, self.evidence, evidence_url)
        self._last_status = clock.monotonic()
        for s in streams.values():
            self.use_model(s)
            self.attach_learner(s)  # at once: the very first state a broker sees is already ``learning``

    # -- output ----------------------------------------------------------------------------
    def emit(self, kind: str, machine: str, payload: dict) -> None:
        """An event to every sink (alarm, state, feedback)."""
        self._emit(kind, machine, payload)

    def _emit(self, kind: str, machine: str, payload: dict) -> None:
        for s in self.sinks:
            try:
                s.handle(kind, machine, payload)
            except Exception:  # noqa: BLE001 - one broken sink must not stop detection
                log.exception("sink %s failed on a %s event", type(s).__name__, kind)

    def _tell(self, what: str, *args) -> None:
        """Every sink's ``what`` (window, batch, ready, tick, stopping, close), each on its own."""
        for s in self.sinks:
            try:
                getattr(s, what)(*args)
            except Exception as e:  # noqa: BLE001 - one broken sink must not stop detection
                self.faults.record(f"sink {type(s).__name__}.{what}", e)

    def state_of(self, s: MachineStream, reason: str = "") -> dict:
        return stream_state(s, self.model_info, reason, self.severity)

    def _close_open_alarms(self, reason: str, name_recording: bool = False) -> None:
        for s in self.streams.values():
            why = f"{reason} {s.recordings.name}" if name_recording and s.recordings.name else reason
            if self.alarms.end(s, s.clock(), why):
                self.publish_state(s, why)

    def publish_state(self, s: MachineStream, reason: str = "") -> None:
        self._emit("state", s.machine, self.state_of(s, reason))

    # -- main loop -------------------------------------------------------------------------
    def start(self) -> None:
        if hasattr(self.engine, "warm_up"):
            log.info("engine warm-up: %.0f ms", 1e3 * self.engine.warm_up())
        for s in self.streams.values():
            self.attach_learner(s)
            if not s.calibrated and s.learner is None:
                log.warning(
                    "machine %s is UNCALIBRATED: no bank in %s; it is not being monitored. Enrol it: edge-agent "
                    "calibrate --machine %s (or --learn 24h)",
                    s.machine,
                    self.cfg.resolved_state_dir(),
                    s.machine,
                )
            self.alarms.load(s)
            s.source.start(self.faults)
            s.started()
            self.alarms.close_orphaned(s)
            self.publish_state(s, "" if s.calibrated or s.learner is not None else "no bank: run edge-agent calibrate")
        self._tell("ready", self)

    def stop(self) -> None:
        self.stop_event.set()
        self.commands.wake()

    def idle_seconds(self) -> float:
        """How long the loop may sleep when nothing was ready: until the stream nearest its next window
        has the audio for it (a fast replay: a short poll), at most IDLE_MAX_SECONDS (liveness, shelves,
        signals). Polling every 20 ms instead cost a live machine about 1 % of a core."""
        wait = IDLE_MAX_SECONDS
        for s in self.streams.values():
            due = s.seconds_to_next_window()
            if due is None:
                return POLL_SECONDS
            wait = min(wait, due)
        return max(POLL_SECONDS, wait)

    def done(self) -> bool:
        """Every input is a finished replay and nothing is left to score."""
        return all(s.drained for s in self.streams.values())

    def step(self) -> int:
        """Pump every stream once and score what is ready. Returns the number of windows scored."""
        now = self.clock.monotonic()
        ready: list[Window] = []
        for s in self.streams.values():
            ready += s.pump(now)
            if s.update_liveness(now):
                self._interrupt(s, s.clock())
        pending: list[Window] = []
        scored = 0
        for w in ready:  # in time order per stream
            st = w.stream
            if w.after is not None:  # a new recording: nothing carries over from the last one
                scored += self._score(pending)
                pending = []
                self._new_recording(st, w)
            before = (st.state, st.condition)  # the condition too: a shelved machine's state hides it
            score_it = st.gate(w)  # silence and a stopped machine are states, never scores
            if (st.state, st.condition) != before:
                scored += self._score(pending)  # what came before the change is decided first
                pending = []
                self._interrupt(st, w.ts)
            if score_it and (st.calibrated or st.learner is not None):
                pending.append(w)
            else:
                st.skip(w)
                self._keep(w)
        scored += self._score(pending)
        for st in self.alarms.expire_shelves(self.streams.values()):
            self.publish_state(st, "the shelf expired: monitoring again")
        self.commands.run_pending(self)
        if self.clock.monotonic() - self._last_status >= self.status_interval:
            self._last_status = self.clock.monotonic()
            for line in self.status_lines():
                log.info("%s", line)
            trim()
        self._tell("tick", self)
        return scored

    def _score(self, windows: list[Window]) -> int:
        """Front end, engine (batches of windows from any machine) and decisions, in order. Machines
        with an adapted model have their own engine; each machine's windows stay in order."""
        groups: dict[int, list[Window]] = {}
        for w in windows:
            groups.setdefault(id(w.stream.engine), []).append(w)
        for group in groups.values():
            self._score_batches(group, group[0].stream.engine or self.engine)
        return len(windows)

    def _score_batches(self, windows: list[Window], engine: Engine) -> None:
        for i in range(0, len(windows), MAX_BATCH):
            batch = windows[i : i + MAX_BATCH]
            t = time.perf_counter()
            out = engine.infer(stack_features([w.features() for w in batch]))
            took = time.perf_counter() - t
            out = with_indicators(out, np.stack([w.samples for w in batch]))
            self.stats.record(len(batch))
            self._tell("batch", len(batch), took)
            for j, w in enumerate(batch):
                self._keep(w)
                self._decide(w, {k: v[j : j + 1] for k, v in out.items()})

    def _keep(self, w: Window) -> None:
        """The window's audio into its machine's evidence history, in decision order: a fast replay
        pumps far more audio per step than the history holds, so this must not run ahead."""
        if self.evidence is not None:
            self.evidence.window(w.stream.machine, w.samples, w.offset)

    def _new_recording(self, s: MachineStream, w: Window) -> None:
        log.info("%s", s.next_recording(w.recording))  # what the last one gave
        if self.evidence is not None:
            self.evidence.new_recording(s.machine)
        self._interrupt(s, s.last_ts or w.ts, f"end of recording {w.after}")

    def _interrupt(self, s: MachineStream, ts: float, gap: str = "") -> None:
        """The input changed state (no audio, machine off, or back) or a recording ended (``gap``):
        an open alarm ends with the reason, the alarm rule starts afresh, the state is published."""
        if gap or s.no_audio or s.condition is not None:
            log.log(logging.DEBUG if gap else logging.WARNING, "%s: %s: %s", s.machine, s.state, gap or s.reason)
            ended = self.alarms.end(s, ts, gap or s.reason)
            if s.detector is not None:
                s.detector.reset()
            if ended or not gap:  # between two recordings without an alarm nothing changed for subscribers
                self.publish_state(s, gap or s.reason)
        else:
            log.info("%s: sound is back (%s)", s.machine, s.state)
            self.publish_state(s, "sound is back")

    def use_model(self, s: MachineStream) -> None:
        """The engine for the machine's bank: its adapted model's, or (None) the shared one."""
        s.engine = None if s.learner is not None else self.models.engine_for(s.machine, s.bank)

    def attach_learner(self, s: MachineStream) -> None:
        if self.learner_factory is None or s.learner is not None:
            return
        if s.attach_learner(self.learner_factory(s, self.reload_requested.set)):  # a reload: adaptation done
            s.engine = None  # a learning period learns the shared model's embeddings
            log.info("%s: learning: no alarms until the period is over (%s)", s.machine, s.learner.describe())

    def _learn(self, w: Window, outputs: dict[str, np.ndarray]) -> None:
        s = w.stream
        step = int(10 * s.learner.progress())
        try:
            bank = s.learn(w, outputs["embedding"][0], outputs["indicators"][0])
        except Exception as e:  # noqa: BLE001 - a period that cannot make a bank leaves the old one in force
            self.faults.record(f"{s.machine}: learning", e, "could not make a bank")
            s.attach_learner(None)
            self.publish_state(s, f"learning failed ({e}); the machine keeps its previous bank, if any")
            return
        if bank is not None:
            self.use_model(s)
            self.publish_state(s, f"learning done: monitoring (threshold {bank.threshold:.4f})")
        elif int(10 * s.learner.progress()) != step:
            self.publish_state(s)  # progress in 10 % steps on the retained state

    def _decide(self, w: Window, outputs: dict[str, np.ndarray]) -> None:
        s = w.stream
        if s.learner is not None:
            self._learn(w, outputs)
            return
        score = s.score(outputs)  # the machine's score head (scoring/heads)
        if not s.finite_score(score):  # never decided on, never published as NaN
            return
        before = s.state
        d = s.decide(score, w.ts, w.samples)
        if self.evidence is not None:
            self.evidence.score(s.machine, w.offset, score)
            if d is not None and d.kind == "start":  # the alarm began this far before this window's end
                self.evidence.alarm_started(s.machine, d.alarm_id, w.offset - (w.ts - d.started_at), s.threshold)
        if d is not None:
            self.alarms.emit_decision(s, d)
        det = s.detector
        active = det.alarm_id if det is not None and det.active else None
        self.alarm_windows.window(s.machine, w.ts, outputs["embedding"][0], active)
        self._tell("window", s.event(w, score, d))
        if s.state != before:
            self.publish_state(s)

    def status_lines(self) -> list[str]:
        lines = [line for sink in self.sinks if (line := sink.status_line())]  # broker and outbox first
        return lines + [s.status_line() for s in self.streams.values()]

    def run(self) -> int:
        self.start()
        try:
            while not self.stop_event.is_set():
                if self.signalled is not None:
                    log.info("received %s: stopping after the current windows", self.signalled)
                    self.stop_event.set()
                    break
                if self.reload_signalled or self.reload_requested.is_set():
                    if self.reload_signalled:
                        log.info("received SIGHUP: reloading banks and config")
                    self.reload_signalled = False
                    self.reload_requested.clear()
                    self.faults.guard("reload")(reload_agent)(self)  # SIGHUP (reload.py); a bad edit keeps the running
                if self.step() == 0:
                    if self.done():
                        self._finish_replays()
                        break
                    self.commands.idle(self.idle_seconds())
        finally:
            self._tell("stopping", self)
            self._shut_down()
        unscored = [u for s in self.streams.values() if (u := unscored_replay(s))]
        if unscored:
            raise ReplayError("nothing was scored for " + "; ".join(unscored))
        return 0

    def _shut_down(self) -> None:
        for s in self.streams.values():
            s.source.stop()
        try:
            self.step()  # score the windows that were already captured
        except Exception:  # noqa: BLE001 - stopping must go on
            log.exception("scoring the last windows failed")
        self._close_open_alarms("agent stopped")
        if self.evidence is not None:
            self.evidence.close()  # what is held of alarms still waiting for their post-roll
        for s in self.streams.values():
            if s.learner is not None:
                s.learner.save()  # the next start resumes the period
        self._tell("close")  # in order: the last one may release the state dir

    def _finish_replays(self) -> None:
        """End of recorded input: close open alarms (complete events offline), summarise each machine."""
        self._close_open_alarms("end of recording", name_recording=True)
        for s in self.streams.values():
            for line in (s.tally.summary(s.machine) if s.recordings.applied else None, replay_summary(s)):
                if line:
                    log.info("%s", line)


def stream_state(s: MachineStream, model_info: dict, reason: str = "", severity=None) -> dict:
    """A machine's retained state payload, as it is now (``severity``: machine -> (level, why))."""
    b = s.bank
    return events.state_payload(
        s.machine,
        s.state,
        s.clock(),
        s.last_score,
        s.threshold,
        model_info,
        b.version if b else None,
        reason or s.reason,
        s.lifecycle,
        s.source.input_info(),
        severity(s.machine) if severity is not None else None,
    )
