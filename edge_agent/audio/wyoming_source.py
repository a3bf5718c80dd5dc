"""Home Assistant's Wyoming protocol as an input: a microphone server (wyoming-mic-external on a
Raspberry Pi next to the machine, or go2rtc serving any camera) sends ``audio-start``,
``audio-chunk`` and ``audio-stop`` events to the agent, which connects as a client.

Events are read with bounds (header, data and payload sizes, audio parameters in range) rather
than through the ``wyoming`` package's reader, which reads any payload length a server announces
and takes a malformed header for the end of the stream. The package's ``Event`` carries them;
its audio module is not imported (it needs ``audioop``, which Python 3.13 no longer has).
"""

from __future__ import annotations

import asyncio
import json
from typing import Iterator, Optional

import numpy as np

from edge_agent.audio.network import InputError, NetworkSource
from edge_agent.config_input import MAX_CHANNELS, MAX_SAMPLE_RATE

MAX_HEADER = 64 * 1024  # bytes of one JSON header line
MAX_DATA = 64 * 1024
MAX_PAYLOAD = 4 * 1024 * 1024  # one chunk: 1 s of 8-channel 48 kHz 32-bit audio is 1.5 MB
STALL_SECONDS = 10.0
WIDTHS = {1: np.uint8, 2: np.dtype("<i2"), 4: np.dtype("<i4")}


async def read_event(reader: asyncio.StreamReader):
    """The next event, or None at the end of the stream; InputError for what is not the protocol."""
    from wyoming.event import Event

    try:
        line = await reader.readuntil(b"\n")
    except asyncio.IncompleteReadError as e:
        if not e.partial:
            return None
        raise InputError("the server closed the connection inside an event") from None
    except asyncio.LimitOverrunError:
        raise InputError(f"the server sent a header line over {MAX_HEADER} bytes: not the Wyoming protocol") from None
    try:
        head = json.loads(line)
        kind = head["type"]
        data = head.get("data") or {}
        data_length = int(head.get("data_length") or 0)
        payload_length = int(head.get("payload_length") or 0)
        if not isinstance(kind, str) or not isinstance(data, dict):
            raise ValueError("type or data of the wrong kind")
    except (ValueError, KeyError, TypeError) as e:
        raise InputError(f"the server sent something that is not the Wyoming protocol ({e})") from None
    if not 0 <= data_length <= MAX_DATA or not 0 <= payload_length <= MAX_PAYLOAD:
        raise InputError(f"the server announced {data_length + payload_length} bytes for one event: refused")
    try:
        extra = await reader.readexactly(data_length) if data_length else None
        payload = await reader.readexactly(payload_length) if payload_length else None
    except asyncio.IncompleteReadError:
        raise InputError("the server closed the connection inside an event") from None
    if extra is not None:
        try:
            data.update(json.loads(extra))
        except (ValueError, TypeError, AttributeError) as e:
            raise InputError(f"the server sent event data that is not JSON ({e})") from None
    return Event(type=kind, data=data, payload=payload)


def pcm_frames(audio: bytes, width: int, channels: int) -> np.ndarray:
    """Interleaved PCM -> (frames, channels): 16-bit samples as they are (the ring's format), other
    widths as float32 in [-1, 1]."""
    x = np.frombuffer(audio[: len(audio) // (width * channels) * width * channels], dtype=WIDTHS[width])
    if width == 2:
        return x.reshape(-1, channels)
    if width == 1:
        y = (x.astype(np.float32) - 128.0) / 128.0
    else:
        y = x.astype(np.float32) / float(2 ** (8 * width - 1))
    return y.reshape(-1, channels)


def _check_format(rate, width, channels) -> tuple[int, int, int]:
    try:
        rate, width, channels = int(rate), int(width), int(channels)
    except (TypeError, ValueError):
        raise InputError("the server's audio format is not numbers") from None
    if not 1 <= rate <= MAX_SAMPLE_RATE or width not in WIDTHS or not 1 <= channels <= MAX_CHANNELS:
        raise InputError(f"the server's audio format is out of range ({rate} Hz, {width} bytes, {channels} channels)")
    return rate, width, channels


class WyomingSource(NetworkSource):
    def __init__(self, name: str, host: str, port: int, shown_url: str, rate: int, max_backoff: float = 30.0):
        super().__init__(name, shown_url, rate, 1, max_backoff)
        self.host, self.port = host, port

    def _connect(self) -> Iterator[np.ndarray]:
        loop = asyncio.new_event_loop()
        try:
            try:
                reader, writer = loop.run_until_complete(
                    asyncio.wait_for(asyncio.open_connection(self.host, self.port, limit=MAX_HEADER), STALL_SECONDS)
                )
            except (OSError, asyncio.TimeoutError) as e:
                raise InputError(f"cannot connect to {self.host}:{self.port} ({_words(e)})") from None
            try:
                while not self._stop.is_set():
                    frames = loop.run_until_complete(self._next_audio(reader))
                    if frames is None:
                        return
                    if len(frames):
                        yield frames
            finally:
                writer.close()
        finally:
            loop.close()

    async def _next_audio(self, reader) -> Optional[np.ndarray]:
        """The next chunk's frames (empty for other events), None at the end of the stream."""
        try:
            event = await asyncio.wait_for(read_event(reader), STALL_SECONDS)
        except asyncio.TimeoutError:
            raise InputError(f"nothing received for {STALL_SECONDS:.0f} s") from None
        except OSError as e:
            raise InputError(f"the connection failed ({_words(e)})") from None
        if event is None:
            return None
        if event.type == "audio-stop":
            raise InputError("the server stopped the audio (audio-stop)")
        if event.type not in ("audio-start", "audio-chunk"):
            return np.zeros((0, self.channels), np.float32)  # other events (info, describe) say nothing here
        d = event.data
        rate, width, channels = _check_format(d.get("rate"), d.get("width"), d.get("channels"))
        self._use_format(rate, channels)
        if event.type == "audio-start":
            return np.zeros((0, channels), np.float32)
        return pcm_frames(event.payload or b"", width, channels)


def _words(e: BaseException) -> str:
    if isinstance(e, ConnectionRefusedError):
        return "connection refused"
    if isinstance(e, asyncio.TimeoutError):
        return "timed out"
    return getattr(e, "strerror", None) or str(e) or type(e).__name__
