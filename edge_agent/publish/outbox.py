"""Durable outbox: every event is written here first and removed only after the broker's PUBACK.

SQLite in WAL mode in the state directory, so events survive a broker outage, an agent restart and
a SIGKILL. Rows are delivered oldest first (so per machine in order), at least once; consumers
de-duplicate by ``event_id``. The outbox is bounded in rows and age; when it must drop, it drops
score telemetry first, then state updates, and alarms last, and it counts and logs every drop.

When the disk cannot take a row (full, read-only, failing), the row is kept in memory instead and
sent like the others: an alarm is delayed by nothing and lost only if the agent stops before the
broker has it.

Rows store the machine and the kind, not the topic: topics are computed when the row is sent, so
events written while no broker was configured are delivered once one is.
"""

from __future__ import annotations

import heapq
import json
import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Optional

from edge_agent import strict_json
from edge_agent.errors import UserError

log = logging.getLogger("edge_agent.outbox")


class OutboxError(UserError):
    """The outbox file cannot be opened (exit code 2, with what to do)."""


KINDS = ("alarm", "state", "score", "feedback")
DROP_ORDER = ("score", "state", "feedback", "alarm")  # what goes first when the outbox is full


@dataclass(frozen=True)
class Row:
    id: int
    machine: str
    kind: str
    payload: str  # JSON text
    created: float

    @property
    def data(self) -> dict:
        return json.loads(self.payload)


class Outbox:
    """Rows in SQLite; counts per kind are kept in memory, so that a write costs the same at 0 and at
    100k rows (no ``COUNT(*)``, no scan by age on the scoring thread)."""

    def __init__(self, path: Path, max_rows: int = 100_000, max_age_seconds: float = 7 * 86400):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_rows, self.max_age = max_rows, max_age_seconds
        self._lock = threading.Lock()
        self.dropped: dict[str, int] = {k: 0 for k in KINDS}
        self.written = 0
        self.delivered = 0
        # One count at open (the only full scan); kept exact afterwards from each statement's rows.
        self._count: dict[str, int] = {k: 0 for k in KINDS}
        try:
            self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")  # an acknowledged write survives power loss
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, machine TEXT NOT NULL, "
                "kind TEXT NOT NULL, payload TEXT NOT NULL, created REAL NOT NULL)"
            )
            self._db.execute("CREATE INDEX IF NOT EXISTS outbox_kind ON outbox(kind, id)")
            for kind, n in self._db.execute("SELECT kind, COUNT(*) FROM outbox GROUP BY kind"):
                self._count[kind] = int(n)
            # Ids come from this counter, so that rows kept in memory sort among those on disk;
            # AUTOINCREMENT's sequence holds the largest id the table ever had.
            seq = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone()
        except sqlite3.Error as e:
            raise OutboxError(
                f"outbox {self.path}: cannot open it ({e}); free disk space, or move the file aside if it is "
                "damaged (its undelivered events are then lost)"
            ) from None
        self._next_id = (seq[0] if seq else 0) + 1
        self._memory: dict[int, Row] = {}  # rows the disk could not take, in id order
        self._disk_failing = False
        # Rows older than max_age are pruned at most once a minute (sooner for very short ages).
        self._age_check_every = min(60.0, max_age_seconds / 10)
        self._next_age_check = 0.0

    def journal_mode(self) -> str:
        return self._db.execute("PRAGMA journal_mode").fetchone()[0]

    def put(self, machine: str, kind: str, payload: dict) -> int:
        if kind not in KINDS:
            raise ValueError(f"unknown outbox kind {kind!r}")
        text = strict_json.dumps(payload, separators=(",", ":"))
        with self._lock:
            row = Row(self._next_id, machine, kind, text, time.time())
            self._next_id += 1
            try:
                self._db.execute(
                    "INSERT INTO outbox (id, machine, kind, payload, created) VALUES (?, ?, ?, ?, ?)",
                    (row.id, row.machine, row.kind, row.payload, row.created),
                )
            except sqlite3.Error as e:
                self._memory[row.id] = row
                if not self._disk_failing:
                    self._disk_failing = True
                    log.error(
                        "outbox: cannot write to %s (%s); keeping events in memory and sending them as usual, "
                        "but those not yet delivered are lost if the agent stops: free disk space",
                        self.path,
                        e,
                    )
            else:
                if self._disk_failing:
                    self._disk_failing = False
                    log.warning("outbox: %s takes events again (%d still held in memory)", self.path, len(self._memory))
            self.written += 1
            self._count[kind] += 1
            self._enforce_bounds()
            return row.id

    @property
    def in_memory(self) -> int:
        """Rows the disk could not take, waiting in memory for the broker."""
        return len(self._memory)

    def _enforce_bounds(self) -> None:
        now = time.monotonic()
        if now >= self._next_age_check:
            self._next_age_check = now + self._age_check_every
            self._drop_old(time.time() - self.max_age)
        for kind in DROP_ORDER:
            excess = sum(self._count.values()) - self.max_rows
            if excess <= 0:
                break
            n = self._delete(
                "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE kind = ? ORDER BY id LIMIT ?) RETURNING "
                "kind",
                (kind, excess),
            )
            for row_id in [i for i, r in self._memory.items() if r.kind == kind][: excess - n]:
                del self._memory[row_id]
                self._count[kind] -= 1
                n += 1
            if n:
                self._count_drop(kind, n, f"outbox full ({self.max_rows} rows)")

    def _drop_old(self, cutoff: float) -> None:
        # Rows are written in time order, so the oldest row says whether anything is too old (an
        # index lookup, not a scan); only then are the old rows of each kind deleted.
        oldest = self._db.execute("SELECT created FROM outbox ORDER BY id LIMIT 1").fetchone()
        if oldest is None or oldest[0] >= cutoff:
            return
        for kind in DROP_ORDER:
            n = self._delete("DELETE FROM outbox WHERE kind = ? AND created < ? RETURNING kind", (kind, cutoff))
            if n:
                self._count_drop(kind, n, f"older than {self.max_age / 86400:g} days")

    def _delete(self, sql: str, args: tuple) -> int:
        """Run a ``DELETE ... RETURNING kind`` and keep the counts; returns the number of rows deleted
        (0 when the disk refuses: the rows stay, and are sent again after a restart at worst)."""
        try:
            kinds = [k for (k,) in self._db.execute(sql, args).fetchall()]
        except sqlite3.Error as e:
            log.warning("outbox: cannot delete from %s (%s)", self.path, e)
            return 0
        for k in kinds:
            self._count[k] -= 1
        return len(kinds)

    def _count_drop(self, kind: str, n: int, why: str) -> None:
        self.dropped[kind] += n
        (log.error if kind == "alarm" else log.warning)("outbox: dropped %d oldest %s event(s): %s", n, kind, why)

    def pending(self, after_id: int = 0, limit: int = 100) -> list[Row]:
        with self._lock:
            try:
                rows = [
                    Row(*r)
                    for r in self._db.execute(
                        "SELECT id, machine, kind, payload, created FROM outbox WHERE id > ? ORDER BY id LIMIT ?",
                        (after_id, limit),
                    ).fetchall()
                ]
            except sqlite3.Error as e:  # a failing disk: what memory holds still goes out
                log.warning("outbox: cannot read %s (%s)", self.path, e)
                rows = []
            if self._memory:
                # Memory holds rows in id order (dict order is insertion order, ids only grow), so the
                # first ``limit`` of them after ``after_id`` are enough: no sort of the whole backlog
                # at every call while the disk fails.
                held = islice((r for i, r in self._memory.items() if i > after_id), limit)
                rows = list(islice(heapq.merge(rows, held, key=lambda r: r.id), limit))
        return rows

    def ack(self, row_id: int) -> None:
        with self._lock:
            if (row := self._memory.pop(row_id, None)) is not None:
                self._count[row.kind] -= 1
                self.delivered += 1
            elif self._delete("DELETE FROM outbox WHERE id = ? RETURNING kind", (row_id,)):
                self.delivered += 1

    def depth(self, kind: Optional[str] = None) -> int:
        with self._lock:
            return sum(self._count.values()) if kind is None else self._count.get(kind, 0)

    def close(self) -> None:
        with self._lock:
            if self._memory:
                alarms = sum(r.kind == "alarm" for r in self._memory.values())
                log.error(
                    "outbox: %d undelivered event(s) (%d alarm(s)) the disk could not take are lost with this stop",
                    len(self._memory),
                    alarms,
                )
            self._db.close()
