"""Event payloads: the JSON documents the agent publishes (MQTT, console, outbox).

Every payload carries ``schema``, ``event_id``, an ISO-8601 UTC ``ts``, ``machine``, ``score``,
``threshold``, the model's name/version/sha256 and the bank version; docs/mqtt.md shows one of
each and tests check that the code produces exactly that shape.
"""

from __future__ import annotations

import datetime as _dt
import math
import uuid
from typing import Any, Optional

SCHEMA = 1


def iso(ts: float) -> str:
    return _dt.datetime.fromtimestamp(ts, _dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _r(x: Optional[float]) -> Optional[float]:
    """Rounded; None for a missing or non-finite number (strict JSON has no NaN or Infinity)."""
    return None if x is None or not math.isfinite(x) else round(float(x), 6)


def base(
    machine: str,
    ts: float,
    score: Optional[float],
    threshold: Optional[float],
    model: dict,
    bank_version: Optional[int],
) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "event_id": uuid.uuid4().hex,
        "ts": iso(ts),
        "machine": machine,
        "score": _r(score),
        "threshold": _r(threshold),
        "model": {"name": model["name"], "version": model["version"], "sha256": model["sha256"]},
        "bank_version": bank_version,
    }


def alarm_payload(
    machine: str,
    decision,
    threshold: float,
    model: dict,
    bank_version: Optional[int],
    evidence: Optional[dict] = None,
    explanation: Optional[dict] = None,
) -> dict[str, Any]:
    p = base(machine, decision.ts, decision.score, threshold, model, bank_version)
    p.update(
        {
            "type": "alarm",
            "event": decision.kind,
            "alarm_id": decision.alarm_id,
            "started_at": iso(decision.started_at),
            "peak_score": _r(decision.peak_score),
            "windows_above": decision.windows_above,
        }
    )
    if evidence:  # the alarm's WAV and spectrogram PNG (written post_seconds after its start)
        p["evidence"] = dict(evidence)
    if explanation:  # on a start: the third-octave bands that moved furthest from the enrolled sound
        p["explanation"] = explanation
    if decision.kind == "end":
        p["ended_at"] = iso(decision.ts)
        p["duration_seconds"] = round(decision.ts - decision.started_at, 3)
        p["reason"] = decision.reason
    return p


def state_payload(
    machine: str,
    state: str,
    ts: float,
    score: Optional[float],
    threshold: Optional[float],
    model: dict,
    bank_version: Optional[int],
    reason: str = "",
    lifecycle=None,
    input_info: Optional[dict] = None,
    severity: Optional[tuple[str, str]] = None,
) -> dict[str, Any]:
    """``lifecycle`` (``alarms.lifecycle.Lifecycle``) adds the latest alarm's ISA-18.2 state, the
    shelf and the operator's threshold scale; ``input_info`` the input's address and whether it is
    online (with the reason when it is not)."""
    p = base(machine, ts, score, threshold, model, bank_version)
    p.update({"type": "state", "state": state})
    if reason:
        p["reason"] = reason
    if lifecycle is not None:
        p["alarm"] = lifecycle.describe(iso)
        p["shelved_until"] = iso(lifecycle.shelved_until) if lifecycle.shelved_until is not None else None
        p["threshold_scale"] = lifecycle.threshold_scale
    if input_info is not None:
        p["input"] = input_info
    if severity is not None:  # the trends' "watch": the normal score drifting toward the threshold over days
        p["severity"] = severity[0]
        if severity[1]:
            p["severity_reason"] = severity[1]
    return p


def feedback_payload(machine: str, ts: float, info: dict) -> dict[str, Any]:
    """An operator's "normal" or its undo (calibration/feedback.py says what ``info`` holds)."""
    return {"schema": SCHEMA, "event_id": uuid.uuid4().hex, "ts": iso(ts), "machine": machine, "type": "feedback",
            **info}  # fmt: skip


def command_result_payload(
    machine: str,
    ts: float,
    command: Optional[str],
    request_id: Optional[str],
    ok: bool,
    text: str,
    state: Optional[dict] = None,
) -> dict[str, Any]:
    """The answer to an operator command: ``message`` on success, ``error`` (what is wrong and what
    to send instead) on failure; with the machine's state after it when the machine exists."""
    p: dict[str, Any] = {
        "schema": SCHEMA,
        "event_id": uuid.uuid4().hex,
        "ts": iso(ts),
        "machine": machine,
        "type": "command_result",
        "command": command,
        "id": request_id,
        "ok": ok,
        "message" if ok else "error": text,
    }
    if state is not None:
        p.update({k: state[k] for k in ("state", "alarm", "shelved_until", "threshold_scale") if k in state})
    return p


def score_payload(
    machine: str,
    ts: float,
    score: float,
    threshold: Optional[float],
    model: dict,
    bank_version: Optional[int],
    level_dbfs: Optional[float],
) -> dict[str, Any]:
    p = base(machine, ts, score, threshold, model, bank_version)
    p.update({"type": "score", "level_dbfs": _r(level_dbfs)})
    return p


class ScoreThrottle:
    """Score telemetry at most once per machine every ``interval`` seconds of window time."""

    def __init__(self, interval: float):
        self.interval = interval
        self._last: dict[str, float] = {}

    def due(self, machine: str, ts: float) -> bool:
        if ts - self._last.get(machine, 0.0) < self.interval:
            return False
        self._last[machine] = ts
        return True
