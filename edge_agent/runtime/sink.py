"""The one way out of the agent: every consumer of what it does is a ``Sink``.

The agent calls each sink, in the order given, with its events: alarm and state payloads
(``handle``, the dicts MQTT carries), every scored window (``window``), every engine batch
(``batch``) and its own life (``ready``, ``tick``, ``stopping``, ``close``). A sink overrides what it
uses; the base class ignores the rest. MQTT, the outbox alone, the console, the status page,
health, metrics, the demo and the benchmarks are sinks; nothing else hooks into the agent.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Protocol

from edge_agent.runtime.stream_records import WindowEvent

if TYPE_CHECKING:
    from edge_agent.runtime.stream import MachineStream


class AgentView(Protocol):
    """What the life-cycle calls show of the agent (``runtime.agent.Agent`` is one)."""

    streams: dict[str, "MachineStream"]
    sinks: list["Sink"]

    def publish_state(self, s: "MachineStream", reason: str = "") -> None: ...


class Sink:
    def handle(self, kind: str, machine: str, payload: dict) -> None:
        """An ``alarm`` or ``state`` event (publish/events.py builds the payloads)."""

    def window(self, ev: WindowEvent) -> None:
        """After each scored window, on the agent's thread: keep it short."""

    def batch(self, windows: int, seconds: float) -> None:
        """After each engine call: how many windows and how long the front end and engine took."""

    def ready(self, agent: AgentView) -> None:
        """Banks loaded, engine warm, sources started."""

    def tick(self, agent: AgentView) -> None:
        """After every step of the loop (at least every quarter second)."""

    def stopping(self, agent: AgentView) -> None:
        """The agent is about to stop its sources and flush."""

    def status_line(self) -> Optional[str]:
        """A line for the periodic status log and systemd's STATUS (None: nothing to say)."""
        return None

    def close(self) -> None:
        """After the agent's last event; sinks are closed in order."""
