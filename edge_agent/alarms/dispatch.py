"""Every alarm event of the agent goes out through here, in this order: the open-alarm record
(so that none stays open after a crash), the machine's ISA-18.2 state (``alarm_states.py``, saved),
the evidence names, then the sinks. Also the operator's side of an alarm: acknowledging, shelving,
lifting an expired shelf, and the threshold scale."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Optional

from edge_agent.alarms.evidence import EvidenceRecorder
from edge_agent.alarms.lifecycle import LifecycleStore
from edge_agent.alarms.open_record import OpenAlarm, OpenAlarmStore
from edge_agent.audio.convert import level_dbfs
from edge_agent.publish import events
from edge_agent.scoring.bands import describe as describe_explanation
from edge_agent.scoring.bands import explain
from edge_agent.scoring.detector import Decision

log = logging.getLogger("edge_agent.alarms.dispatch")


class Alarms:
    def __init__(
        self,
        state_dir: Path,
        emit: Callable[[str, str, dict], None],
        model_info: dict,
        evidence: Optional[EvidenceRecorder] = None,
        evidence_url: Optional[str] = None,
    ):
        self.emit, self.model_info, self.evidence = emit, model_info, evidence
        self.open = OpenAlarmStore(state_dir)
        self.lifecycles = LifecycleStore(state_dir)
        self.evidence_base_url = evidence_url  # the status page's address, when it is on

    def evidence_of(self, machine: str, alarm_id: str) -> Optional[dict]:
        """The alarm's evidence files, and their URLs on the status page when it is on."""
        files = self.evidence.files_of(alarm_id) if self.evidence is not None else None
        if files and self.evidence_base_url:
            base = f"{self.evidence_base_url}/evidence/{machine}"
            files = {**files, **{f"{k}_url": f"{base}/{Path(v).name}" for k, v in files.items()}}
        return files

    def load(self, stream) -> None:
        """The machine's acknowledgement, shelf and threshold scale as the last run left them."""
        stream.lifecycle = self.lifecycles.load(stream.machine)
        if stream.lifecycle.threshold_scale != 1.0:
            stream.scale_threshold(stream.lifecycle.threshold_scale)
            log.info("%s: threshold scaled by %g by an operator", stream.machine, stream.lifecycle.threshold_scale)

    def save(self, stream) -> None:
        self.lifecycles.save(stream.machine, stream.lifecycle)

    def emit_decision(self, s, d: Decision, record: Optional[OpenAlarm] = None) -> None:
        """Emit an alarm event; the open-alarm record is written before a start/update goes out and
        removed after the end has gone, so a crash in between leaves it for the next start to close."""
        rec = record or OpenAlarm(d, s.threshold, s.bank.version, self.model_info)
        if d.kind != "end":
            try:
                self.open.save(s.machine, rec)
            except OSError as e:  # a full or read-only disk must not stop the alarm itself
                log.error("%s: cannot record the open alarm in %s (%s)", s.machine, self.open.dir, e)
        if d.kind == "start":
            s.lifecycle.alarm_started(d.alarm_id)
            self.save(s)
        elif d.kind == "end":
            s.lifecycle.alarm_ended(d.alarm_id)
            self.save(s)
        files = self.evidence_of(s.machine, d.alarm_id)
        why = explanation(s) if d.kind == "start" else None
        if why and self.evidence is not None:
            self.evidence.note(d.alarm_id, "changed: " + describe_explanation(why))
        self.emit(
            "alarm",
            s.machine,
            events.alarm_payload(s.machine, d, rec.threshold, rec.model, rec.bank_version, files, why),
        )
        if d.kind == "end":
            if self.evidence is not None:
                self.evidence.forget(d.alarm_id)
            try:
                self.open.clear(s.machine)
            except OSError as e:
                log.error("%s: cannot remove the open-alarm record (%s)", s.machine, e)

    def close_orphaned(self, s) -> None:
        """An alarm left open by an agent that died: end it now, explicitly, under its own id."""
        rec = self.open.load(s.machine)
        if rec is None:
            return
        d = rec.decision
        why = (
            "agent restarted: the alarm was open when the agent stopped unexpectedly; "
            "a new alarm follows if the sound is still wrong"
        )
        log.warning(
            "%s: closing alarm %s left open by the last run (started %s)",
            s.machine,
            d.alarm_id,
            events.iso(d.started_at),
        )
        end = Decision(
            "end", d.alarm_id, max(s.clock(), d.ts), d.score, d.peak_score, d.started_at, d.windows_above, why
        )
        self.emit_decision(s, end, rec)

    def end(self, s, ts: float, reason: str) -> bool:
        """End the machine's open alarm, if any, with ``reason``; True when one was ended."""
        if s.detector is None:
            return False
        d = s.detector.end(ts, s.last_score if s.last_score is not None else float("nan"), reason)
        if d is not None:
            self.emit_decision(s, d)
        return d is not None

    # -- the operator's side -----------------------------------------------------------------------
    def shelve(self, s, minutes: float, by: str, note: str = "") -> str:
        """No alarms from the machine for ``minutes``; an open alarm ends now."""
        now = s.clock()
        self.end(s, now, f"shelved by {by}")
        if s.detector is not None:
            s.detector.reset()
        s.lifecycle.shelve(now + 60.0 * minutes, by, note)
        self.save(s)
        log.warning("%s: shelved by %s for %g min%s", s.machine, by, minutes, f" ({note})" if note else "")
        return f"shelved until {events.iso(s.lifecycle.shelved_until)}"

    def unshelve(self, s, why: str) -> None:
        s.lifecycle.unshelve()
        if s.detector is not None:
            s.detector.reset()  # the rule starts afresh on what follows
        self.save(s)
        log.info("%s: %s: monitoring again", s.machine, why)

    def expire_shelves(self, streams) -> list:
        """Lift every shelf whose time is up; the streams that changed."""
        out = []
        for s in streams:
            if s.lifecycle.shelf_expired(s.clock()):
                self.unshelve(s, "the shelf expired")
                out.append(s)
        return out

    def acknowledge(self, s, by: str, alarm_id: Optional[str] = None) -> str:
        msg = s.lifecycle.acknowledge(s.clock(), by, alarm_id)
        self.save(s)
        log.info("%s: %s by %s", s.machine, msg, by)
        return msg

    def scale_threshold(self, s, scale: float, by: str) -> str:
        s.scale_threshold(scale)
        self.save(s)
        thr = f"threshold {s.threshold:.4f}" if s.threshold is not None else "no bank yet"
        log.warning("%s: threshold scale set to %g by %s (%s)", s.machine, scale, by, thr)
        return f"threshold scale {scale:g}: {thr}"


def explanation(s) -> Optional[dict]:
    """What changed in the window that raised the alarm, against the enrolled sound (``bands.py``);
    None for a bank without a band profile (calibrated by an older version, or learned)."""
    info = s.bank.info if s.bank is not None else None
    if info is None or info.bands is None or s.last_samples is None:
        return None
    median = info.levels_dbfs.median if info.levels_dbfs is not None else None
    try:
        change = level_dbfs(s.last_samples) - median if median is not None else None
        return explain(info.bands.model_dump(), s.last_samples, change)
    except Exception as e:  # noqa: BLE001 - the alarm goes out without its explanation
        log.error("%s: cannot explain the alarm (%s)", s.machine, e)
        return None
