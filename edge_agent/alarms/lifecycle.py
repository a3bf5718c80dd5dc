"""The alarm life cycle of ISA-18.2, in small, per machine, and what an operator set on it.

States of a machine's latest alarm:

- ``normal``: no alarm, or the last one has ended and was acknowledged;
- ``unacknowledged``: an alarm is active and nobody has said they have seen it;
- ``acknowledged``: active, and acknowledged;
- ``returned_unacknowledged``: the sound went back to normal before anyone acknowledged it
  (acknowledging it then returns the machine to ``normal``).

A shelf suppresses a machine's alarms until it expires (maintenance); the threshold scale
multiplies the calibrated threshold (1.0: as calibrated). Both are operator settings and, like the
acknowledgement, survive a restart: one JSON file per machine under ``<state_dir>/operator/``.
The transitions are pure methods; they raise ``LifecycleError`` with a message for the operator
when a command does not apply (acknowledging with no alarm to acknowledge, unshelving what is not
shelved) and then change nothing.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edge_agent.state.atomic import atomic_write
from edge_agent.state.paths import operator_dir

log = logging.getLogger("edge_agent.alarms.dispatch")

LIFECYCLE_STATES = ("normal", "unacknowledged", "acknowledged", "returned_unacknowledged")


class LifecycleError(ValueError):
    """A command that does not apply to the machine as it is; nothing was changed."""


class Lifecycle(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    alarm_id: Optional[str] = None  # the latest alarm, while it is active or unacknowledged
    active: bool = False
    acknowledged: bool = False
    acknowledged_at: Optional[float] = None
    acknowledged_by: Optional[str] = None  # "mqtt", "web", ...
    shelved_until: Optional[float] = None  # unix seconds, on the machine's clock
    shelved_by: Optional[str] = None
    shelve_note: str = ""
    threshold_scale: float = Field(default=1.0, gt=0)

    @property
    def state(self) -> str:
        if self.alarm_id is None:
            return "normal"
        if self.active:
            return "acknowledged" if self.acknowledged else "unacknowledged"
        return "returned_unacknowledged"

    # -- alarms ------------------------------------------------------------------------------
    def alarm_started(self, alarm_id: str) -> None:
        self.alarm_id, self.active = alarm_id, True
        self.acknowledged, self.acknowledged_at, self.acknowledged_by = False, None, None

    def alarm_ended(self, alarm_id: str) -> None:
        if alarm_id != self.alarm_id:
            return  # an older alarm (closed after a restart): the current one is unaffected
        self.active = False
        if self.acknowledged:
            self.alarm_id = None  # seen and over: back to normal

    # -- operator commands ---------------------------------------------------------------------
    def acknowledge(self, now: float, by: str, alarm_id: Optional[str] = None) -> str:
        if self.alarm_id is None:
            raise LifecycleError("there is no alarm to acknowledge")
        if alarm_id is not None and alarm_id != self.alarm_id:
            raise LifecycleError(
                f"alarm {alarm_id} is not the machine's current alarm ({self.alarm_id}); nothing acknowledged"
            )
        if self.active and self.acknowledged:
            raise LifecycleError(f"alarm {self.alarm_id} is already acknowledged")
        done = self.alarm_id
        if self.active:
            self.acknowledged, self.acknowledged_at, self.acknowledged_by = True, now, by
            return f"alarm {done} acknowledged (still active)"
        self.alarm_id, self.acknowledged, self.acknowledged_at, self.acknowledged_by = None, False, None, None
        return f"alarm {done} acknowledged (it had returned to normal)"

    def shelve(self, until: float, by: str, note: str = "") -> None:
        self.shelved_until, self.shelved_by, self.shelve_note = until, by, note

    def unshelve(self) -> None:
        if self.shelved_until is None:
            raise LifecycleError("the machine is not shelved")
        self.shelved_until, self.shelved_by, self.shelve_note = None, None, ""

    def shelved(self, now: float) -> bool:
        return self.shelved_until is not None and now < self.shelved_until

    def shelf_expired(self, now: float) -> bool:
        return self.shelved_until is not None and now >= self.shelved_until

    def describe(self, iso) -> dict:
        """The ``alarm`` object of the state payload (``iso`` formats a timestamp)."""
        return {
            "state": self.state,
            "alarm_id": self.alarm_id,
            "acknowledged_at": iso(self.acknowledged_at) if self.acknowledged_at is not None else None,
            "acknowledged_by": self.acknowledged_by,
        }


class LifecycleStore:
    """``<state_dir>/operator/<machine>.json``, written atomically at every change."""

    def __init__(self, state_dir: Path):
        self.dir = operator_dir(state_dir)

    def _path(self, machine: str) -> Path:
        return self.dir / f"{machine}.json"

    def load(self, machine: str) -> Lifecycle:
        p = self._path(machine)
        if not p.is_file():
            return Lifecycle()
        try:
            return Lifecycle.model_validate_json(p.read_text())
        except (ValidationError, OSError) as e:
            log.error("%s: unreadable operator state %s (%s); starting from normal, unshelved", machine, p, e)
            return Lifecycle()

    def save(self, machine: str, lc: Lifecycle) -> None:
        try:
            with atomic_write(self._path(machine), "w") as f:
                f.write(lc.model_dump_json())
        except OSError as e:  # a full or read-only disk must not stop alarms; the state lives on in memory
            log.error("%s: cannot save the operator state in %s (%s)", machine, self.dir, e)
