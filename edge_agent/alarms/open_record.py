"""Open alarms on disk, so that none stays open for ever.

The record is written before an alarm's ``start`` goes to any sink and removed after its ``end``
has gone, so an agent that dies in between (SIGKILL, power loss) finds it at the next start and
closes it explicitly (reason ``agent restarted``); a new alarm is raised if the machine still
sounds wrong. One small JSON file per machine under ``<state_dir>/alarms/``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

from edge_agent.scoring.detector import Decision
from edge_agent.state.atomic import atomic_write
from edge_agent.state.paths import open_alarms_dir

log = logging.getLogger("edge_agent.alarms.dispatch")


@dataclass
class OpenAlarm:
    decision: Decision  # the last start/update of the alarm
    threshold: float
    bank_version: Optional[int]
    model: dict

    def to_json(self) -> str:
        return json.dumps(
            {
                "decision": asdict(self.decision),
                "threshold": self.threshold,
                "bank_version": self.bank_version,
                "model": self.model,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> "OpenAlarm":
        d = json.loads(text)
        return cls(Decision(**d["decision"]), float(d["threshold"]), d["bank_version"], d["model"])


class OpenAlarmStore:
    def __init__(self, state_dir: Path):
        self.dir = open_alarms_dir(state_dir)

    def _path(self, machine: str) -> Path:
        return self.dir / f"{machine}.json"

    def save(self, machine: str, alarm: OpenAlarm) -> None:
        with atomic_write(self._path(machine), "w") as f:
            f.write(alarm.to_json())

    def load(self, machine: str) -> Optional[OpenAlarm]:
        p = self._path(machine)
        if not p.is_file():
            return None
        try:
            return OpenAlarm.from_json(p.read_text())
        except (ValueError, KeyError, TypeError) as e:
            log.error("%s: unreadable open-alarm record %s (%s); removing it", machine, p, e)
            self.clear(machine)
            return None

    def clear(self, machine: str) -> None:
        self._path(machine).unlink(missing_ok=True)
