"""What every audio input is: a thread that fills a ring buffer the agent reads."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Optional

from edge_agent.audio.ringbuffer import RingBuffer
from edge_agent.errors import UserError

if TYPE_CHECKING:
    from edge_agent.faults import Faults

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

    def start(self, faults: Optional["Faults"] = None) -> None:
        """Run the source on its own thread; with ``faults``, an exception in it is logged, counted and
        the source started again after a back-off (a replay then begins its files again)."""
        target = self._run if faults is None else faults.supervise(f"audio input {self.name}", self._run, self._stop)
        self._thread = threading.Thread(target=target, name=f"audio-{self.name}", daemon=True)
        self._thread.start()

    @property
    def online(self) -> bool:
        """Delivering audio (or able to): a device that is open, a network stream that is connected."""
        return self.error is None

    def input_info(self) -> dict:
        """What the retained state, the page and the metrics say of this input."""
        return {"online": bool(self.online), "address": self.address, "error": self.error}

    @property
    def address(self) -> str:
        return self.name

    def recording_starts(self, since: int = 0) -> list[tuple[int, str]]:
        """(stream position in frames, name) where each recording begins, from position ``since`` on.
        A live input is one recording; a folder replay starts a new one at every file (``ReplaySource``)."""
        return []

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError
