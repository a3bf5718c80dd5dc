"""What a learning period with ``--adapt`` keeps of its raw audio, and the adaptation at its end.

The sample: up to ``SAMPLE_SECONDS`` (an hour) of audio spread evenly over the period, as 16-bit
WAV files under ``<state_dir>/machines/<machine>/adapt/`` (about 115 MB for an hour at 16 kHz).
Each block of the period (a twentieth of it, 5-60 s) gives one piece of at most ``PIECE_SECONDS``,
cut from its non-overlapping windows; a reservoir (algorithm R) keeps every block equally likely.
Pieces are named by their block number, so their order is the period's order, and the adaptation
holds out the last stretch of the period (audio it never learns) to check on and to fit the threshold.

At the end of the period the machine starts monitoring with the bank learnt from the whole period
at once, and the adaptation runs as ``edge-agent calibrate --adapt --only-if-adapted`` in a child
process (the agent itself never loads PyTorch). When that keeps an adapted model, it writes the
model and its bank, and the agent reloads the machine; when not, nothing changes. The sample is
deleted once the adaptation has run; after a failure it stays for the retry the log names.
"""

from __future__ import annotations

import logging
import math
import shlex
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from edge_agent.audio.wavio import write_wav
from edge_agent.faults import Faults
from edge_agent.state.paths import adapt_audio_dir

log = logging.getLogger("edge_agent.learning")

SAMPLE_SECONDS = 3600.0
PIECE_SECONDS = 30.0


class AudioSample:
    def __init__(
        self,
        state_dir: Path,
        machine: str,
        sample_rate: int,
        window_seconds: float,
        hop_seconds: float,
        block_seconds: float,
        rng: np.random.Generator,
    ):
        self.dir = adapt_audio_dir(state_dir, machine)
        self.sample_rate, self.rng = sample_rate, rng
        self.every = max(1, math.ceil(window_seconds / hop_seconds))  # windows apart that do not overlap
        self.max_windows = max(1, int(PIECE_SECONDS // window_seconds))
        piece = min(PIECE_SECONDS, max(window_seconds, block_seconds))
        self.max_pieces = max(4, int(SAMPLE_SECONDS // piece))
        self._windows: list[np.ndarray] = []
        self._seen = 0

    def add(self, samples: Optional[np.ndarray]) -> None:
        """One window of the block under way (the block's every ``every``-th window is kept)."""
        if samples is not None and self._seen % self.every == 0 and len(self._windows) < self.max_windows:
            self._windows.append(np.asarray(samples, dtype=np.float32).reshape(-1))
        self._seen += 1

    def close_block(self, block: int) -> None:
        """The block is over: its piece joins the reservoir (``block``: blocks seen so far)."""
        windows, self._windows, self._seen = self._windows, [], 0
        if not windows:
            return
        kept = self.pieces()
        if len(kept) >= self.max_pieces:
            j = int(self.rng.integers(0, block))
            if j >= self.max_pieces:
                return
            kept[j].unlink(missing_ok=True)
        self.dir.mkdir(parents=True, exist_ok=True)
        write_wav(self.dir / f"piece-{block:06d}.wav", np.concatenate(windows), self.sample_rate)

    def pieces(self) -> list[Path]:
        return sorted(self.dir.glob("piece-*.wav")) if self.dir.is_dir() else []


@dataclass(frozen=True)
class Adaptation:
    """What the end of a learning period with ``--adapt`` needs: the request's settings and the
    agent's wiring (its model, config, a reload to ask for, the faults a failure is counted in)."""

    model: Optional[str] = None  # the running model, a name or a folder (None: the learner's bundle folder)
    config: Optional[Path] = None
    corpus: tuple[str, ...] = ()
    steps: Optional[int] = None
    reload: Optional[Callable[[], None]] = None
    faults: Optional[Faults] = None


def adapt_command(machine: str, state_dir: Path, sample_dir: Path, model: str, a: Adaptation, score=None) -> list[str]:
    cmd = [sys.executable, "-m", "edge_agent.cli", "calibrate", "--machine", machine, "--from", str(sample_dir),
           "--state-dir", str(state_dir), "--model", model, "--adapt", "--only-if-adapted", "--no-plot"]  # fmt: skip
    if a.config is not None:
        cmd += ["--config", str(a.config)]
    if a.corpus:
        cmd += ["--corpus", *a.corpus]
    if score:
        cmd += ["--score", score]
    if a.steps:
        cmd += ["--adapt-steps", str(a.steps)]
    return cmd


def start_adaptation(cmd: list[str], sample_dir: Path, machine: str, a: Adaptation) -> threading.Thread:
    """Run the adaptation in a child process on a thread of its own; ask for a reload when it is done.
    A failure is logged with the child's last words and the command to run by hand, and counted in
    the agent's faults; it is not a dead thread (the machine keeps monitoring with its learnt bank,
    and the sample stays for a retry)."""
    by_hand = "edge-agent " + shlex.join(cmd[3:])

    def job() -> None:
        log.info("%s: adapting the model to the learnt audio (%s)", machine, by_hand)
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode != 0:
            tail = (p.stderr or p.stdout).strip().splitlines()[-3:]
            raise RuntimeError(
                f"{machine}: adaptation failed (exit {p.returncode}): {' | '.join(tail)}; the learnt bank stays. "
                f"To try again: {by_hand}"
            )
        lines = [line for line in p.stdout.splitlines() if line.startswith("adapted model")]
        log.info("%s: %s", machine, lines[-1] if lines else "adaptation done")
        shutil.rmtree(sample_dir, ignore_errors=True)
        if a.reload is not None:
            a.reload()

    body = a.faults.guard(f"{machine}: adaptation")(job) if a.faults is not None else job
    t = threading.Thread(target=body, name=f"adapt-{machine}", daemon=True)
    t.start()
    return t
