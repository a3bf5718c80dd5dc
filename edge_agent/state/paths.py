"""Where everything lives in the state directory: the one place that names its files and folders.

<state_dir>/machines/<machine>/bank.npz            the bank (calibrate, the learning period)
<state_dir>/machines/<machine>/learning.json|.npz  a learning period asked for or under way
<state_dir>/machines/<machine>/normal/normal-N.wav a few enrolled normal clips (A/B listening on the page)
<state_dir>/machines/<machine>/model/              the machine's adapted model (calibrate --adapt), a bundle
<state_dir>/machines/<machine>/adapt/piece-N.wav   audio a learning period keeps to adapt on (--adapt)
<state_dir>/machines/<machine>/feedback.jsonl      the audit log of "normal" and "undo" (who, when, why)
<state_dir>/machines/<machine>/feedback/<id>.npz   the bank as it was before feedback <id> (for undo)
<state_dir>/alarms/<machine>.json                  an alarm open when the agent stopped
<state_dir>/operator/<machine>.json                acknowledgement, shelf, threshold scale
<state_dir>/evidence/<machine>/<alarm_id>.wav|.png each alarm's evidence
<state_dir>/outbox.sqlite                          events on their way to the broker
<state_dir>/trends.sqlite                          hourly statistics per machine (about 120 days)
<state_dir>/edge-agent.lock                        one agent per state directory
"""

from __future__ import annotations

from pathlib import Path

LOCK_NAME = "edge-agent.lock"


def machine_dir(state_dir: Path, machine: str) -> Path:
    return Path(state_dir) / "machines" / machine


def normal_dir(state_dir: Path, machine: str) -> Path:
    return machine_dir(state_dir, machine) / "normal"


def model_dir(state_dir: Path, machine: str) -> Path:
    return machine_dir(state_dir, machine) / "model"


def adapt_audio_dir(state_dir: Path, machine: str) -> Path:
    return machine_dir(state_dir, machine) / "adapt"


def feedback_dir(state_dir: Path, machine: str) -> Path:
    return machine_dir(state_dir, machine) / "feedback"


def feedback_log(state_dir: Path, machine: str) -> Path:
    return machine_dir(state_dir, machine) / "feedback.jsonl"


def bank_path(state_dir: Path, machine: str) -> Path:
    return machine_dir(state_dir, machine) / "bank.npz"


def learning_paths(state_dir: Path, machine: str) -> tuple[Path, Path]:
    d = machine_dir(state_dir, machine)
    return d / "learning.json", d / "learning.npz"


def open_alarms_dir(state_dir: Path) -> Path:
    return Path(state_dir) / "alarms"


def operator_dir(state_dir: Path) -> Path:
    return Path(state_dir) / "operator"


def evidence_dir(state_dir: Path) -> Path:
    return Path(state_dir) / "evidence"


def trends_path(state_dir: Path) -> Path:
    return Path(state_dir) / "trends.sqlite"


def outbox_path(state_dir: Path) -> Path:
    return Path(state_dir) / "outbox.sqlite"


def lock_path(state_dir: Path) -> Path:
    return Path(state_dir) / LOCK_NAME
