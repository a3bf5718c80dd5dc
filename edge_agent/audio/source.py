"""What every audio input is: a thread that fills a ring buffer the agent reads."""

from __future__ import annotations

import threading
from typing import Optional

from ..errors import UserError
from .ringbuffer import RingBuffer

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
