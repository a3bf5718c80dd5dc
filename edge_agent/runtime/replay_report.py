"""What a finished WAV replay held and what came of it: a summary line per machine at the end of an
offline run, and the error for a replay too short to give a single window."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from edge_agent.audio.replay import ReplaySource
from edge_agent.errors import UserError

if TYPE_CHECKING:
    from edge_agent.runtime.stream import MachineStream


class ReplayError(UserError):
    """A replay that gave nothing to score (too short, empty or unreadable files)."""


def _finished(s: "MachineStream") -> Optional[tuple[ReplaySource, float, str]]:
    """(source, seconds of audio it held, note on skipped files) for a finished, non-looping replay."""
    src = s.source
    if not (isinstance(src, ReplaySource) and src.finished and not src.loop):
        return None
    bad = f", {len(src.bad_files)} unreadable or empty file(s) skipped" if src.bad_files else ""
    return src, src.frames_sent / src.sample_rate, bad


def replay_summary(s: "MachineStream") -> Optional[str]:
    """How much audio the replay held, its windows and alarms, and its highest score."""
    done = _finished(s)
    if done is None or not s.windows_processed:
        return None
    src, held, bad = done
    if s.highest_score is None:
        scores = f"none scored (the machine was {s.state})"
    else:
        thr = f" against the threshold {s.threshold:.4f}" if s.threshold is not None else ""
        scores = f"highest score {s.highest_score:.4f}{thr}"
    return (
        f"{s.machine}: end of {src.path}: {held:.1f} s of audio{bad}, {s.windows_processed} windows, "
        f"{s.alarms_raised} alarm(s), {scores}"
    )


def unscored_replay(s: "MachineStream") -> Optional[str]:
    """For a finished replay that gave no window at all: what it held, and what to do."""
    done = _finished(s)
    if done is None or s.windows_processed:
        return None
    src, held, bad = done
    return (
        f"machine {s.machine}: {src.path} held {held:.2f} s of audio{bad}, less than one window of "
        f"{s.window_seconds:g} s; give recordings of at least {s.window_seconds:g} s"
    )
