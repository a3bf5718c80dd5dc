"""Evidence for every alarm: the audio around its start as a WAV, and a spectrogram PNG with the
window scores and the threshold drawn under it, so an engineer can hear and see what the agent heard.

Each machine keeps a short history of its audio (mono, at the model's rate) and window scores,
rebuilt from the windows the agent already cuts, so evidence costs no second copy of the input.
When an alarm starts, its files are named at once (the alarm payload carries the names) and written
``post_seconds`` later by a writer thread: the processing thread never waits for the disk, and a
full or failing disk costs the evidence, never the alarm. Disk use is bounded: after each write the
oldest files go until all evidence fits in ``max_mb``.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Optional, Union

import numpy as np

from edge_agent.audio.wavio import to_pcm16, write_wav
from edge_agent.audio.windows import n_frames
from edge_agent.config import Config, EvidenceConfig, realtime_only
from edge_agent.faults import Faults
from edge_agent.model.frontend import stft_magnitude
from edge_agent.runtime.heap import trim
from edge_agent.state.atomic import atomic_write
from edge_agent.state.paths import evidence_dir

log = logging.getLogger("edge_agent.alarms.evidence")

SUFFIXES = (".wav", ".png")


class History:
    """The last ``seconds`` of one stream's audio and scores. Overlapping windows each add only the
    samples past the previous window's end; after a gap (a stall, a stopped source) the whole window.
    Held as the 16-bit samples the WAV gets: half the memory of float32, nothing the WAV holds lost."""

    def __init__(self, sample_rate: int, seconds: float):
        self.sample_rate = sample_rate
        self.capacity = max(1, int(round(seconds * sample_rate)))
        self.seconds = seconds
        self.chunks: deque[np.ndarray] = deque()
        self.size = 0
        self.end: Optional[float] = None  # stream offset (s) of the newest sample
        self.scores: deque[tuple[float, float]] = deque()  # (window end offset, score)

    def add(self, samples: np.ndarray, offset: float) -> None:
        n = len(samples)
        if self.end is not None and offset <= self.end:  # nothing new (never goes back in time)
            return
        if self.end is None or offset - self.end >= n / self.sample_rate:
            new = samples
        else:
            new = (
                samples[n - int(round((offset - self.end) * self.sample_rate)) :] if offset > self.end else samples[:0]
            )
        if len(new):
            # a copy: the samples are a view into the block the source delivered, which in a fast
            # replay is megabytes, and a held view would keep the whole block for the history's
            # length (a fast replay's RSS grew from 135 to 190 MB in two minutes that way)
            self.chunks.append(to_pcm16(new))
            self.size += len(new)
        self.end = offset
        while self.chunks and self.size - len(self.chunks[0]) >= self.capacity:
            self.size -= len(self.chunks.popleft())

    def add_score(self, offset: float, score: float) -> None:
        self.scores.append((offset, score))
        while self.scores and self.scores[0][0] < offset - self.seconds:
            self.scores.popleft()

    def audio(self, start: float, stop: float) -> tuple[np.ndarray, float]:
        """16-bit audio between two stream offsets, clipped to what is held, and its start offset."""
        if not self.chunks:
            return np.zeros(0, np.int16), start
        x = np.concatenate(self.chunks)
        first = self.end - len(x) / self.sample_rate
        i = int(round((max(start, first) - first) * self.sample_rate))
        j = int(round((min(stop, self.end) - first) * self.sample_rate))
        return x[i : max(i, j)], first + i / self.sample_rate


@dataclass
class _Pending:
    machine: str
    alarm_id: str
    start: float  # stream offset of the alarm's start
    until: float  # written once audio up to here is held
    threshold: float
    wav: Path
    png: Path
    note: str = ""  # what changed (the alarm's explanation), written on the spectrogram

    @property
    def files(self) -> dict:
        """The names the alarm's payloads carry."""
        return {"wav": str(self.wav), "png": str(self.png)}


class EvidenceRecorder:
    QUEUE = 32  # alarms waiting for the writer (each holds its 16-bit clip: 0.64 MB per 20 s)
    QUEUE_WAITING = 4  # a replay that waits gains nothing from a deeper queue, only memory
    WAIT_SECONDS = 60.0  # the longest a replay waits for a place in the queue

    def __init__(
        self,
        cfg: EvidenceConfig,
        state_dir: Path,
        sample_rate: int,
        window_seconds: float,
        wait_when_full: bool = False,
        faults: Optional[Faults] = None,
    ):
        """``wait_when_full``: when the writer is ``QUEUE_WAITING`` alarms behind, the scoring thread waits
        for it instead of dropping the evidence. For replays scored as fast as they can be (nothing
        is recorded meanwhile, so waiting loses nothing); a live input never waits."""
        self.cfg = cfg
        self.dir = evidence_dir(state_dir)
        self.sample_rate = sample_rate
        self.keep_seconds = cfg.pre_seconds + cfg.post_seconds + 2 * window_seconds
        self.histories: dict[str, History] = {}
        self.pending: list[_Pending] = []
        # alarm id -> its evidence names (and "error" once they cannot be written), for its update and end
        # events; the writer thread marks failures, so changes go under the lock
        self.by_alarm: dict[str, dict] = {}
        self._names = threading.Lock()
        self.written = 0
        self.failed = 0
        self.wait_when_full = wait_when_full
        self._queue: queue.Queue = queue.Queue(maxsize=self.QUEUE_WAITING if wait_when_full else self.QUEUE)
        self._thread: Optional[threading.Thread] = None
        self.faults = faults or Faults()  # the writer thread runs under its supervision
        self._closing = threading.Event()

    @classmethod
    def for_agent(cls, cfg: Config, frontend, faults: Faults) -> Optional["EvidenceRecorder"]:
        """The agent's recorder, or None with evidence off. A replay scored as fast as it can be
        waits for the writer rather than drop evidence."""
        if not cfg.evidence.enabled:
            return None
        ev = cfg.evidence
        return cls(
            ev, cfg.resolved_state_dir(), frontend.sample_rate, frontend.window_seconds, not realtime_only(cfg), faults
        )

    def new_recording(self, machine: str) -> None:
        """A recording ended (a replayed file): alarms waiting for their post-roll get what it held,
        and no evidence mixes the audio of two recordings."""
        for p in [p for p in self.pending if p.machine == machine]:
            self._finish(p)
        self.histories.pop(machine, None)

    def _history(self, machine: str) -> History:
        h = self.histories.get(machine)
        if h is None:
            h = self.histories[machine] = History(self.sample_rate, self.keep_seconds)
        return h

    # -- called by the agent's processing thread --------------------------------------------------
    def window(self, machine: str, samples: np.ndarray, offset: float) -> None:
        self._history(machine).add(samples, offset)
        for p in [p for p in self.pending if p.machine == machine and offset >= p.until]:
            self._finish(p)

    def score(self, machine: str, offset: float, score: float) -> None:
        self._history(machine).add_score(offset, score)

    def alarm_started(self, machine: str, alarm_id: str, start: float, threshold: float) -> dict:
        """Name the alarm's evidence files (they exist ``post_seconds`` later) for its payloads."""
        folder = self.dir / machine
        p = _Pending(
            machine,
            alarm_id,
            start,
            start + self.cfg.post_seconds,
            threshold,
            folder / f"{alarm_id}.wav",
            folder / f"{alarm_id}.png",
        )
        with self._names:
            self.by_alarm[alarm_id] = p.files
        self.pending.append(p)
        h = self._history(machine)
        if h.end is not None and h.end >= p.until:
            self._finish(p)
        return p.files

    def note(self, alarm_id: str, text: str) -> None:
        """Write ``text`` (what changed) on the alarm's spectrogram, if it is still to be drawn."""
        for p in self.pending:
            if p.alarm_id == alarm_id:
                p.note = text

    def files_of(self, alarm_id: str) -> Optional[dict]:
        return self.by_alarm.get(alarm_id)

    def forget(self, alarm_id: str) -> None:
        """The alarm has ended: its names are no longer needed (the agent runs for months)."""
        with self._names:
            self.by_alarm.pop(alarm_id, None)

    def _failed(self, p: _Pending, why: str) -> None:
        """The files will not exist: the alarm's next events say so instead of naming a dead file."""
        self.failed += 1
        with self._names:
            if p.alarm_id in self.by_alarm:
                self.by_alarm[p.alarm_id] = {**self.by_alarm[p.alarm_id], "error": why}

    def _finish(self, p: _Pending, deadline: Optional[float] = None) -> None:
        self.pending.remove(p)
        h = self._history(p.machine)
        audio, first = h.audio(p.start - self.cfg.pre_seconds, p.until)
        scores = [(t - first, s) for t, s in h.scores if first <= t <= first + len(audio) / self.sample_rate + 1e-6]
        # queued as the 16-bit samples the WAV will hold: a copy of 2 bytes a sample instead of a
        # float view that keeps the history's whole buffer (the writer falls a dozen alarms behind
        # in a fast replay; RSS grew by about 40 MB that way)
        job = (p, to_pcm16(audio), p.start - first, scores)
        if self._thread is None:
            body = self.faults.supervise("evidence writer", self._writer, self._closing)
            self._thread = threading.Thread(target=body, name="evidence", daemon=True)
            self._thread.start()
        wait = self.WAIT_SECONDS if deadline is None else min(self.WAIT_SECONDS, max(0.0, deadline - time.monotonic()))
        try:
            self._queue.put(job, block=self.wait_when_full, timeout=wait)  # no timeout if not blocking
        except queue.Full:  # the disk is far behind: drop evidence, never hold up live detection
            self._failed(p, "dropped: the evidence writer was behind")
            log.error("%s: evidence for alarm %s dropped: the writer is behind", p.machine, p.alarm_id)

    def close(self, timeout: float = 10.0) -> None:
        """At stop: write what is held for alarms still waiting for their post-roll, within
        ``timeout`` seconds in all (a writer stuck for good must not hold up the stop)."""
        deadline = time.monotonic() + timeout
        for p in list(self.pending):
            self._finish(p, deadline)
        if self._thread is not None:
            self._closing.set()  # a writer waiting to restart after a failure stops instead
            ended = True
            try:  # behind the queued alarms, so they are written first
                self._queue.put(None, timeout=max(0.0, deadline - time.monotonic()))
            except queue.Full:
                ended = False
            self._thread.join(max(0.0, deadline - time.monotonic()))
            if self._thread.is_alive():  # the alarms still queued, and the one being written
                log.error(
                    "evidence: the writer did not finish in %.0f s; %d alarm(s) unwritten",
                    timeout,
                    self._queue.qsize() - int(ended) + 1,
                )
            self._thread = None

    # -- the writer thread -----------------------------------------------------------------------
    def _writer(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            self._write(*job)
            trim()  # the audio, spectrogram and image of one alarm are freed: give the memory back
            try:
                enforce_budget(self.dir, int(self.cfg.max_mb * 2**20))
            except Exception as e:  # noqa: BLE001 - the writer must outlive any failure: a replay waits on it
                log.error("evidence: cannot prune %s (%s)", self.dir, e)

    def _write(self, p: _Pending, pcm: np.ndarray, start: float, scores: list) -> None:
        try:
            with atomic_write(p.wav) as f:  # a reader never sees half a file
                write_wav(f, pcm, self.sample_rate)
            with atomic_write(p.png) as f:
                render_png(f, pcm / np.float32(32768.0), self.sample_rate, start, scores, p.threshold, note=p.note)
            self.written += 1
            seconds = len(pcm) / self.sample_rate
            log.info("%s: evidence of alarm %s: %s (%.1f s)", p.machine, p.alarm_id, p.wav, seconds)
        except Exception as e:  # noqa: BLE001 - a full disk or a bad plot costs the evidence, not the agent
            self._failed(p, f"not written: {e}")
            log.error("%s: cannot write the evidence of alarm %s (%s)", p.machine, p.alarm_id, e)


def enforce_budget(root: Path, max_bytes: int) -> list[Path]:
    """Delete the oldest evidence files until all of it fits in ``max_bytes``; returns those deleted."""
    if not root.is_dir():
        return []
    files = []
    for f in root.rglob("*"):
        if f.suffix in SUFFIXES and f.is_file():
            st = f.stat()
            files.append((st.st_mtime, st.st_size, f))
    total = sum(size for _, size, _ in files)
    gone = []
    for _, size, f in sorted(files):
        if total <= max_bytes:
            break
        f.unlink(missing_ok=True)
        total -= size
        gone.append(f)
    return gone


# A perceptual dark-to-bright gradient (black, purple, red, orange, pale yellow) for the spectrogram.
_ANCHORS = np.array([[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], dtype=np.float64)
_LUT = np.stack(
    [np.interp(np.linspace(0, len(_ANCHORS) - 1, 256), np.arange(len(_ANCHORS)), _ANCHORS[:, c]) for c in range(3)],
    axis=-1,
).astype(np.uint8)


def colour(v: np.ndarray) -> np.ndarray:
    """Values in [0, 1] -> uint8 RGB, through a 256-entry table (a byte per pixel, no float copies)."""
    return _LUT[(np.clip(v, 0, 1) * 255).astype(np.uint8)]


def spectrogram_columns(
    audio: np.ndarray, columns: int, n_fft: int = 512, hop: int = 256, block: int = 256
) -> np.ndarray:
    """dB magnitude spectrogram reduced to at most ``columns`` time columns, each the loudest of its
    frames per bin (a short click stays visible): (columns, n_fft // 2 + 1) float32. About ``block``
    frames are transformed at a time, so a 40 s clip never holds all its complex frames at once
    (that was about 20 MB of the evidence writer's peak)."""
    x = np.asarray(audio, np.float32)
    frames = n_frames(len(x), n_fft, hop)
    edges = np.linspace(0, frames, min(columns, frames) + 1).astype(int)
    out = np.empty((len(edges) - 1, n_fft // 2 + 1), np.float32)
    step = max(1, block * (len(edges) - 1) // frames)  # columns per block
    for c0 in range(0, len(out), step):
        c1 = min(len(out), c0 + step)
        f0, f1 = edges[c0], edges[c1]
        mag = stft_magnitude(x[f0 * hop : (f1 - 1) * hop + n_fft], n_fft, hop)
        out[c0:c1] = np.maximum.reduceat(mag, edges[c0:c1] - f0, axis=0)
    np.log10(out + 1e-9, out=out)
    out *= 20
    return out


def render_png(
    out: Union[Path, BinaryIO],
    audio: np.ndarray,
    sample_rate: int,
    start: float,
    scores: list[tuple[float, float]],
    threshold: float,
    width: int = 900,
    note: str = "",
) -> None:
    """Spectrogram (0 to Nyquist, 80 dB range) above the window scores with the threshold dashed and
    the alarm's start marked; times in seconds from the clip's start. Pillow: no plotting stack."""
    from PIL import Image, ImageDraw

    spec_h, score_h, margin = 260, 150, 40
    seconds = max(len(audio) / sample_rate, 1e-3)
    img = Image.new("RGB", (width + 2 * margin, spec_h + score_h + 3 * margin), "white")
    d = ImageDraw.Draw(img)
    if len(audio) >= 512:
        db = spectrogram_columns(audio, width)  # (columns, bins)
        v = (db - (db.max() - 80.0)) / 80.0
        spec = Image.fromarray(colour(v.T[::-1])).resize((width, spec_h))
        img.paste(spec, (margin, margin))
    d.rectangle([margin, margin, margin + width, margin + spec_h], outline="black")
    d.text(
        (margin, 8),
        f"spectrogram 0-{sample_rate // 2000} kHz; below: raw window scores (the alarm rule decides on their "
        "running median)",
        fill="black",
    )

    top = 2 * margin + spec_h
    values = [s for _, s in scores] + [threshold]
    lo, hi = min(0.0, min(values)), max(values) * 1.15 or 1.0

    def x_of(t: float) -> float:
        return margin + width * min(max(t / seconds, 0.0), 1.0)

    def y_of(s: float) -> float:
        return top + score_h * (1 - (s - lo) / (hi - lo))

    d.rectangle([margin, top, margin + width, top + score_h], outline="black")
    y = y_of(threshold)
    for x0 in range(margin, margin + width, 12):  # dashed threshold
        d.line([(x0, y), (min(x0 + 6, margin + width), y)], fill=(200, 0, 0), width=2)
    d.text((margin + 4, y - 14), f"threshold {threshold:.4f}", fill=(200, 0, 0))
    if len(scores) > 1:
        d.line([(x_of(t), y_of(s)) for t, s in scores], fill=(20, 60, 200), width=2)
    for t, s in scores:
        d.ellipse([x_of(t) - 2, y_of(s) - 2, x_of(t) + 2, y_of(s) + 2], fill=(20, 60, 200))
    xs = x_of(start)
    d.line([(xs, margin), (xs, top + score_h)], fill=(200, 0, 0), width=2)
    d.text((xs + 4, margin + 4), "alarm", fill="white")
    step = 5 if seconds > 12 else 1
    for t in range(0, int(seconds) + 1, step):
        d.line([(x_of(t), top + score_h), (x_of(t), top + score_h + 5)], fill="black")
        d.text((x_of(t) - 4, top + score_h + 8), f"{t}s", fill="black")
    d.text((margin, top - 14), f"score (max {max(values[:-1], default=float('nan')):.4f})", fill="black")
    if note:  # what changed against the enrolled sound (bands.py)
        d.text((margin, top + score_h + 22), note, fill=(160, 0, 0))
    img.save(out, format="PNG")
