"""Real network audio servers on 127.0.0.1 for the tests: ffmpeg's own HTTP server and a raw PCM
sender (``-listen 1``), GStreamer's RTSP server (tests/servers/rtsp_server.py, run with the system
Python that has gi) and a Wyoming microphone server built from the ``wyoming`` package
(tests/servers/wyoming_mic.py). Each serves a WAV in real time, looped, and can be stopped and
started again on the same port."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.brokers import free_port

SERVERS = Path(__file__).parent / "servers"
SYSTEM_PYTHON = "/usr/bin/python3"


def need_ffmpeg() -> None:
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is not installed (scripts/run-tests installs it)")


class Server:
    scheme = ""

    def __init__(self, wav: Path, port: int | None = None):
        self.wav, self.port = wav, port or free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:  # pragma: no cover - per kind
        raise NotImplementedError

    def command(self) -> list[str]:  # pragma: no cover - per kind
        raise NotImplementedError

    def start(self) -> "Server":
        self.proc = subprocess.Popen(self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self._wait_listening()
        return self

    def _wait_listening(self) -> None:
        """ffmpeg's -listen servers accept once they listen; the others say so by accepting too."""
        t_end = time.monotonic() + 15
        while time.monotonic() < t_end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{type(self).__name__} ended: {self.proc.stderr.read().decode()[-500:]}")
            if self._listening():
                return
            time.sleep(0.05)
        raise RuntimeError(f"{type(self).__name__} did not listen on {self.port}")

    def _listening(self) -> bool:
        # /proc/net/tcp lists sockets in LISTEN (0A) with their port in hex: no probe connection,
        # which a one-client server (ffmpeg -listen 1) would take for its client
        port = f":{self.port:04X}"
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            try:
                lines = Path(table).read_text().splitlines()[1:]
            except OSError:
                continue
            if any(f.split()[1].endswith(port) and f.split()[3] == "0A" for f in lines):
                return True
        return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None


class FFmpegHTTP(Server):
    """An MP3 stream over HTTP (as a web radio or a camera's audio endpoint sends it)."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/live.mp3"

    def command(self) -> list[str]:
        return [
            "ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-stream_loop", "-1", "-i", str(self.wav),
            "-c:a", "libmp3lame", "-b:a", "128k", "-f", "mp3", "-listen", "1", self.url,
        ]  # fmt: skip


class RawTCP(Server):
    """Raw 16-bit PCM over TCP, as ``arecord -f S16_LE -r 16000 | nc -l PORT`` sends it."""

    @property
    def url(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [
            "ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-stream_loop", "-1", "-i", str(self.wav),
            "-f", "s16le", "-ar", "16000", "-ac", "1", f"tcp://127.0.0.1:{self.port}?listen=1",
        ]  # fmt: skip


class RTSP(Server):
    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}/machine"

    def command(self) -> list[str]:
        return [SYSTEM_PYTHON, str(SERVERS / "rtsp_server.py"), str(self.port), str(self.wav)]


class WyomingMic(Server):
    @property
    def url(self) -> str:
        return f"wyoming://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [sys.executable, str(SERVERS / "wyoming_mic.py"), str(self.port), str(self.wav)]


class Garbage(Server):
    """A TCP server that answers every client with bytes that are no protocol at all."""

    def __init__(self, port: int | None = None, text: bytes = b"this is not audio\n"):
        super().__init__(Path("/dev/null"), port)
        self.text = text

    @property
    def url(self) -> str:
        return f"wyoming://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        code = (
            "import socket,sys,time\n"
            "s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
            f"s.bind(('127.0.0.1',{self.port}));s.listen(8)\n"
            "while True:\n"
            "  c,_=s.accept()\n"
            "  try:\n"
            f"    c.sendall({self.text!r}*50);time.sleep(0.2)\n"
            "  except OSError: pass\n"
            "  c.close()\n"
        )
        return [sys.executable, "-c", code]


def ffmpeg_children(marker: str) -> list[int]:
    """Pids of running ffmpeg processes whose command line holds ``marker`` (a port)."""
    out = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            cmd = (p / "cmdline").read_bytes().split(b"\0")
            state = (p / "stat").read_text().split()[2]
        except OSError:
            continue
        if cmd and cmd[0].endswith(b"ffmpeg") and any(marker.encode() in c for c in cmd) and state != "Z":
            out.append(int(p.name))
    return out


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False
