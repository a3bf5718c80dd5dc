"""Live capture through PortAudio (sounddevice). The device is opened in a supervisor thread and
reopened with exponential back-off when it fails to open or stops delivering (unplugged USB
microphone, PulseAudio restart); the agent sees ``no_audio`` in the meantime and never dies of it.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable, Optional, Union

from edge_agent.audio.devices import import_sounddevice
from edge_agent.audio.ringbuffer import RingBuffer
from edge_agent.audio.source import RING_SECONDS, AudioDeviceError, AudioSource

log = logging.getLogger("edge_agent.audio")

# Audio per callback. PortAudio's own choice (blocksize 0) gave 118 callbacks a second through
# PulseAudio and cost 10-20 % of a core in the capture alone; 0.1 s blocks cost 1.5-2 %
# (docs/performance.md). The agent decides once a hop (1 s), so 0.1 s more latency is nothing.
BLOCK_SECONDS = 0.1


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
        raise AudioDeviceError(
            f"no input device whose name contains {device!r} (inputs: {listing}); see 'edge-agent devices'"
        )
    return matches[0]


class CaptureSource(AudioSource):
    """Live capture. ``stream_factory`` is ``sounddevice.InputStream`` (tests inject one that fails)."""

    def __init__(
        self,
        name: str,
        device: Union[int, str, None],
        sample_rate: int,
        channel: Union[int, str] = "mix",
        stream_factory: Optional[Callable] = None,
        max_backoff: float = 30.0,
        blocksize: Optional[int] = None,
    ):
        """``blocksize``: frames per callback; None for BLOCK_SECONDS at the rate the device opens
        with, 0 for PortAudio's choice."""
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

    @property
    def online(self) -> bool:
        return self.opened.is_set()

    @property
    def address(self) -> str:
        return f"device {self.device_spec if self.device_spec is not None else 'default'}"

    def _negotiate(self, index: Optional[int]) -> tuple[int, int]:
        info = self._sd.query_devices(index, "input")
        max_ch = int(info["max_input_channels"])
        if isinstance(self.channel, int) and self.channel >= max_ch:
            raise AudioDeviceError(
                f"channel {self.channel} requested but device {info['name']!r} has {max_ch} input channels"
            )
        channels = self.channel + 1 if isinstance(self.channel, int) else max_ch
        for rate in (self.wanted_rate, int(info["default_samplerate"])):
            try:
                self._sd.check_input_settings(device=index, channels=channels, samplerate=rate, dtype="int16")
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
                stream = self.stream_factory(
                    device=index,
                    channels=channels,
                    samplerate=rate,
                    dtype="int16",
                    blocksize=self.blocksize if self.blocksize is not None else max(1, int(rate * BLOCK_SECONDS)),
                    callback=self._callback,
                )
                stream.start()
                self.error = None
                self.opened.set()
                log.info(
                    "%s: capturing from device %s at %d Hz, %d channel(s)",
                    self.name,
                    index if index is not None else "default",
                    rate,
                    channels,
                )
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
