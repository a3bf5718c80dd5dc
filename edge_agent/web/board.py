"""What the status page shows, kept as the agent runs: per machine the last hour of window scores
(with the threshold in force and the level), its latest retained state, and its recent alarms.

The page hands it the agent's state and alarm payloads (the same ones MQTT gets) and every scored
window; the agent's thread writes, the web server's threads read, under one lock. Memory is
bounded: an hour of points and ``MAX_ALARMS`` alarms per machine.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from typing import Optional

from edge_agent.runtime.sink import WindowEvent

HISTORY_SECONDS = 3600.0
MAX_ALARMS = 20


class StatusBoard:
    def __init__(self, machines: list[str], hop_seconds: dict[str, float]):
        self._lock = threading.Lock()
        # (ts, score, threshold, level_dbfs) per scored window; an hour of them at the machine's hop
        self.points = {m: deque(maxlen=int(HISTORY_SECONDS / max(0.05, hop_seconds[m])) + 10) for m in machines}
        self.states: dict[str, dict] = {}
        self.alarms: dict[str, OrderedDict[str, dict]] = {m: OrderedDict() for m in machines}

    # -- writers (the agent's thread) --------------------------------------------------------------
    def handle(self, kind: str, machine: str, payload: dict) -> None:
        with self._lock:
            if kind == "state":
                self.states[machine] = payload
            elif kind == "alarm" and machine in self.alarms:
                book = self.alarms[machine]
                a = book.pop(payload["alarm_id"], {})
                a.update(
                    {k: payload.get(k) for k in ("alarm_id", "event", "started_at", "peak_score", "threshold", "score")}
                )
                if payload["event"] == "end":
                    a.update({"ended_at": payload["ended_at"], "reason": payload["reason"]})
                if payload.get("evidence"):
                    a["evidence"] = payload["evidence"]
                if payload.get("explanation"):  # on the start: what changed (bands.py)
                    a["explanation"] = payload["explanation"]
                book[payload["alarm_id"]] = a  # newest last
                while len(book) > MAX_ALARMS:
                    book.popitem(last=False)

    def window(self, ev: WindowEvent) -> None:
        with self._lock:
            q = self.points.get(ev.machine)
            if q is not None:
                q.append((ev.ts, ev.score, ev.threshold, ev.level_dbfs))

    # -- readers (the web server's threads) --------------------------------------------------------
    def scores(self, machine: str, after: float = float("-inf")) -> list[list]:
        with self._lock:
            pts = list(self.points.get(machine, ()))
        if not pts:
            return []
        horizon = pts[-1][0] - HISTORY_SECONDS
        # compared as sent (ms): a client's ``after`` is a rounded time, and must not return its own point
        return [
            [round(t, 3), rounded(s), rounded(th), rounded(lv, 1)]
            for t, s, th, lv in pts
            if round(t, 3) > after and t >= horizon
        ]

    def recent_alarms(self, machine: str) -> list[dict]:
        with self._lock:
            out = [dict(a) for a in reversed(self.alarms.get(machine, {}).values())]  # newest first
        return out

    def state(self, machine: str) -> Optional[dict]:
        with self._lock:
            return self.states.get(machine)


def rounded(x, nd: int = 6):
    return None if x is None else round(float(x), nd)
