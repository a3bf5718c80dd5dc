"""Audio sources that fill a ring buffer: live capture through PortAudio (sounddevice) and replay
of WAV files through the very same buffer, so tests, the demo and offline users run the
production path.

A capture source opens its device in a supervisor thread and reopens it with exponential back-off
when it fails to open or stops delivering (unplugged USB microphone, PulseAudio restart); the agent
sees ``no_audio`` in the meantime and never dies of it.
"""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Callable, Optional, Union

import numpy as np

from .dataset import iter_wavs
from .devices import import_sounddevice
from .errors import UserError
from .frontend import resample, to_mono
from .ringbuffer import RingBuffer
from .wavio import AudioFileError, WavInfo, read_wav, wav_info

log = logging.getLogger("edge_agent.audio")

RING_SECONDS = 30.0


class AudioDeviceError(UserError):
    """An input device that cannot be found or opened; the message lists what there is."""


class AudioSource:
    """Common state of every source; the consumer reads ``ring``."""

    name: str
    sample_rate: int
    channels: int
    ring: RingBuffer

    def __init__(self, name: str):
        self.name = name
        self.error: Optional[str] = None  # the last problem, for status and logs
        self.finished = False  # a replay that has played everything (and does not loop)
        self.input_overflows = 0  # PortAudio reported input overflow
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"audio-{self.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


def find_device(device: Union[int, str, None], sd=None) -> int | None:
    """A PortAudio input device index from an index or a case-insensitive name substring."""
    if sd is None:
        sd = import_sounddevice()
    devices = sd.query_devices()
    inputs = [(i, d) for i, d in enumerate(devices) if d["max_input_channels"] > 0]
    listing = "; ".join(f"{i}: {d['name']}" for i, d in inputs) or "none"
    if device is None:
        return None  # PortAudio's default input
    if isinstance(device, int) or (isinstance(device, str) and device.isdigit()):
        i = int(device)
        if not any(i == j for j, _ in inputs):
            raise AudioDeviceError(f"no input device with index {i} (inputs: {listing})")
        return i
    matches = [i for i, d in inputs if device.lower() in d["name"].lower()]
    if not matches:
        raise AudioDeviceError(f"no input device whose name contains {device!r} (inputs: {listing}); see 'edge-agent devices'")
    return matches[0]


class CaptureSource(AudioSource):
    """Live capture. ``stream_factory`` is ``sounddevice.InputStream`` (tests inject one that fails)."""

    def __init__(self, name: str, device: Union[int, str, None], sample_rate: int, channel: Union[int, str] = "mix",
                 stream_factory: Optional[Callable] = None, max_backoff: float = 30.0, blocksize: int = 0):
        super().__init__(name)
        sd = import_sounddevice()
        self._sd = sd
        self.device_spec = device
        self.wanted_rate = sample_rate
        self.channel = channel
        self.stream_factory = stream_factory or sd.InputStream
        self.max_backoff = max_backoff
        self.blocksize = blocksize
        self.sample_rate = sample_rate
        self.channels = 1
        self.ring = RingBuffer(int(RING_SECONDS * sample_rate), 1)
        self.opened = threading.Event()
        self.reopen_count = 0

    def _negotiate(self, index: Optional[int]) -> tuple[int, int]:
        info = self._sd.query_devices(index, "input")
        max_ch = int(info["max_input_channels"])
        if isinstance(self.channel, int) and self.channel >= max_ch:
            raise AudioDeviceError(f"channel {self.channel} requested but device {info['name']!r} has {max_ch} input channels")
        channels = self.channel + 1 if isinstance(self.channel, int) else max_ch
        for rate in (self.wanted_rate, int(info["default_samplerate"])):
            try:
                self._sd.check_input_settings(device=index, channels=channels, samplerate=rate, dtype="float32")
                return rate, channels
            except Exception:  # noqa: BLE001 - PortAudio says no with several exception types
                continue
        raise AudioDeviceError(f"device {info['name']!r} accepts neither {self.wanted_rate} Hz nor its default rate")

    def _callback(self, indata, frames, time_info, status) -> None:
        # Real-time thread: copy and count, nothing else. Once stopping, the device's last buffers
        # (and the overflow an abort reports) are not the agent falling behind.
        if self._stop.is_set():
            return
        if status.input_overflow:
            self.input_overflows += 1
        self.ring.write(indata)

    def _run(self) -> None:
        backoff = 1.0
        while not self._stop.is_set():
            stream = None
            try:
                index = find_device(self.device_spec, self._sd)
                rate, channels = self._negotiate(index)
                if rate != self.sample_rate or channels != self.channels:
                    self.sample_rate, self.channels = rate, channels
                    self.ring = RingBuffer(int(RING_SECONDS * rate), channels)
                # No finished_callback: PortAudio would call it from its own thread while another
                # thread closes the stream, which can deadlock on the GIL. Loss is found by polling.
                stream = self.stream_factory(device=index, channels=channels, samplerate=rate, dtype="float32",
                                             blocksize=self.blocksize, callback=self._callback)
                stream.start()
                self.error = None
                self.opened.set()
                log.info("%s: capturing from device %s at %d Hz, %d channel(s)", self.name, index if index is not None else "default", rate, channels)
                backoff = 1.0
                while not self._stop.is_set():
                    if not stream.active:
                        raise AudioDeviceError("the input stream stopped")
                    self._stop.wait(0.2)
            except Exception as e:  # noqa: BLE001 - any device failure means: report and retry
                self.error = f"{type(e).__name__}: {e}"
                log.warning("%s: audio input failed (%s); retrying in %.0f s", self.name, self.error, backoff)
            finally:
                self.opened.clear()
                if stream is not None:
                    try:
                        stream.abort(ignore_errors=True)  # stop the callback at once, without draining buffers
                        stream.close(ignore_errors=True)
                    except Exception:  # noqa: BLE001
                        pass
            if self._stop.is_set():
                break
            self.reopen_count += 1
            self._stop.wait(backoff)
            backoff = min(self.max_backoff, backoff * 2)


class ReplaySource(AudioSource):
    """Streams a WAV file or a directory of WAVs (sorted by name) into the ring buffer, paced in
    real time or as fast as the consumer reads, optionally looping. Files with another rate or
    channel count than the first are converted to match it; unreadable files are skipped with a
    log line."""

    def __init__(self, name: str, path: Path, realtime: bool = True, loop: bool = False, block_seconds: float = 0.1):
        super().__init__(name)
        self.path = Path(path)
        if not self.path.exists():
            raise AudioFileError(f"{self.path}: no such file or folder (machines.{name}.input.file)")
        self.files = list(iter_wavs([self.path]))
        if not self.files:
            raise AudioFileError(f"{self.path}: no WAV files to replay (machines.{name}.input.file)")
        self.realtime, self.loop, self.block_seconds = realtime, loop, block_seconds
        first = self._first_readable()
        self.sample_rate, self.channels = first.sample_rate, first.channels
        self.ring = RingBuffer(int(RING_SECONDS * self.sample_rate), self.channels)
        self.stalled = threading.Event()  # tests: hold the stream without ending it
        self.frames_sent = 0
        self.bad_files: set[str] = set()  # files whose error was logged
        # (file, wall time its first frames entered the ring buffer, stream offset in frames)
        self.file_starts: list[tuple[Path, float, int]] = []

    def _first_readable(self) -> WavInfo:
        """The first file whose header reads; the stream takes its rate and channel count."""
        errors = []
        for f in self.files:
            try:
                return wav_info(f)
            except AudioFileError as e:
                errors.append(str(e))
        raise AudioFileError(f"{self.path}: no readable WAV files ({'; '.join(errors)})")

    def _load(self, f: Path) -> Optional[np.ndarray]:
        try:
            x, sr = read_wav(f)
        except AudioFileError as e:
            if str(f) not in self.bad_files:  # once per file: a looping replay must not repeat it every pass
                self.bad_files.add(str(f))
                log.error("%s: skipping %s", self.name, e)
            return None
        self.bad_files.discard(str(f))
        if x.shape[1] != self.channels:
            x = to_mono(x, "mix")[:, None]
            x = np.repeat(x, self.channels, axis=1) if self.channels > 1 else x
        if sr != self.sample_rate:
            x = resample(x.T, sr, self.sample_rate).T
        return np.ascontiguousarray(x, dtype=np.float32)

    def _run(self) -> None:
        block = max(1, int(self.block_seconds * self.sample_rate))
        t0 = time.monotonic()
        backoff = 1.0
        while not self._stop.is_set():
            before = self.frames_sent
            for f in self.files:
                x = self._load(f)
                if x is None:
                    continue
                self.file_starts.append((f, 0.0, self.frames_sent))
                log.debug("%s: replaying %s", self.name, f.name)
                for s in range(0, len(x), block):
                    while self.stalled.is_set() and not self._stop.is_set():
                        self._stop.wait(0.05)
                        t0 = time.monotonic() - self.frames_sent / self.sample_rate
                    chunk = x[s : s + block]
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
                    log.error("%s: nothing to replay in %s (%s); retrying every %.0f s at most", self.name, self.path,
                              "no WAV files" if not self.files else f"{len(self.files)} file(s), none with audio", 30.0)
                self._stop.wait(backoff)
                backoff = min(30.0, backoff * 2)
                t0 = time.monotonic() - self.frames_sent / self.sample_rate
            elif backoff > 1.0:
                log.info("%s: replaying %s again", self.name, self.path)
                backoff = 1.0
            self.files = list(iter_wavs([self.path])) if self.path.exists() else []
        self.finished = True
