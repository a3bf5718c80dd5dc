"""The learning period (commissioning): the running agent enrols a machine from its own field audio
for hours or days (day, night, load changes), then fits the threshold on it and starts monitoring.

``calibrate --learn 24h`` (or ``learn: 24h`` for a machine without a bank) writes a request; the
agent picks it up at start or on SIGHUP. While learning, the machine's state is ``learning`` and
it raises no alarms; silent windows (and, with an earlier bank, windows of a stopped machine) are
not learned. Memory stays bounded: windows are grouped into blocks (a twentieth of the period,
5-60 s of audio), and a reservoir keeps a uniform sample of blocks of at most ``MAX_WINDOWS``
windows in all (about 15 MB of embeddings at the default model's 1024 dimensions), from which the
bank (k-means source centres) and the threshold (the alarm rule over held-out blocks) are made.
Progress and the reservoir are saved every few minutes and at stop, so a restart resumes the period.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Optional

import numpy as np

from calibration.adapt_sample import Adaptation, AudioSample, adapt_command, start_adaptation
from edge_agent.config import parse_duration
from edge_agent.runtime.learn_request import learning_paths, read_request, request_learning
from edge_agent.scoring.bands import band_levels
from edge_agent.scoring.bands import profile as band_profile
from edge_agent.scoring.bank import MemoryBank, bank_path
from edge_agent.state.atomic import atomic_write

log = logging.getLogger("edge_agent.learning")

# A block of audio acts as a clip for k-means and the held-out threshold fit: a twentieth of the
# period, between 5 s and 60 s; the reservoir keeps at most MAX_WINDOWS windows of blocks.
MIN_BLOCK_SECONDS, MAX_BLOCK_SECONDS = 5.0, 60.0
MAX_WINDOWS = 3600
SAVE_EVERY_SECONDS = 300.0
BAND_EVERY = 10  # band levels of one window in ten: the profile needs a sample, not every window


class Learner:
    """Takes a learning machine's windows (embedding, level) and, when the period is over, makes
    its bank. Implements the agent's learner seam: ``add``, ``progress``, ``describe``, ``save``."""

    def __init__(
        self,
        machine: str,
        state_dir: Path,
        bundle,
        policy,
        hop_seconds: float,
        seconds: float,
        rng: Optional[np.random.Generator] = None,
        score: Optional[str] = None,
        adapt: Optional[Adaptation] = None,
    ):
        self.machine, self.state_dir, self.bundle, self.policy = machine, Path(state_dir), bundle, policy
        self.hop, self.seconds = hop_seconds, seconds
        self.block_seconds = min(MAX_BLOCK_SECONDS, max(MIN_BLOCK_SECONDS, seconds / 20))
        self.max_blocks = max(3, int(MAX_WINDOWS * hop_seconds / self.block_seconds))
        self.done = 0.0  # seconds of audio learned
        self.blocks: list[np.ndarray] = []  # the reservoir: (windows, dim) per block
        self.levels: list[np.ndarray] = []
        self.indicators: list[np.ndarray] = []  # (windows, 3) per block, for the indicators head
        self.bands: list[np.ndarray] = []  # third-octave levels of some windows per block (an alarm's explanation)
        self.score = score  # the head the learned bank scores with (None: the bundle's own)
        self.blocks_seen = 0
        self._block: list[np.ndarray] = []
        self._block_levels: list[float] = []
        self._block_indicators: list[np.ndarray] = []
        self._block_bands: list[np.ndarray] = []
        self._rng = rng or np.random.default_rng()
        self._last_step = 0
        self.adapt = adapt  # --adapt: a sample of the audio is kept, and the model adapted to it at the end
        self.sample: Optional[AudioSample] = None
        if adapt is not None:
            fe = bundle.frontend
            self.sample = AudioSample(
                state_dir, machine, fe.sample_rate, fe.window_seconds, hop_seconds, self.block_seconds, self._rng
            )

    @classmethod
    def resume(
        cls, machine: str, state_dir: Path, bundle, policy, hop_seconds: float, adapt: Optional[Adaptation] = None
    ) -> Optional["Learner"]:
        """The learner of a machine with a learning request or a period under way, else None."""
        meta, data = learning_paths(state_dir, machine)
        m = read_request(meta)  # checked: a bad file is set aside, never a crash loop
        if m is None:
            return None
        adapt = replace(adapt or Adaptation(), corpus=tuple(m.corpus), steps=m.adapt_steps) if m.adapt else None
        lr = cls(machine, state_dir, bundle, policy, hop_seconds, m.seconds, score=m.score, adapt=adapt)
        lr.done, lr.blocks_seen = m.done, m.blocks_seen
        if data.is_file():
            with np.load(data, allow_pickle=False) as z:
                n = int(z["n_blocks"])
                lr.blocks = [z[f"emb_{i}"] for i in range(n)]
                lr.levels = [z[f"lev_{i}"] for i in range(n)]
                # a reservoir saved before indicators were kept has none: the k-NN alone is learned then
                lr.indicators = (
                    [z[f"ind_{i}"] for i in range(n)] if all(f"ind_{i}" in z.files for i in range(n)) else []
                )
                lr.bands = [z[f"band_{i}"] for i in range(n)] if all(f"band_{i}" in z.files for i in range(n)) else []
        lr._last_step = int(10 * lr.progress())
        if lr.done:
            log.info("%s: resuming the learning period at %s", machine, lr.describe())
        return lr

    # -- the agent's seam ----------------------------------------------------------------------
    def add(
        self,
        embeddings: np.ndarray,
        level_dbfs: float,
        indicators: Optional[np.ndarray] = None,
        samples: Optional[np.ndarray] = None,
    ) -> Optional[MemoryBank]:
        """One window's embeddings, level, indicators (``edge_agent.model.indicators``) and audio (the
        band levels of every ``BAND_EVERY``-th window); returns the new bank when the period is complete."""
        if self.sample is not None:
            self.sample.add(samples)
        if samples is not None and len(self._block) % BAND_EVERY == 0:
            self._block_bands.append(band_levels(samples, self.bundle.frontend.sample_rate)[0].astype(np.float32))
        self._block.append(np.asarray(embeddings, dtype=np.float32).reshape(-1, embeddings.shape[-1]))
        self._block_levels.append(level_dbfs)
        if indicators is not None:
            self._block_indicators.append(np.asarray(indicators, np.float32).reshape(-1))
        self.done += self.hop
        if len(self._block) * self.hop >= self.block_seconds:
            self._close_block()
        step = int(10 * self.progress())
        if step != self._last_step:
            self._last_step = step
            log.info("%s: learning %s", self.machine, self.describe())
        if self.done >= self.seconds:
            self._close_block()
            try:
                return self.finish()
            except Exception:
                self._abandon()  # the agent says why; the request must not fail again at every start
                raise
        return None

    def _abandon(self) -> None:
        meta, data = learning_paths(self.state_dir, self.machine)
        data.unlink(missing_ok=True)
        if meta.is_file():
            meta.replace(meta.with_name(meta.name + ".failed"))

    def progress(self) -> float:
        return min(1.0, self.done / self.seconds)

    def describe(self) -> str:
        return f"{100 * self.progress():.0f} % ({_span(self.done)} of {_span(self.seconds)} of sound)"

    def save(self) -> None:
        meta, data = learning_paths(self.state_dir, self.machine)
        with atomic_write(data) as f:
            np.savez(
                f,
                n_blocks=np.array(len(self.blocks)),
                **{f"emb_{i}": b for i, b in enumerate(self.blocks)},
                **{f"lev_{i}": v for i, v in enumerate(self.levels)},
                **{f"ind_{i}": v for i, v in enumerate(self.indicators)},
                **{f"band_{i}": v for i, v in enumerate(self.bands)},
            )
        state = {"seconds": self.seconds, "done": self.done, "blocks_seen": self.blocks_seen, "saved": time.time()}
        if self.adapt is not None:
            state.update(adapt=True, corpus=list(self.adapt.corpus), adapt_steps=self.adapt.steps)
        if self.score:
            state["score"] = self.score
        with atomic_write(meta, "w") as f:
            json.dump(state, f)

    # -- inside ----------------------------------------------------------------------------------
    def _close_block(self) -> None:
        if not self._block:
            return
        block, levels = np.concatenate(self._block), np.array(self._block_levels)
        # indicators only when every window of every kept block has them
        inds = np.stack(self._block_indicators) if len(self._block_indicators) == len(self._block) else None
        if inds is None or len(self.indicators) != len(self.blocks):
            self.indicators, inds = [], None
        bands = np.stack(self._block_bands) if self._block_bands else None
        if bands is None or len(self.bands) != len(self.blocks):
            self.bands, bands = [], None
        self._block, self._block_levels, self._block_indicators, self._block_bands = [], [], [], []
        self.blocks_seen += 1
        if self.sample is not None:
            self.sample.close_block(self.blocks_seen)
        if len(self.blocks) < self.max_blocks:  # reservoir sampling (algorithm R): every block equally likely kept
            self.blocks.append(block)
            self.levels.append(levels)
            if inds is not None:
                self.indicators.append(inds)
            if bands is not None:
                self.bands.append(bands)
        else:
            j = int(self._rng.integers(0, self.blocks_seen))
            if j < self.max_blocks:
                self.blocks[j], self.levels[j] = block, levels
                if inds is not None:
                    self.indicators[j] = inds
                if bands is not None:
                    self.bands[j] = bands
        if self.blocks_seen % max(1, int(SAVE_EVERY_SECONDS / self.block_seconds)) == 0:
            self.save()

    def finish(self) -> MemoryBank:
        from calibration.enrol import Enrolment, enrol
        from calibration.service import level_range

        per_window = self.bundle.embeddings_per_window
        emb = np.concatenate(self.blocks)
        groups = np.concatenate([[f"block{i}"] * len(b) for i, b in enumerate(self.blocks)])
        res = enrol(
            self.bundle.sha256,
            Enrolment(emb, groups, "source"),
            policy=self.policy,
            model_name=self.bundle.name,
            model_version=self.bundle.version,
        )
        self._apply_score(res, per_window)
        bank = res.bank
        bank.meta["levels_dbfs"] = level_range(self.levels)
        prof = band_profile(np.concatenate(self.bands), self.bundle.frontend.sample_rate) if self.bands else None
        if prof is not None:  # what an alarm of the learned bank is explained against
            bank.meta["bands"] = prof
        bank.meta["learned"] = {
            "seconds": self.done,
            "blocks_seen": self.blocks_seen,
            "blocks_kept": len(self.blocks),
            "embeddings_per_window": per_window,
        }
        bank.save(bank_path(self.state_dir, self.machine))
        for p in learning_paths(self.state_dir, self.machine):
            p.unlink(missing_ok=True)
        log.info(
            "%s: learning done after %s: bank of %d entries, threshold %.4f, expected %.3g false alarms a day",
            self.machine,
            _span(self.done),
            len(bank.embeddings),
            bank.threshold,
            res.expected_alarms_per_day,
        )
        self._adapt()
        return bank

    def _adapt(self) -> None:
        """--adapt: the model adapted to the kept sample, in a child process (calibration/adapt_sample.py)."""
        if self.sample is None:
            return
        from calibration.adapt_audio import MIN_PIECES  # here: it brings the calibration code the agent never needs

        pieces = self.sample.pieces()
        if len(pieces) < MIN_PIECES:
            log.warning("%s: %d piece(s) of audio kept: too few to adapt the model on", self.machine, len(pieces))
            return
        model = self.adapt.model or str(self.bundle.path)
        cmd = adapt_command(self.machine, self.state_dir, self.sample.dir, model, self.adapt, self.score)
        start_adaptation(cmd, self.sample.dir, self.machine, self.adapt)

    def _apply_score(self, res, per_window: int) -> None:
        """The asked head on the learned bank (the k-NN needs nothing more), each block a clip of the
        held-out threshold fit, as for a calibration from recordings."""
        from calibration.embed import CalibrationError
        from calibration.heads import apply_score, knn_only, score_members

        if not self.score:
            return
        try:
            members = score_members(self.bundle, self.score)
            if knn_only(members):
                return
            if len(self.indicators) != len(self.blocks):
                raise CalibrationError("the learned windows have no indicators (a period begun by an older version)")
            dim = self.bundle.embedding_dim * per_window
            outputs = {
                "source": [
                    {"embedding": b.reshape(-1, dim), "indicators": i} for b, i in zip(self.blocks, self.indicators)
                ]
            }
            apply_score(res, members, outputs, self.policy, True, per_window)
        except CalibrationError as e:  # the period's audio is not lost over the head: the k-NN bank stands
            log.warning("%s: the learned bank scores with the k-NN alone, not %s: %s", self.machine, self.score, e)


def _span(seconds: float) -> str:
    return (
        f"{seconds:.0f} s"
        if seconds < 120
        else f"{seconds / 60:.0f} min"
        if seconds < 7200
        else f"{seconds / 3600:.1f} h"
    )


def learner_factory(cfg, bundle, config_path=None, faults=None):
    """For the agent: each machine's learner (a request or a period under way, or ``learn:`` in the
    config for a machine that has no bank yet), or None."""
    from calibration.policy import threshold_policy

    state_dir = cfg.resolved_state_dir()

    def make(stream, reload=None) -> Optional[Learner]:
        mc = stream.cfg
        if not learning_paths(state_dir, stream.machine)[0].is_file() and stream.bank is None and mc.learn:
            request_learning(state_dir, stream.machine, parse_duration(mc.learn))
            log.info(
                "%s: no bank yet and learn: %s in the config: starting the learning period", stream.machine, mc.learn
            )
        policy = threshold_policy(None, None, mc.hop_seconds, mc.alarm)
        adapt = Adaptation(cfg.model, config_path, reload=reload, faults=faults)  # used when a request says --adapt
        return Learner.resume(stream.machine, state_dir, bundle, policy, mc.hop_seconds, adapt)

    return make
