"""Network streams decoded by an ffmpeg child process: RTSP (audio track only, TCP by default),
HTTP(S) audio streams and files, and raw PCM over TCP. ffmpeg converts to the model's rate and
to the channels the config selects, and writes float32 frames to a pipe the source reads.

A child decoder never outlives the agent: it runs in its own process group, gets SIGKILL when the
thread that started it ends (``PR_SET_PDEATHSIG``, so a SIGKILLed agent leaves no ffmpeg behind),
and is killed at every reconnect and at stop. Its messages are kept (the last few lines, with
credentials scrubbed) to say why a stream failed.
"""

from __future__ import annotations

import collections
import ctypes
import logging
import os
import re
import select
import shutil
import signal
import subprocess
import time
from typing import Iterator, Optional, Union
from urllib.parse import urlsplit

import numpy as np

from edge_agent.audio.network import InputError, NetworkSource
from edge_agent.audio.source import AudioDeviceError
from edge_agent.audio.urls import scrub

log = logging.getLogger("edge_agent.audio.network")

BLOCK_SECONDS = 0.1  # frames per read: the capture's block size
STALL_SECONDS = 10.0  # no bytes for this long: the connection is dead, start again
IO_TIMEOUT_US = int(STALL_SECONDS * 1e6)
_PR_SET_PDEATHSIG = 1
# what ffmpeg says, in a user's words
KNOWN_MESSAGES = (
    ("matches no streams", "the stream has no audio track (video only, or not audio at all?)"),
    ("Invalid data found", "the server sends data that is not audio ffmpeg can read"),
    ("401 Unauthorized", "the server refused the credentials (input.username, input.password_file)"),
    ("Connection refused", "connection refused (is the server running, and the port right?)"),
)
_PREFIX = re.compile(r"^\[[^\]]*@ 0x[0-9a-f]+\]\s*")


def binary(name: str = "ffmpeg") -> str:
    """ffmpeg's (or ffprobe's) path; not installed: a message at start (exit 2), not a reconnect loop."""
    exe = shutil.which(name)
    if exe is None:
        raise AudioDeviceError(f"{name} is not installed (apt-get install ffmpeg): it decodes network streams")
    return exe


def input_options(url: str, transport: str = "tcp", raw: Optional[dict] = None, timeout_us: int = IO_TIMEOUT_US):
    """What ffmpeg and ffprobe are told before the URL: the I/O timeout (RTSP's own option and
    transport, or the protocol's), and a raw PCM sender's format, which it cannot say itself."""
    if urlsplit(url).scheme in ("rtsp", "rtsps"):
        opts = ["-rtsp_transport", transport, "-timeout", str(timeout_us)]
    else:
        opts = ["-rw_timeout", str(timeout_us)]
    if raw is not None:
        opts += ["-f", raw["format"], "-ar", str(raw["rate"]), "-ac", str(raw["channels"])]
    return opts


def ffmpeg_command(
    url: str, rate: int, channel: Union[int, str], transport: str = "tcp", raw: Optional[dict] = None
) -> list[str]:
    """The decoder's command line: ``url`` in, 16-bit frames (the ring's format) at ``rate`` out on
    stdout, one channel for ``mix`` (ffmpeg's downmix) or channels 0..``channel`` (the stream picks
    ``channel``)."""
    cmd = [binary(), "-nostdin", "-hide_banner", "-loglevel", "error", *input_options(url, transport, raw)]
    cmd += ["-i", url, "-vn", "-sn", "-dn", "-map", "0:a:0"]
    if channel == "mix":
        cmd += ["-ac", "1"]
    else:
        n = int(channel) + 1
        cmd += ["-af", f"pan={n}c|" + "|".join(f"c{i}=c{i}" for i in range(n))]
    return cmd + ["-ar", str(rate), "-f", "s16le", "-c:a", "pcm_s16le", "pipe:1"]


def plain(message: str) -> str:
    """An ffmpeg message without its "[tcp @ 0x55d0...] " prefix, which says nothing to a user."""
    return _PREFIX.sub("", message)


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    os.setpgid(0, 0)
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass


def out_channels(channel: Union[int, str]) -> int:
    return 1 if channel == "mix" else int(channel) + 1


class FFmpegSource(NetworkSource):
    def __init__(
        self,
        name: str,
        url: str,
        shown_url: str,
        rate: int,
        channel: Union[int, str] = "mix",
        transport: str = "tcp",
        raw: Optional[dict] = None,
        secrets: tuple[str, ...] = (),
        max_backoff: float = 30.0,
    ):
        super().__init__(name, shown_url, rate, out_channels(channel), max_backoff)
        self._url, self._secrets = url, tuple(s for s in secrets if s)
        self.command = ffmpeg_command(url, rate, channel, transport, raw)
        self._messages: collections.deque[str] = collections.deque(maxlen=5)
        self._said = b""  # the decoder's message line not yet ended

    def _connect(self) -> Iterator[np.ndarray]:
        self._messages.clear()
        self._said = b""
        proc = subprocess.Popen(
            self.command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            preexec_fn=_die_with_parent,
            bufsize=0,
        )
        frame_bytes = 2 * self.channels
        want = max(1, int(self.sample_rate * BLOCK_SECONDS)) * frame_bytes
        out, err = proc.stdout.fileno(), proc.stderr.fileno()
        watch = [out, err]  # the decoder's messages are read here too: no thread per source for them
        pending, last = b"", time.monotonic()
        try:
            while not self._stop.is_set():
                ready, _, _ = select.select(watch, [], [], 0.25)
                if err in ready and not self._take_messages(os.read(err, 4096)):
                    watch.remove(err)
                if out not in ready:
                    if time.monotonic() - last > STALL_SECONDS:
                        raise InputError(f"nothing received for {STALL_SECONDS:.0f} s")
                    continue
                chunk = os.read(out, want)
                if not chunk:
                    break
                pending, last = pending + chunk, time.monotonic()
                n = len(pending) // frame_bytes * frame_bytes
                if n:
                    frames = np.frombuffer(pending[:n], dtype="<i2").reshape(-1, self.channels)
                    pending = pending[n:]
                    yield frames
        finally:
            self._end(proc, err if err in watch else None)
        if not self._stop.is_set():
            raise InputError(self._why_ended(proc))

    def _take_messages(self, data: bytes) -> bool:
        """Keep the decoder's last lines (credentials scrubbed); False at the end of its messages."""
        if not data:
            data, ended = b"\n", True
        else:
            ended = False
        *lines, self._said = (self._said + data).split(b"\n")
        self._said = self._said[-4096:]  # a line without an end is bounded too
        for line in lines:
            text = line.decode("utf-8", "replace").strip().replace(self._url, self.shown_url)
            text = plain(scrub(text, self._secrets))
            if text:
                self._messages.append(text)
                log.debug("%s: ffmpeg: %s", self.name, text)
        return not ended

    def _why_ended(self, proc: subprocess.Popen) -> str:
        said = "; ".join(dict.fromkeys(self._messages)) if self._messages else ""
        for known, words in KNOWN_MESSAGES:
            if known in said:
                return f"{words} ({said[-200:]})"
        if said:
            return f"the decoder stopped: {said[-300:]}"
        return f"the server ended the stream (decoder exit code {proc.returncode})"

    def _end(self, proc: subprocess.Popen, err: Optional[int]) -> None:
        """The decoder and its group go, now."""
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                proc.kill()
        try:
            proc.wait(5.0)
        except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL does not wait
            pass
        while err is not None:  # its last messages say why it ended
            ready, _, _ = select.select([err], [], [], 1.0)
            if not ready or not self._take_messages(os.read(err, 4096)):
                break
        for f in (proc.stdout, proc.stderr):
            try:
                f.close()
            except OSError:
                pass
