"""Sinks for the agent's events (``runtime/sink.py``): the console, and the outbox alone when no
broker is configured (``mqtt.MQTTPublisher`` is the third)."""

from __future__ import annotations

import sys

from edge_agent.config import Config
from edge_agent.publish import events
from edge_agent.publish.outbox import Outbox
from edge_agent.runtime.sink import Sink, WindowEvent
from edge_agent.scoring.bands import describe as describe_explanation
from edge_agent.state.paths import outbox_path


class ConsoleSink(Sink):
    """Alarm events and state changes as one line each on stdout; with ``scores`` (``run --scores``),
    every window's score too."""

    def __init__(self, out=None, scores: bool = False):
        self.out = out or sys.stdout
        self.scores = scores

    def handle(self, kind: str, machine: str, p: dict) -> None:
        if kind == "alarm":
            if p["event"] == "end":
                detail = f"duration {p['duration_seconds']:.1f} s, peak {p['peak_score']:.4f} ({p['reason']})"
            else:
                rel = ">" if p["score"] > p["threshold"] else "<="
                detail = f"score {p['score']:.4f} {rel} threshold {p['threshold']:.4f}, peak {p['peak_score']:.4f}"
            if p.get("explanation"):
                detail += f"; changed: {describe_explanation(p['explanation'])}"
            ev = p.get("evidence") or {}
            if ev.get("error"):
                detail += f"; evidence {ev['error']}"
            elif p["event"] == "start" and ev:
                detail += f"; evidence {ev['wav']} (+ .png)"
            line = f"{p['ts']} {machine}: ALARM {p['event'].upper()} {p['alarm_id'][:8]} {detail}"
        elif kind == "state":
            line = f"{p['ts']} {machine}: state {p['state']}" + (f" ({p['reason']})" if p.get("reason") else "")
        elif kind == "feedback":
            line = f"{p['ts']} {machine}: FEEDBACK {p['action'].upper()} by {p['by']}: {p['message']}"
        else:
            return
        print(line, file=self.out, flush=True)

    def window(self, ev: WindowEvent) -> None:
        if not self.scores:
            return
        thr = ev.threshold  # in force: the calibrated one times the operator's scale
        print(
            f"{events.iso(ev.ts)} {ev.machine}: score {ev.score:.4f} {'>' if ev.score > thr else '<='} threshold "
            f"{thr:.4f} level {ev.level_dbfs:.1f} dBFS {ev.state}",
            file=self.out,
            flush=True,
        )


def open_outbox(cfg: Config) -> Outbox:
    return Outbox(outbox_path(cfg.resolved_state_dir()), cfg.outbox.max_rows, cfg.outbox.max_age_days * 86400)


class OutboxOnlySink(Sink):
    """Without a broker: alarms and states are kept in the outbox, to be delivered once one is configured."""

    def __init__(self, outbox: Outbox):
        self.outbox = outbox

    def handle(self, kind: str, machine: str, payload: dict) -> None:
        if kind in ("alarm", "state", "feedback"):
            self.outbox.put(machine, kind, payload)

    def status_line(self) -> str:
        return f"mqtt: not configured, outbox {self.outbox.depth()} kept for a broker"

    def close(self) -> None:
        self.outbox.close()
