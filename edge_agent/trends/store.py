"""Hourly statistics per machine in SQLite under the state directory (``trends.sqlite``): score
median and 95th percentile, the threshold in force, the median level, alarms started, and the
seconds spent in each state. Rows older than ``KEEP_DAYS`` are deleted, so the file stays bounded
(a machine writes 24 small rows a day: 120 days of 64 machines is about 185,000 rows)."""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

from edge_agent.errors import UserError

log = logging.getLogger("edge_agent.trends")

KEEP_DAYS = 120  # at least the 90 days a user looks back over, with room for a quarter's report
HOUR = 3600.0


class TrendsError(UserError):
    """The trends file cannot be opened or read (exit code 2, with what to do)."""


@dataclass
class Hour:
    machine: str
    hour: int  # unix seconds at the start of the hour (UTC)
    windows: int = 0
    score_median: Optional[float] = None
    score_p95: Optional[float] = None
    threshold: Optional[float] = None
    level_median: Optional[float] = None
    alarms: int = 0
    seconds: dict[str, float] = field(default_factory=dict)  # state -> seconds in it


SCHEMA = """
CREATE TABLE IF NOT EXISTS hourly (
    machine TEXT NOT NULL,
    hour INTEGER NOT NULL,
    windows INTEGER NOT NULL,
    score_median REAL,
    score_p95 REAL,
    threshold REAL,
    level_median REAL,
    alarms INTEGER NOT NULL,
    seconds TEXT NOT NULL,
    PRIMARY KEY (machine, hour)
)
"""


class TrendStore:
    def __init__(self, path: Path, keep_days: float = KEEP_DAYS):
        self.path, self.keep_seconds = Path(path), keep_days * 86400.0
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(self.path), check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(SCHEMA)
            self._db.commit()
        except sqlite3.Error as e:
            raise TrendsError(f"trends file {self.path}: {e}; move it aside and the agent starts a new one") from None

    def put(self, h: Hour) -> None:
        """Write (or replace) one machine's hour; rows past the retention go at the same time."""
        row = asdict(h)
        row["seconds"] = json.dumps({k: round(v, 1) for k, v in h.seconds.items()})
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO hourly VALUES (:machine, :hour, :windows, :score_median, :score_p95, "
                ":threshold, :level_median, :alarms, :seconds)",
                row,
            )
            self._db.execute("DELETE FROM hourly WHERE hour < ?", (int(h.hour - self.keep_seconds),))
            self._db.commit()

    def hours(self, machine: str, since: float = 0.0, until: float = float("inf")) -> list[Hour]:
        with self._lock:
            cur = self._db.execute(
                "SELECT machine, hour, windows, score_median, score_p95, threshold, level_median, alarms, seconds "
                "FROM hourly WHERE machine = ? AND hour >= ? AND hour < ? ORDER BY hour",
                (machine, int(since), int(min(until, 2**62))),
            )
            rows = cur.fetchall()
        return [Hour(*r[:8], seconds=json.loads(r[8])) for r in rows]

    def machines(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT DISTINCT machine FROM hourly ORDER BY machine")]

    def close(self) -> None:
        with self._lock:
            self._db.close()


def open_existing(path: Path) -> TrendStore:
    """For ``report``: the file must be there (a new one would only say there is nothing)."""
    if not Path(path).is_file():
        raise TrendsError(f"no trends yet: {path} does not exist (the agent writes it as it runs, an hour at a time)")
    return TrendStore(path)
