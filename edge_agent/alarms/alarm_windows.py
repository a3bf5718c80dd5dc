"""The embeddings of each recent alarm's windows, kept so that an operator can say "that was
normal" (the ``normal`` command) and the agent can learn them: the windows of the alarm's running
median before its start, and every window while it lasts. Bounded: ``MAX_WINDOWS`` per alarm, the
last ``MAX_ALARMS`` alarms per machine (with the default model's 1024-d embeddings 1.2 MB per
machine at most)."""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import Optional

import numpy as np

MAX_WINDOWS = 60
MAX_ALARMS = 5
PRE_WINDOWS = 10


class AlarmWindows:
    def __init__(self):
        self._recent: dict[str, deque] = {}  # machine -> (ts, embedding) of the last windows
        self._alarms: dict[str, OrderedDict[str, list[np.ndarray]]] = {}

    def window(self, machine: str, ts: float, embedding: np.ndarray, alarm_id: Optional[str]) -> None:
        """A scored window; ``alarm_id`` while an alarm is active."""
        recent = self._recent.setdefault(machine, deque(maxlen=PRE_WINDOWS))
        emb = np.array(embedding, np.float32, copy=True)
        recent.append((ts, emb))
        if alarm_id is None:
            return
        book = self._alarms.setdefault(machine, OrderedDict())
        kept = book.get(alarm_id)
        if kept is None:  # the start: the windows of the running median and the k of n came just before
            kept = book[alarm_id] = [e for _, e in recent]
            while len(book) > MAX_ALARMS:
                book.popitem(last=False)
        elif len(kept) < MAX_WINDOWS:
            kept.append(emb)

    def of(self, machine: str, alarm_id: Optional[str] = None) -> tuple[Optional[str], Optional[np.ndarray]]:
        """(alarm id, its windows' embeddings): ``alarm_id``'s, or the latest alarm's."""
        book = self._alarms.get(machine) or {}
        if alarm_id is None:
            alarm_id = next(reversed(book), None) if book else None
        kept = book.get(alarm_id) if alarm_id else None
        return alarm_id, (np.stack(kept) if kept else None)

    def forget(self, machine: str, alarm_id: str) -> None:
        (self._alarms.get(machine) or {}).pop(alarm_id, None)
