"""One machine's stream: its source, windower, bank, detector and liveness.

The windower cuts windows at the source's own rate (window and hop in seconds) and converts each
window as a whole to the model's rate and channel, exactly as offline scoring converts a clip, so
live and recorded audio are scored the same way.
"""

from __future__ import annotations

import logging
from typing import Optional

import numpy as np

from edge_agent.alarms.lifecycle import Lifecycle
from edge_agent.audio import AudioSource, Windower
from edge_agent.audio.convert import SILENT_PEAK, level_dbfs, prepare
from edge_agent.audio.recordings import Recordings, Tally
from edge_agent.clock import SYSTEM, Clock
from edge_agent.config import MachineConfig
from edge_agent.engine import Engine
from edge_agent.model.frontend import Frontend
from edge_agent.model.stream_frontend import StreamFrontend
from edge_agent.runtime.learner import Learner
from edge_agent.runtime.stream_records import StreamStats, Window, WindowEvent
from edge_agent.scoring.bank import MemoryBank
from edge_agent.scoring.detector import Decision, Detector

log = logging.getLogger("edge_agent.runtime.stream")

STATES = ("normal", "anomaly", "uncalibrated", "no_audio", "off", "learning", "shelved")
OFF_HYSTERESIS_DB = 3.0  # back on only this far above the "off" level, so a machine at the edge does not flap


class MachineStream:
    def __init__(
        self,
        machine: str,
        cfg: MachineConfig,
        source: AudioSource,
        frontend: Frontend,
        bank: Optional[MemoryBank],
        window_seconds: Optional[float] = None,
        lifecycle: Optional[Lifecycle] = None,
        clock: Clock = SYSTEM,
    ):
        self._clock = clock
        self.machine, self.cfg, self.source, self.frontend, self.bank = machine, cfg, source, frontend, bank
        self.features = StreamFrontend(frontend)
        self.window_seconds = window_seconds or frontend.window_seconds
        self.windower: Optional[Windower] = None
        self.detector: Optional[Detector] = None
        # the alarm's ISA-18.2 state and the operator's shelf and threshold scale (alarm_states.py)
        self.lifecycle = lifecycle or Lifecycle()
        self.set_bank(bank)
        self.windows_processed = 0
        self.last_score: Optional[float] = None
        self.highest_score: Optional[float] = None  # and the alarms raised: a replay's summary
        self.alarms_raised = 0
        self.last_ts: Optional[float] = None
        self.last_level_dbfs: Optional[float] = None
        self.last_frames_at = self._clock.monotonic()
        self.no_audio = False  # no frames arrive (set by the agent's liveness check)
        self.no_audio_reason = ""
        self.condition: Optional[str] = None  # "silent" or "off" while the windows say so, else None
        self.condition_reason = ""
        self.settled_at = float("-inf")  # stream offset from which windows hold no gated audio
        self.learner: Optional[Learner] = None  # while learning, windows go to it instead of the detector
        self.engine: Optional[Engine] = None  # the adapted model's engine when the bank needs it, else shared
        self.wall_start = self._clock.time()
        self._overruns_logged = 0
        self.recordings = Recordings()  # where each recording (a replayed file) begins
        self.tally = Tally()  # what the current recording gave, as decided (the replay's summary lines)
        self.last_samples: Optional[np.ndarray] = None  # the last decided window (an alarm explains it)
        self.nonfinite_samples = 0  # NaN/Inf samples from the source, replaced by silence (0)
        self.nonfinite_scores = 0  # windows whose score was not a number: neither decided on nor published

    @property
    def stream_clocked(self) -> bool:
        """A replay faster than real time is stamped with stream time (its start + audio offset), so
        that alarm timestamps and durations mean the same as they would live."""
        return getattr(self.source, "realtime", True) is False

    def clock(self) -> float:
        if self.stream_clocked:
            return self.last_ts or self.wall_start
        return self._clock.time()

    @property
    def threshold(self) -> Optional[float]:
        """The threshold in force: the bank's, times the operator's scale (1.0 unless set by a command)."""
        if self.bank is None or self.bank.threshold is None:
            return None
        return self.bank.threshold * self.lifecycle.threshold_scale

    def scale_threshold(self, scale: float) -> None:
        self.lifecycle.threshold_scale = scale
        if self.detector is not None:
            self.detector.threshold = self.threshold

    @property
    def shelved(self) -> bool:
        """Shelved by an operator: scored, but no alarms (the agent lifts an expired shelf)."""
        return self.lifecycle.shelved_until is not None

    def set_bank(self, bank: Optional[MemoryBank]) -> None:
        self.bank = bank.without_enrolment() if bank is not None else None
        self.levels = bank.info.levels_dbfs if bank is not None else None  # the enrolled level range
        if bank is not None and bank.threshold is not None:
            a = self.cfg.alarm
            self.detector = Detector(
                self.threshold,
                a.raise_after,
                a.of_last,
                a.clear_after,
                a.update_seconds,
                a.smooth_windows(self.cfg.hop_seconds),
                a.smooth,
            )
        else:
            self.detector = None

    def apply_config(self, cfg: MachineConfig) -> None:
        """A reloaded machine config (the input stays as opened). The alarm rule takes effect with the
        next ``set_bank``; a new hop rebuilds the windower."""
        if cfg.hop_seconds != self.cfg.hop_seconds:
            self.windower = None
        self.cfg = cfg

    @property
    def calibrated(self) -> bool:
        return self.detector is not None

    @property
    def state(self) -> str:
        if self.shelved:
            return "shelved"
        if self.no_audio or self.condition == "silent":
            return "no_audio"
        if self.condition == "off":
            return "off"
        if self.learner is not None:
            return "learning"
        if not self.calibrated:
            return "uncalibrated"
        return self.detector.state

    @property
    def reason(self) -> str:
        if self.shelved:
            lc = self.lifecycle
            under = self.no_audio_reason if self.no_audio else self.condition_reason
            return (
                f"shelved by {lc.shelved_by}"
                + (f": {lc.shelve_note}" if lc.shelve_note else "")
                + (f"; {under}" if under else "")
            )
        if self.no_audio:
            return self.no_audio_reason
        if self.condition is None and self.learner is not None:
            return "learning normal sound: " + self.learner.describe()
        return self.condition_reason

    def off_level(self) -> Optional[float]:
        """Below this level (dBFS) the machine counts as off: the enrolled range's low end minus the
        margin. None without a margin or for a bank that has no level range (older banks)."""
        if self.levels is None or self.cfg.off_margin_db is None:
            return None
        return self.levels.low - self.cfg.off_margin_db

    def gate(self, w: Window) -> bool:
        """Whether to score a window. Before any score is taken, a window may say "silent" (digital
        silence: a muted or disconnected microphone) or "off" (far below the enrolled level: the
        machine stopped); that sets ``condition`` (the caller publishes a change). After such a
        window, the windows that still overlap it are not scored either: half silence is no
        anomaly of the machine."""
        if w.peak < SILENT_PEAK:
            cond, why = "silent", "digital silence (muted or disconnected microphone?)"
        else:
            off = self.off_level()
            back = off is not None and self.condition == "off" and w.level_dbfs < off + OFF_HYSTERESIS_DB
            if off is not None and (w.level_dbfs < off or back):
                low = self.levels.low
                cond, why = (
                    "off",
                    (
                        f"machine off: level {w.level_dbfs:.0f} dBFS, more than {self.cfg.off_margin_db:g} dB "
                        f"below the quietest enrolled sound ({low:.0f} dBFS)"
                    ),
                )
            else:
                cond, why = None, ""
        if cond != self.condition:
            self.condition, self.condition_reason = cond, why
        self.last_ts = w.ts
        if cond is not None:
            self.settled_at = w.offset + self.window_seconds
            return False
        return w.offset >= self.settled_at

    def _windower(self, position: int) -> Windower:
        """The windower, (re)built when first used or when the device was reopened with another rate or
        channel count; it cuts windows from stream ``position`` (frames)."""
        src = self.source
        w = self.windower
        if w is None or w.sample_rate != src.sample_rate or w.channels != src.channels:
            self.windower = Windower(self.window_seconds, self.cfg.hop_seconds, src.sample_rate, src.channels)
            self.windower.consumed = position
        return self.windower

    def pump(self, now: Optional[float] = None) -> list[Window]:
        """Read what the source delivered and return the windows that are complete."""
        now = self._clock.monotonic() if now is None else now
        ring = self.source.ring  # one read of it: a reopened input brings a new ring
        frames = ring.read()
        if bad := ring.take_nonfinite():
            if not self.nonfinite_samples:
                log.warning(
                    "%s: %d NaN/Inf audio sample(s) replaced by silence (counted in metrics)", self.machine, bad
                )
            self.nonfinite_samples += bad
        lost = ring.overruns + self.source.input_overflows
        if lost != self._overruns_logged:
            what = f"{lost} so far, {ring.frames_lost} frames lost"
            log.warning("%s: audio overrun (%s): the agent fell behind the input", self.machine, what)
            self._overruns_logged = lost
        if len(frames):
            self.last_frames_at = now
        out = []
        wall = self._clock.time()
        stream_clock = self.stream_clocked
        position = self.source.ring.frames_read - len(frames)
        w = self._windower(position)
        starts = self.source.recording_starts(self.recordings.applied)
        for piece, start in self.recordings.split(frames, position, starts):
            if start is not None:  # a new recording: no window spans two (recordings.py)
                w.restart_at(start[0])
                self.recordings.begin(*start)
            out += self._windows(w, piece, wall, stream_clock)
        if out and not self.tally.name:
            self.tally.name = out[0].recording
        return out

    def _windows(self, w: Windower, frames: np.ndarray, wall: float, stream_clock: bool) -> list[Window]:
        out = []
        for samples, end in w.push(frames):
            mono = prepare(samples, w.sample_rate, self.frontend.sample_rate, self.cfg.input.channel)
            n = self.frontend.window_samples
            mono = mono[:n] if len(mono) >= n else np.pad(mono, (0, n - len(mono)))
            level = level_dbfs(mono)
            self.last_level_dbfs = level
            offset = end / w.sample_rate
            out.append(
                Window(
                    self,
                    mono,
                    self.wall_start + offset if stream_clock else wall,
                    offset,
                    level,
                    float(np.abs(mono).max()),
                    # frames are shared between windows only when nothing was resampled per window
                    end - n if w.sample_rate == self.frontend.sample_rate and w.window == n else None,
                    self.recordings.name,
                    self.recordings.take_ended(),
                )
            )
        return out

    def finite_score(self, score: float) -> bool:
        """False for a score that is not a finite number (counted, logged once): the window is skipped."""
        if np.isfinite(score):
            return True
        if not self.nonfinite_scores:
            log.error(
                "%s: a window scored %s; such windows are skipped (check the bank and model)", self.machine, score
            )
        self.nonfinite_scores += 1
        self.skip()
        return False

    def started(self) -> None:
        """The source has just started: wall clock and silence are timed from now, not from loading."""
        self.wall_start, self.last_frames_at = self._clock.time(), self._clock.monotonic()

    def seconds_to_next_window(self) -> Optional[float]:
        """Seconds of audio the source still has to deliver before the next window is complete;
        None for a replay fed as fast as it can be scored (its audio does not arrive at a pace)."""
        if self.stream_clocked:
            return None
        src = self.source
        need = self._windower(src.ring.frames_read).frames_needed() - src.ring.available()
        return max(0, need) / src.sample_rate

    @property
    def drained(self) -> bool:
        """A finished replay with nothing left to read."""
        return self.source.finished and self.source.ring.available() == 0

    def update_liveness(self, now: Optional[float] = None) -> bool:
        """Enter or leave ``no_audio`` from the frames' arrival; True when that changed."""
        now = self._clock.monotonic() if now is None else now
        reason = self.check_liveness(now)
        if reason and not self.no_audio:
            self.no_audio, self.no_audio_reason = True, reason
            return True
        if not reason and self.no_audio and now - self.last_frames_at < 1.0:
            self.no_audio, self.no_audio_reason = False, ""
            return True
        return False

    def check_liveness(self, now: Optional[float] = None) -> Optional[str]:
        """Return a reason when no frames have arrived for ``silence_seconds``."""
        now = self._clock.monotonic() if now is None else now
        limit = self.cfg.input.silence_seconds
        if self.source.finished:
            return None
        if now - self.last_frames_at > limit:
            return f"no audio frames for {now - self.last_frames_at:.0f} s" + (
                f" ({self.source.error})" if self.source.error else ""
            )
        return None  # digital silence is seen in each window at once (``gate``)

    def score(self, outputs: dict[str, np.ndarray]) -> float:
        """Score of one window from the model's outputs for it (batch of 1), with the head the
        machine was calibrated with (``scoring``: k-NN by default)."""
        return float(self.bank.anomaly_scores(outputs)[0])

    def decide(self, score: float, ts: float, samples: Optional[np.ndarray] = None) -> Optional[Decision]:
        """The detector's decision on a scored window (``samples``: its audio, kept for an alarm's
        explanation)."""
        self.last_score, self.last_ts, self.last_samples = score, ts, samples
        self.highest_score = score if self.highest_score is None else max(self.highest_score, score)
        self.windows_processed += 1
        d = self.detector.update(score, ts) if self.detector and not self.shelved else None
        if d is not None and d.kind == "start":
            self.alarms_raised += 1
        self.tally.score(score, d is not None and d.kind == "start")
        return d

    def event(self, w: Window, score: float, d: Optional[Decision]) -> WindowEvent:
        """What the sinks learn of a scored window: the threshold in force (operator's scale included)."""
        b = self.bank
        thr, ver = self.threshold, b.version if b else None
        return WindowEvent(self.machine, w.ts, w.offset, w.recording, score, thr, w.level_dbfs, self.state, ver, d)

    def next_recording(self, name: str) -> str:
        """The decisions have reached recording ``name``: what the last one gave, as a line."""
        line, self.tally = self.tally.summary(self.machine), Tally(name)
        return line

    def skip(self, w: Optional[Window] = None) -> None:
        """A window taken but not scored (uncalibrated, silent, off, or settling after those)."""
        self.windows_processed += 1
        self.tally.windows += 1

    def attach_learner(self, learner: Optional[Learner]) -> bool:
        """Commissioning: windows go to ``learner`` (None: none) instead of the detector until it
        hands back a bank. True when one was attached."""
        self.learner = learner
        return learner is not None

    def learn(self, w: Window, embedding: np.ndarray, indicators: np.ndarray) -> Optional[MemoryBank]:
        """Give a window to the learner; when the learning period ends, its bank takes over (returned)."""
        self.windows_processed += 1
        self.last_ts = w.ts
        bank = self.learner.add(embedding, w.level_dbfs, indicators, w.samples)
        if bank is not None:
            self.learner = None
            self.set_bank(bank)
        return bank

    def stats(self) -> StreamStats:
        src = self.source
        return StreamStats(
            self.machine,
            self.state,
            self.reason,
            self.windows_processed,
            src.ring.frames_written,
            src.ring.overruns + src.input_overflows,
            src.finished,
            self.last_score,
            self.last_level_dbfs,
            self.threshold,
            self.learner.progress() if self.learner is not None else None,
            self.lifecycle.state,
        )

    def status_line(self) -> str:
        score = f"{self.last_score:.4f}" if self.last_score is not None else "-"
        thr = f"{self.threshold:.4f}" if self.threshold is not None else "-"
        level = f"{self.last_level_dbfs:.0f} dBFS" if self.last_level_dbfs is not None else "-"
        return (
            f"{self.machine}: {self.state} score {score} threshold {thr} windows {self.windows_processed} "
            f"level {level} overruns {self.source.ring.overruns}"
        )
