"""Operator commands: acknowledge, shelve, unshelve, learn, threshold.

They arrive as JSON from MQTT (``<prefix>/<node>/<machine>/command``, when ``mqtt.commands`` is
on) or from the status page, on those threads; ``CommandDesk`` queues them and the agent's loop
runs them between two steps (``run_pending``), so a command never races the scoring of a window.
Each gets one result: ``ok`` with a message, or an error that names what is wrong and changes
nothing (unknown command, malformed JSON, a value out of range, an unknown machine, a command that
does not apply, such as acknowledging when there is no alarm).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Callable, Literal, Optional, Protocol, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from edge_agent import strict_json
from edge_agent.alarms.alarm_windows import MAX_ALARMS
from edge_agent.alarms.lifecycle import LifecycleError
from edge_agent.config import MIN_LEARN_SECONDS
from edge_agent.publish import events
from edge_agent.runtime.learn_request import learnable_score, request_learning

if TYPE_CHECKING:
    from edge_agent.alarms.dispatch import Alarms
    from edge_agent.config import Config
    from edge_agent.faults import Faults
    from edge_agent.runtime.stream import MachineStream

log = logging.getLogger("edge_agent.runtime.commands")


class CommandTarget(Protocol):
    """What a command may touch: the agent, seen from here (``runtime.agent.Agent`` is one)."""

    cfg: "Config"
    streams: dict[str, "MachineStream"]
    alarms: "Alarms"
    faults: "Faults"
    learner_factory: Optional[Callable]
    feedback: Any
    alarm_windows: Any

    def emit(self, kind: str, machine: str, payload: dict) -> None: ...

    def state_of(self, s: "MachineStream", reason: str = "") -> dict: ...

    def publish_state(self, s: "MachineStream", reason: str = "") -> None: ...

    def attach_learner(self, s: "MachineStream") -> None: ...


MAX_PAYLOAD = 4096
MAX_SHELVE_MINUTES = 7 * 24 * 60  # a week; shelve again for longer
MAX_LEARN_HOURS = 90 * 24
SCALE_RANGE = (0.25, 4.0)
COMMANDS = ("acknowledge", "shelve", "unshelve", "learn", "threshold", "normal", "undo")
EXAMPLE = '{"command": "acknowledge"}'


class _Command(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    id: Optional[str] = Field(default=None, max_length=100)  # echoed in the result, to match answers


class Acknowledge(_Command):
    command: Literal["acknowledge"]
    alarm_id: Optional[str] = Field(default=None, max_length=64)  # only this alarm (safer from dashboards)


class Shelve(_Command):
    command: Literal["shelve"]
    minutes: float = Field(gt=0, le=MAX_SHELVE_MINUTES)
    note: str = Field(default="", max_length=200)


class Unshelve(_Command):
    command: Literal["unshelve"]


class Learn(_Command):
    command: Literal["learn"]
    # at least a minute: shorter gives the threshold fit too little audio (config.learn_seconds)
    hours: float = Field(ge=MIN_LEARN_SECONDS / 3600, le=MAX_LEARN_HOURS)


class Threshold(_Command):
    command: Literal["threshold"]
    scale: float = Field(ge=SCALE_RANGE[0], le=SCALE_RANGE[1])  # times the calibrated threshold; 1 restores it


class Normal(_Command):
    """That alarm was the machine's normal sound: its windows join the bank (the latest alarm
    when ``alarm_id`` is left out)."""

    command: Literal["normal"]
    alarm_id: Optional[str] = Field(default=None, pattern=r"^[0-9a-f]{4,32}$")
    note: str = Field(default="", max_length=200)


class Undo(_Command):
    """Take the last "normal" back (``feedback_id``: say which, to be sure it is that one)."""

    command: Literal["undo"]
    feedback_id: Optional[str] = Field(default=None, pattern=r"^[0-9a-f]{4,32}$")


Command = Annotated[
    Union[Acknowledge, Shelve, Unshelve, Learn, Threshold, Normal, Undo], Field(discriminator="command")
]
_ADAPTER = TypeAdapter(Command)


class CommandError(ValueError):
    pass


def parse_command(raw: Union[bytes, str]) -> Command:
    """A command from its JSON text; ``CommandError`` says what is wrong and what to send. The size
    and nesting are bounded before anything is parsed (``strict_json``)."""
    try:
        data = strict_json.loads(raw, MAX_PAYLOAD)
    except strict_json.UntrustedJSONError as e:
        raise CommandError(f"the command is refused: {e}; send JSON such as {EXAMPLE}") from None
    if not isinstance(data, dict):
        raise CommandError(f"the command must be a JSON object such as {EXAMPLE}")
    name = data.get("command")
    if name not in COMMANDS:
        what = "no 'command' key" if name is None else f"unknown command {str(name)[:40]!r}"
        raise CommandError(f"{what}: use one of {', '.join(COMMANDS)}")
    try:
        return _ADAPTER.validate_python(data)
    except ValidationError as e:
        parts = []
        for err in e.errors():
            loc = ".".join(str(x) for x in err["loc"][1:])[:60]  # [0] is the command's own tag
            parts.append(f"{loc}: unknown key" if err["type"] == "extra_forbidden" else f"{loc}: {err['msg']}")
        raise CommandError(f"{name}: " + "; ".join(parts[:5])) from None


def request_id_of(raw: Union[bytes, str]) -> Optional[str]:
    """The request's ``id`` even when the rest of it is wrong, so that an error can be matched too;
    None for anything that is not a bounded JSON object with a short string ``id``."""
    try:
        data = strict_json.loads(raw, MAX_PAYLOAD)
    except strict_json.UntrustedJSONError:
        return None
    rid = data.get("id") if isinstance(data, dict) else None
    return rid if isinstance(rid, str) and len(rid) <= 100 else None


@dataclass
class _Pending:
    machine: str
    raw: Union[bytes, str]
    source: str
    reply: Callable[[dict], None]


class CommandDesk:
    """Commands from any thread, run on the agent's thread."""

    def __init__(self, max_pending: int = 100):
        self._q: queue.Queue[_Pending] = queue.Queue(max_pending)
        self._wakeup = threading.Event()  # ends the agent loop's idle wait: a command, a stop

    def wake(self) -> None:
        self._wakeup.set()

    def idle(self, seconds: float) -> None:
        """The agent loop's wait for more audio, cut short by a command or a stop."""
        self._wakeup.wait(seconds)
        self._wakeup.clear()

    def submit(
        self,
        machine: str,
        raw: Union[bytes, str],
        source: str,
        reply: Callable[[dict], None],
        retained: bool = False,
    ) -> None:
        """Queue a command; ``reply`` gets its result (on the agent's thread, or here when refused at once)."""
        if retained:  # an MQTT message kept by the broker: it would run again at every start of the agent
            reply(
                _failure(
                    machine,
                    raw,
                    "retained commands are ignored (they would run again at every restart): publish without the "
                    "retain flag, and clear the retained one with an empty retained message on the command topic",
                )
            )
            return
        try:
            self._q.put_nowait(_Pending(machine, raw, source, reply))
            self.wake()
        except queue.Full:
            reply(_failure(machine, raw, "too many commands waiting; try again shortly"))

    def call(self, machine: str, raw: Union[bytes, str], source: str, timeout: float = 10.0) -> dict:
        """Submit and wait for the result (the status page)."""
        done, box = threading.Event(), []

        def reply(result: dict) -> None:
            box.append(result)
            done.set()

        self.submit(machine, raw, source, reply)
        if not done.wait(timeout):
            return _failure(machine, raw, "the agent did not answer in time (is it stopping?)")
        return box[0]

    def run_pending(self, agent: CommandTarget) -> int:
        n = 0
        while True:
            try:
                p = self._q.get_nowait()
            except queue.Empty:
                return n
            n += 1
            try:
                result = execute(agent, p.machine, p.raw, p.source)
            except Exception as e:  # noqa: BLE001 - a command must never stop monitoring
                agent.faults.record(f"command from {p.source}", e)
                result = _failure(
                    p.machine, p.raw, f"the command failed inside the agent ({type(e).__name__}); see its log"
                )
            try:
                p.reply(result)
            except Exception:  # noqa: BLE001 - a broken reply path must not stop the agent
                log.exception("could not deliver the result of a command to %s", p.source)


def _failure(machine: str, raw, why: str) -> dict:
    return events.command_result_payload(machine, time.time(), None, request_id_of(raw), False, why)


def execute(agent: CommandTarget, machine: str, raw: Union[bytes, str], source: str) -> dict:
    """Run one command against the agent (on its thread) and return its result payload."""
    rid = request_id_of(raw)
    s = agent.streams.get(machine)
    if s is None:
        known = ", ".join(sorted(agent.streams))
        return _result(None, machine, None, rid, False, f"unknown machine {machine!r}: this agent has {known}")
    try:
        cmd = parse_command(raw)
    except CommandError as e:
        log.warning("%s: command from %s refused: %s", machine, source, e)
        return _result(agent, machine, None, rid, False, str(e))
    try:
        text = _apply(agent, s, cmd, source)
    except (CommandError, LifecycleError) as e:
        log.warning("%s: %s from %s refused: %s", machine, cmd.command, source, e)
        return _result(agent, machine, cmd.command, rid, False, str(e))
    log.info("%s: %s from %s: %s", machine, cmd.command, source, text)
    agent.publish_state(s, f"{cmd.command} by {source}: {text}")
    return _result(agent, machine, cmd.command, rid, True, text)


def _result(
    agent: Optional[CommandTarget], machine: str, command: Optional[str], rid: Optional[str], ok: bool, text: str
) -> dict[str, Any]:
    s = agent.streams[machine] if agent is not None else None
    state = agent.state_of(s) if s is not None else None
    ts = s.clock() if s is not None else time.time()
    return events.command_result_payload(machine, ts, command, rid, ok, text, state)


def _apply(agent: CommandTarget, s: "MachineStream", cmd, source: str) -> str:
    alarms = agent.alarms
    if isinstance(cmd, Acknowledge):
        return alarms.acknowledge(s, source, cmd.alarm_id)
    if isinstance(cmd, Shelve):
        return alarms.shelve(s, cmd.minutes, source, cmd.note)
    if isinstance(cmd, Unshelve):
        alarms.unshelve(s, f"unshelved by {source}")
        return "unshelved: monitoring again"
    if isinstance(cmd, Threshold):
        if s.bank is None or s.bank.threshold is None:
            raise CommandError("the machine has no threshold yet: calibrate it first (edge-agent calibrate)")
        return alarms.scale_threshold(s, cmd.scale, source)
    if isinstance(cmd, Learn):
        if agent.learner_factory is None:
            raise CommandError("this agent was started without the learning period (edge-agent run has it)")
        alarms.end(s, s.clock(), f"learning started by {source}")
        head = learnable_score(s.bank.info.score) if s.bank is not None else None
        request_learning(agent.cfg.resolved_state_dir(), s.machine, cmd.hours * 3600.0, head)
        s.attach_learner(None)  # a period under way starts afresh
        agent.attach_learner(s)
        if s.learner is None:
            raise CommandError("the learning request was written but no learner took it; see the agent's log")
        return f"learning for {cmd.hours:g} h: no alarms until it is over"
    if isinstance(cmd, (Normal, Undo)):
        return _feedback(agent, s, cmd, source)
    raise CommandError(f"unknown command {cmd.command!r}")  # unreachable: parse_command checked it


def _feedback(agent: CommandTarget, s: "MachineStream", cmd, source: str) -> str:
    """ "That was normal" and its undo: the new bank comes into force at once, and a ``feedback``
    event says what changed (who, when, the threshold before and after)."""
    if agent.feedback is None:
        raise CommandError("this agent was started without feedback (edge-agent run has it)")
    if s.bank is None:
        raise CommandError("the machine has no bank yet: calibrate it first")
    try:
        if isinstance(cmd, Normal):
            alarm_id, emb = agent.alarm_windows.of(s.machine, cmd.alarm_id)
            if emb is None:
                which = f"alarm {cmd.alarm_id}" if cmd.alarm_id else "any alarm"
                raise CommandError(
                    f"no windows kept for {which} (the agent keeps the last {MAX_ALARMS} alarms of this run)"
                )
            if s.detector is not None and s.detector.alarm_id == alarm_id:
                agent.alarms.end(s, s.clock(), f"marked normal by {source}")
            bank, info = agent.feedback.normal(s.machine, s.bank, alarm_id, emb, source, cmd.note)
            agent.alarm_windows.forget(s.machine, alarm_id)
        else:
            bank, info = agent.feedback.undo(s.machine, s.bank, cmd.feedback_id, source)
    except ValueError as e:
        raise CommandError(str(e)) from None
    s.set_bank(bank)
    agent.emit("feedback", s.machine, events.feedback_payload(s.machine, s.clock(), info))
    return info["message"]
