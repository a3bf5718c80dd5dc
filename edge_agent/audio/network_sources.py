"""A machine's ``input.url`` -> its network source: ffmpeg for RTSP, HTTP(S) and raw PCM over TCP,
the Wyoming client for ``wyoming://``; the password put into the URL only here."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from edge_agent.audio.network import NetworkSource
from edge_agent.audio.urls import redacted, with_credentials
from edge_agent.credentials import read_secret

if TYPE_CHECKING:
    from edge_agent.config_input import InputConfig


def password_of(machine: str, inp: "InputConfig"):
    """From ``input.password_file``, else the systemd credential ``<machine>_input_password``."""
    return read_secret(inp.password_file, f"{machine}_input_password", f"machines.{machine}.input.password_file")


def open_network_source(machine: str, inp: "InputConfig", model_rate: int) -> NetworkSource:
    u = urlsplit(inp.url)
    shown = redacted(inp.url)
    if u.scheme == "wyoming":
        from edge_agent.audio.wyoming_source import WyomingSource

        return WyomingSource(machine, u.hostname, u.port, shown, model_rate, inp.reconnect_max_seconds)
    from edge_agent.audio.ffmpeg import FFmpegSource  # its command line needs ffmpeg: a message at start

    password = password_of(machine, inp) if u.scheme in ("rtsp", "rtsps", "http", "https") else None
    url = with_credentials(inp.url, inp.username, password)
    return FFmpegSource(
        machine,
        url,
        shown,
        model_rate,
        inp.channel,
        inp.transport,
        inp.raw.model_dump() if inp.raw is not None else None,
        secrets=tuple(s for s in (password,) if s),
        max_backoff=inp.reconnect_max_seconds,
    )
