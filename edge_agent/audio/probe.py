"""What a network URL carries (``edge-agent probe``): its streams as ffprobe reads them, so a user
can check a camera or a stream before configuring it. Wyoming servers are asked for their first
audio event instead (ffprobe does not speak the protocol)."""

from __future__ import annotations

import json
import subprocess
from typing import Optional
from urllib.parse import urlsplit

from edge_agent.audio.ffmpeg import binary, input_options, plain
from edge_agent.audio.source import AudioDeviceError
from edge_agent.audio.urls import redacted, scrub, with_credentials
from edge_agent.config_input import check_url

TIMEOUT_SECONDS = 15.0


def probe(url: str, username: Optional[str] = None, password: Optional[str] = None, raw: Optional[dict] = None):
    """[{kind: audio|video|..., codec, sample_rate, channels}] of what ``url`` carries; AudioDeviceError
    (exit 2) with ffprobe's reason, without the password, when it cannot be read."""
    try:
        check_url(url)
    except ValueError as e:
        raise AudioDeviceError(f"{url}: {e}") from None
    if urlsplit(url).scheme == "wyoming":
        return _probe_wyoming(url)
    full = with_credentials(url, username, password)
    cmd = [binary("ffprobe"), "-v", "error", "-show_streams", "-of", "json"]
    cmd += input_options(url, "tcp", raw, int(TIMEOUT_SECONDS * 1e6))
    try:
        r = subprocess.run(cmd + [full], capture_output=True, text=True, timeout=TIMEOUT_SECONDS + 5)
    except subprocess.TimeoutExpired:
        raise AudioDeviceError(f"{redacted(url)}: no answer in {TIMEOUT_SECONDS:.0f} s") from None
    if r.returncode != 0:
        lines = scrub(r.stderr.strip().replace(full, redacted(url)), (password or "",)).splitlines()
        why = "; ".join(dict.fromkeys(plain(x) for x in lines if x.strip())) or f"exit code {r.returncode}"
        raise AudioDeviceError(f"{redacted(url)}: {why[-400:]}")
    streams = json.loads(r.stdout or "{}").get("streams", [])
    return [
        {
            "kind": s.get("codec_type", "?"),
            "codec": s.get("codec_name", "?"),
            "sample_rate": int(s["sample_rate"]) if s.get("sample_rate") else None,
            "channels": s.get("channels"),
        }
        for s in streams
    ]


def _probe_wyoming(url: str) -> list[dict]:
    import asyncio

    from edge_agent.audio.network import InputError
    from edge_agent.audio.wyoming_source import MAX_HEADER, read_event

    u = urlsplit(url)

    async def first_audio():
        reader, writer = await asyncio.open_connection(u.hostname, u.port, limit=MAX_HEADER)
        try:
            while True:
                ev = await read_event(reader)
                if ev is None:
                    raise InputError("the server closed the connection before any audio")
                if ev.type in ("audio-start", "audio-chunk"):
                    return ev.data
        finally:
            writer.close()

    try:
        d = asyncio.run(asyncio.wait_for(first_audio(), TIMEOUT_SECONDS))
    except (OSError, InputError, asyncio.TimeoutError) as e:
        raise AudioDeviceError(f"{url}: {e or 'no answer'}") from None
    return [
        {
            "kind": "audio",
            "codec": f"pcm {8 * int(d.get('width', 2))}-bit",
            "sample_rate": d.get("rate"),
            "channels": d.get("channels"),
        }
    ]
