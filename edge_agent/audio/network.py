"""Network audio inputs, supervised: a source that cannot connect, stops sending or sends what it
should not is ``no_audio`` with the reason in words (the stream's liveness check), and reconnects
by itself with an exponential back-off from 1 s up to ``reconnect_max_seconds``, which starts
again from 1 s after a connection that delivered audio for ``HEALTHY_SECONDS``.

A subclass's ``_connect`` yields blocks of frames (16-bit, or float32) until the connection ends
(by raising ``InputError`` with what happened); this class runs it, fills the ring, and keeps the
state that health, metrics and the status page show (``online``, ``error``, ``failures``).
"""

from __future__ import annotations

import logging
import time
from typing import Iterator, Optional

import numpy as np

from edge_agent.audio.ringbuffer import RingBuffer
from edge_agent.audio.source import RING_SECONDS, AudioSource

log = logging.getLogger("edge_agent.audio.network")

HEALTHY_SECONDS = 30.0  # a connection that delivered this long resets the back-off
REPEAT_LOG_SECONDS = 60.0  # the same failure is logged again at most this often


class InputError(Exception):
    """A network input failed; the message says how, in words (never a password)."""


class NetworkSource(AudioSource):
    def __init__(self, name: str, shown_url: str, sample_rate: int, channels: int, max_backoff: float = 30.0):
        super().__init__(name)
        self.shown_url = shown_url  # without credentials
        self.sample_rate, self.channels = sample_rate, channels
        self.ring = RingBuffer(int(RING_SECONDS * sample_rate), channels)
        self.max_backoff = max_backoff
        self._online = False
        self.failures = 0

    @property
    def online(self) -> bool:
        return self._online

    @property
    def address(self) -> str:
        return self.shown_url

    def _connect(self) -> Iterator[np.ndarray]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _use_format(self, sample_rate: int, channels: int) -> None:
        """The stream says its own rate and channels (Wyoming): a new ring when they change."""
        if (sample_rate, channels) != (self.sample_rate, self.channels):
            self.sample_rate, self.channels = sample_rate, channels
            self.ring = RingBuffer(int(RING_SECONDS * sample_rate), channels)

    def _run(self) -> None:
        backoff, last_logged, last_error = 1.0, float("-inf"), None
        while not self._stop.is_set():
            connected_at: Optional[float] = None
            try:
                for block in self._connect():
                    if connected_at is None:
                        connected_at = time.monotonic()
                        self._online, self.error = True, None
                        log.info("%s: receiving audio from %s (%d Hz)", self.name, self.shown_url, self.sample_rate)
                    self.ring.write(block)  # NaN/Inf are stored as silence and counted, as for every source
                    if self._stop.is_set():
                        break
                if not self._stop.is_set():
                    raise InputError("the server ended the stream")
            except InputError as e:
                self.error = str(e)
            except Exception as e:  # noqa: BLE001 - any failure of a connection: report, retry
                self.error = f"{type(e).__name__}: {e}"
            finally:
                self._online = False
            if self._stop.is_set():
                break
            self.failures += 1
            if connected_at is not None and time.monotonic() - connected_at >= HEALTHY_SECONDS:
                backoff = 1.0  # it had worked for a while: try again soon
            now = time.monotonic()
            if self.error != last_error or now - last_logged >= REPEAT_LOG_SECONDS:
                log.warning("%s: %s: %s; reconnecting in %.0f s", self.name, self.shown_url, self.error, backoff)
                last_logged, last_error = now, self.error
            self._stop.wait(backoff)
            backoff = min(self.max_backoff, backoff * 2)
