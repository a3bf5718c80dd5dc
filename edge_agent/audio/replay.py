"""Replay of WAV files through the very ring buffer live capture fills, so tests, the demo and
offline users run the production path."""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from edge_agent.audio.convert import resample, to_mono
from edge_agent.audio.ringbuffer import RingBuffer
from edge_agent.audio.source import RING_SECONDS, AudioSource
from edge_agent.audio.wavio import AudioFileError, WavInfo, iter_wavs, pcm16_blocks, read_wav, wav_info

log = logging.getLogger("edge_agent.audio")
FILE_STARTS_KEPT = 1000


class ReplaySource(AudioSource):
    """Streams a WAV file or a directory of WAVs (sorted by name) into the ring buffer, paced in
    real time or as fast as the consumer reads, optionally looping. Files with another rate or
    channel count than the first are converted to match it; unreadable files are skipped with a
    log line. Each file (and each pass of a loop) is its own recording (``recording_starts``):
    no window spans two of them, unless ``continuous`` says the files are consecutive pieces of
    one recording (a recorder writing one-minute files)."""

    def __init__(
        self,
        name: str,
        path: Path,
        realtime: bool = True,
        loop: bool = False,
        block_seconds: float = 0.1,
        continuous: bool = False,
    ):
        super().__init__(name)
        self.path = Path(path)
        if not self.path.exists():
            raise AudioFileError(f"{self.path}: no such file or folder (machines.{name}.input.file)")
        self.files = list(iter_wavs([self.path]))
        if not self.files:
            raise AudioFileError(f"{self.path}: no WAV files to replay (machines.{name}.input.file)")
        self.realtime, self.loop, self.block_seconds, self.continuous = realtime, loop, block_seconds, continuous
        first = self._first_readable()
        self.sample_rate, self.channels = first.sample_rate, first.channels
        self.ring = RingBuffer(int(RING_SECONDS * self.sample_rate), self.channels)
        self.stalled = threading.Event()  # tests: hold the stream without ending it
        self.frames_sent = 0
        self.bad_files: set[str] = set()  # files whose error was logged
        # (file, wall time its first frames entered the ring buffer, stream offset in frames): the
        # latest ones (a looping replay runs for months)
        self.file_starts: deque[tuple[Path, float, int]] = deque(maxlen=FILE_STARTS_KEPT)

    def _first_readable(self) -> WavInfo:
        """The first file whose header reads; the stream takes its rate and channel count."""
        errors = []
        for f in self.files:
            try:
                return wav_info(f)
            except AudioFileError as e:
                errors.append(str(e))
        raise AudioFileError(f"{self.path}: no readable WAV files ({'; '.join(errors)})")

    @property
    def address(self) -> str:
        return str(self.path)

    def recording_starts(self, since: int = 0) -> list[tuple[int, str]]:
        if self.continuous:
            return [(0, str(self.path.name))]
        # the newest, from a copy (the replay thread appends, before a file's first frame enters the
        # ring): the stream asks at every pump, and a looping replay keeps up to FILE_STARTS_KEPT
        out = []
        for f, _, pos in reversed(list(self.file_starts)):
            if pos < since:
                break
            out.append((pos, f.name))
        return out[::-1]

    def _blocks(self, f: Path, block: int) -> Optional[Iterator[np.ndarray]]:
        """The file's frames, ``block`` at a time: a 16-bit file of the stream's format is read as
        it plays; any other is read whole and converted. None (logged once) if it cannot be used."""
        blocks = pcm16_blocks(f, block, self.sample_rate, self.channels)
        first = next(blocks, None) if blocks is not None else None
        if first is not None:
            self.bad_files.discard(str(f))
            return itertools.chain([first], blocks)
        x = self._load(f)
        return None if x is None else (x[s : s + block] for s in range(0, len(x), block))

    def _load(self, f: Path) -> Optional[np.ndarray]:
        try:
            x, sr = read_wav(f, pcm16=True)  # 16-bit files stay 16-bit, the ring's format
        except AudioFileError as e:
            if str(f) not in self.bad_files:  # once per file: a looping replay must not repeat it every pass
                self.bad_files.add(str(f))
                log.error("%s: skipping %s", self.name, e)
            return None
        self.bad_files.discard(str(f))
        if x.dtype == np.int16 and (x.shape[1] != self.channels or sr != self.sample_rate):
            x = x.astype(np.float32) / 32768.0
        if x.shape[1] != self.channels:
            x = to_mono(x, "mix")[:, None]
            x = np.repeat(x, self.channels, axis=1) if self.channels > 1 else x
        if sr != self.sample_rate:
            x = resample(x.T, sr, self.sample_rate).T
        return np.ascontiguousarray(x)

    def _run(self) -> None:
        block = max(1, int(self.block_seconds * self.sample_rate))
        t0 = time.monotonic()
        backoff = 1.0
        while not self._stop.is_set():
            before = self.frames_sent
            for f in self.files:
                blocks = self._blocks(f, block)
                if blocks is None:
                    continue
                self.file_starts.append((f, 0.0, self.frames_sent))
                log.debug("%s: replaying %s", self.name, f.name)
                for s, chunk in enumerate(blocks):
                    while self.stalled.is_set() and not self._stop.is_set():
                        self._stop.wait(0.05)
                        t0 = time.monotonic() - self.frames_sent / self.sample_rate
                    if self.realtime:
                        # Deliver a block when its last sample would have been recorded, as a device does.
                        delay = t0 + (self.frames_sent + len(chunk)) / self.sample_rate - time.monotonic()
                        if delay > 0:
                            self._stop.wait(delay)
                    else:  # as fast as possible, but never overwrite what was not read yet
                        while self.ring.free() < len(chunk) and not self._stop.is_set():
                            self._stop.wait(0.005)
                    if self._stop.is_set():
                        return  # never write into a full ring on the way out
                    if s == 0:
                        self.file_starts[-1] = (f, time.time(), self.frames_sent)
                    self.ring.write(chunk)
                    self.frames_sent += len(chunk)
            if not self.loop:
                break
            if self.frames_sent == before:
                # A looping replay with nothing playable (empty, corrupt or deleted files) must not
                # spin: wait, with back-off, and look at the folder again.
                if backoff == 1.0:
                    log.error(
                        "%s: nothing to replay in %s (%s); retrying every %.0f s at most",
                        self.name,
                        self.path,
                        "no WAV files" if not self.files else f"{len(self.files)} file(s), none with audio",
                        30.0,
                    )
                self._stop.wait(backoff)
                backoff = min(30.0, backoff * 2)
                t0 = time.monotonic() - self.frames_sent / self.sample_rate
            elif backoff > 1.0:
                log.info("%s: replaying %s again", self.name, self.path)
                backoff = 1.0
            self.files = list(iter_wavs([self.path])) if self.path.exists() else []
        self.finished = True
