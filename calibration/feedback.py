""" "That was normal": an alarm's windows join the machine's bank as a new group of target
enrolment (``fb-<id>``), so that sound like them scores low from now on, and the threshold is
fitted again on the false-alarm budget over the enrolled sound, held out clip by clip as calibrate
does. The feedback windows are entries of the bank but not part of that fit: their held-out scores
are those of sound that raised an alarm, and fitting on them (they were the only clips the model
had not heard, so the fit took them alone) lifted valve's threshold four-fold and took its recall
on the anomalous recordings from 69/100 to 1/100 (``benchmarks/feedback.py --fit-feedback``). ``undo`` takes the last
feedback back exactly: the bank as it was before it is kept (``feedback/<id>.npz``) and restored,
in reverse order only (a later feedback was fitted on top of an earlier one).

Every action is appended to ``feedback.jsonl`` (who, when, which alarm, why, the threshold before
and after) and goes out as a ``feedback`` event. Bank growth is bounded: at most
``MAX_FEEDBACK_WINDOWS`` windows from feedback per bank.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
import uuid
from pathlib import Path
from typing import Optional

import numpy as np

from edge_agent.scoring.bank import BankError, MemoryBank, bank_path
from edge_agent.state.atomic import atomic_write
from edge_agent.state.paths import feedback_dir, feedback_log

log = logging.getLogger("edge_agent.feedback")

MAX_FEEDBACK_WINDOWS = 2000
GROUP = "fb-"


class Feedback:
    """The agent's ``FeedbackEnroller`` (edge_agent/runtime/learner.py) for one state directory."""

    def __init__(self, state_dir: Path, policies: dict, fit_feedback: bool = False):
        self.state_dir = Path(state_dir)
        self.policies = policies  # machine -> ThresholdPolicy (its budget and alarm rule)
        self.fit_feedback = fit_feedback  # the threshold fitted on the feedback windows too (measured, not used)

    def normal(self, machine: str, bank: MemoryBank, alarm_id: str, embeddings: np.ndarray, by: str, note: str):
        from calibration.enrol import Enrolment, enrol

        if bank.info.score is not None:
            raise ValueError("feedback is for banks scored by the k-NN; this one scores otherwise: recalibrate")
        path = bank_path(self.state_dir, machine)
        bank = _as_in_its_file(path, bank)
        tgt = bank.enrolled.get("target")
        had = int(sum(str(g).startswith(GROUP) for g in tgt[1])) if tgt is not None else 0
        if had + len(embeddings) > MAX_FEEDBACK_WINDOWS:
            raise ValueError(
                f"the bank already holds {had} windows from feedback (at most {MAX_FEEDBACK_WINDOWS}): recalibrate "
                "the machine from recordings of its normal sound instead"
            )
        fid = uuid.uuid4().hex[:12]
        backup = feedback_dir(self.state_dir, machine) / f"{fid}.npz"
        backup.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, backup)
        groups = np.array([f"{GROUP}{fid}"] * len(embeddings))
        res = enrol(
            bank.model_sha256,
            target=Enrolment(np.asarray(embeddings, np.float32), groups, "target"),
            existing=bank,
            policy=self.policies[machine],
            k=bank.k,
            normalise_domains=bank.normalise_domains,
            model_name=bank.model_name,
            model_version=bank.model_version,
        )
        new = res.bank
        if not self.fit_feedback:
            self._fit_without_feedback(res, self.policies[machine])
        for key in ("bands", "levels_dbfs", "training_overlap", "learned"):
            if bank.meta.get(key) is not None:
                new.meta[key] = bank.meta[key]
        new.save(path)
        info = self._record(
            machine, "normal", fid, by, bank, new, alarm_id=alarm_id, note=note, windows=len(embeddings)
        )
        info["message"] = (
            f"marked normal: {len(embeddings)} windows of alarm {alarm_id[:8]} joined the bank (feedback {fid}); "
            f"threshold {bank.threshold:.4f} -> {new.threshold:.4f}"
        )
        return new, info

    @staticmethod
    def _fit_without_feedback(res, policy) -> None:
        """The threshold on the enrolled sound's held-out scores alone (with the feedback entries in
        the bank, which is what lowers the scores of sound like them)."""
        from calibration.enrol import apply_threshold, fit_selection

        if res.loo_groups is None:
            return
        keep = np.array([GROUP not in str(g) for g in res.loo_groups])
        scores, groups = res.loo_scores[keep], res.loo_groups[keep]
        if len(scores) < 2:
            return
        # the enrolment's own choice of clips (those the model has not heard, when there are enough);
        # the feedback clips, never heard, would otherwise be all the fit sees
        clips = np.char.partition(groups.astype(str), ":")[:, 2]
        fitted, _ = fit_selection(clips, set(res.bank.meta.get("heard_in_training", [])))
        apply_threshold(res, scores[fitted], policy, groups[fitted])

    def undo(self, machine: str, bank: MemoryBank, feedback_id: Optional[str], by: str):
        open_ids = self._open(machine)
        if not open_ids:
            raise ValueError("there is no feedback to undo")
        last = open_ids[-1]
        if feedback_id is not None and feedback_id != last:
            if feedback_id not in open_ids:
                raise ValueError(f"no feedback {feedback_id} to undo (open: {', '.join(open_ids)})")
            raise ValueError(f"undo the later feedback {last} first: feedback is taken back in reverse order")
        backup = feedback_dir(self.state_dir, machine) / f"{last}.npz"
        old = MemoryBank.load(backup)  # checked like any bank before it comes back into force
        shutil.copy2(backup, bank_path(self.state_dir, machine))
        backup.unlink()
        info = self._record(machine, "undo", last, by, bank, old)
        info["message"] = f"feedback {last} undone: threshold {bank.threshold:.4f} -> {old.threshold:.4f}"
        return old, info

    def _open(self, machine: str) -> list[str]:
        """Feedback ids not undone, oldest first."""
        out: list[str] = []
        for e in self._entries(machine):
            if e.get("action") == "normal":
                out.append(e["feedback_id"])
            elif e.get("action") == "undo" and e.get("feedback_id") in out:
                out.remove(e["feedback_id"])
        return [f for f in out if (feedback_dir(self.state_dir, machine) / f"{f}.npz").is_file()]

    def _entries(self, machine: str) -> list[dict]:
        p = feedback_log(self.state_dir, machine)
        if not p.is_file():
            return []
        out = []
        for line in p.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue  # a torn last line of a crash: the others stand
        return out

    def _record(self, machine: str, action: str, fid: str, by: str, before, after, **extra) -> dict:
        info = {
            "action": action,
            "feedback_id": fid,
            "by": by,
            "at": time.time(),
            "threshold_before": before.threshold,
            "threshold_after": after.threshold,
            "bank_version": after.version,
            **extra,
        }
        p = feedback_log(self.state_dir, machine)
        text = (p.read_text() if p.is_file() else "") + json.dumps(info) + "\n"
        with atomic_write(p, "w") as f:
            f.write(text)
        log.warning("%s: feedback %s %s by %s", machine, action, fid, by)
        return info


def _as_in_its_file(path: Path, running: MemoryBank) -> MemoryBank:
    """The running bank as its file holds it, with the enrolment embeddings the agent does not keep
    in memory; refused when the file is no longer the bank in force."""
    try:
        disk = MemoryBank.load(path)
    except BankError as e:
        raise ValueError(str(e)) from None
    if disk.threshold != running.threshold or not np.array_equal(disk.embeddings, running.embeddings):
        raise ValueError(
            f"{path} is not the bank the agent scores with (calibrated since it was loaded?): reload the agent "
            "(systemctl reload edge-agent, or SIGHUP) and mark the alarm again"
        )
    return disk


def feedback_factory(cfg, bundle):
    """For the agent: the feedback enroller of the config's state directory."""
    from calibration.policy import threshold_policy

    policies = {m: threshold_policy(None, None, mc.hop_seconds, mc.alarm) for m, mc in cfg.machines.items()}
    return Feedback(cfg.resolved_state_dir(), policies)
