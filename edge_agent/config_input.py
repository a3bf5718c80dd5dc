"""The ``input`` section of a machine: a sound card (``device``), recordings (``file``) or a network
stream (``url``). Network credentials come from a file or a systemd credential, never from the
YAML or the URL, so they never appear in logs, payloads or the status page."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional, Union
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edge_agent.config_values import check_host

DAY = 86400.0
MAX_SAMPLE_RATE = 384_000  # Hz: the highest audio interfaces deliver
MAX_CHANNELS = 64
URL_SCHEMES = ("rtsp", "rtsps", "http", "https", "tcp", "wyoming")
URL_EXAMPLES = "rtsp://camera1/stream1, http://host/live.mp3, tcp://10.0.0.7:5000 or wyoming://10.0.0.8:10600"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True, allow_inf_nan=False)


class RawPCM(_Strict):
    """What a raw PCM sender (``tcp://``) sends: it has no header to say so."""

    format: Literal["s16le", "s24le", "s32le", "f32le", "u8"] = "s16le"
    rate: int = Field(gt=0, le=MAX_SAMPLE_RATE)
    channels: int = Field(default=1, ge=1, le=MAX_CHANNELS)


def check_url(v: str) -> str:
    """A network input's URL: a known scheme, a host, a port where the scheme needs one, and no
    password (it belongs in ``password_file``)."""
    if len(v) > 2000 or any(c.isspace() or ord(c) < 32 for c in v):
        raise ValueError("a URL without spaces or control characters (at most 2000 characters) is expected")
    try:
        u = urlsplit(v)
        port = u.port
    except ValueError as e:
        raise ValueError(f"{v!r} is not a URL ({e})") from None
    if u.scheme not in URL_SCHEMES:
        raise ValueError(f"scheme {u.scheme or '(none)'!r} is not one of {', '.join(URL_SCHEMES)}; e.g. {URL_EXAMPLES}")
    if u.password is not None:
        raise ValueError("the URL holds a password: put it in input.password_file (and the user in input.username)")
    if not u.hostname:
        raise ValueError(f"{v!r} names no host; e.g. {URL_EXAMPLES}")
    check_host(u.hostname)
    if u.scheme in ("tcp", "wyoming") and port is None:
        raise ValueError(f"{u.scheme}:// needs a port, e.g. {u.scheme}://{u.hostname}:10600")
    return v


class InputConfig(_Strict):
    device: Optional[Union[int, str]] = None  # name substring or PortAudio index
    file: Optional[Path] = None  # a WAV file or a directory of WAVs, replayed through the same path
    url: Optional[str] = None  # a network stream (audio/network.py)
    realtime: bool = True
    loop: bool = False
    # a folder's files are consecutive pieces of one recording: windows may span them (else each
    # file is its own recording, and nothing carries over from one to the next)
    continuous: bool = False
    channel: Union[int, Literal["mix"]] = "mix"
    sample_rate: Optional[int] = Field(default=None, gt=0, le=MAX_SAMPLE_RATE)  # ask the device for this rate
    silence_seconds: float = Field(default=10.0, gt=0, le=DAY)  # digital silence this long -> no_audio
    # network streams (url)
    username: Optional[str] = Field(default=None, min_length=1, max_length=200)
    password_file: Optional[Path] = None  # else the systemd credential <machine>_input_password
    transport: Literal["tcp", "udp"] = "tcp"  # RTSP's transport: TCP passes firewalls and loses nothing
    raw: Optional[RawPCM] = None  # tcp:// only
    reconnect_max_seconds: float = Field(default=30.0, ge=1.0, le=3600.0)  # the back-off's cap

    @model_validator(mode="after")
    def _one_source(self) -> "InputConfig":
        given = [k for k in ("device", "file", "url") if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError(f"give one of 'device', 'file' or 'url', not {' and '.join(given)}")
        scheme = urlsplit(self.url).scheme if self.url is not None else None
        if scheme == "tcp" and self.raw is None:
            raise ValueError("a tcp:// input sends raw PCM: say what it is in 'raw' (format, rate, channels)")
        if self.raw is not None and scheme != "tcp":
            raise ValueError("'raw' is for tcp:// inputs only (other streams say their own format)")
        if (self.username or self.password_file) and scheme not in ("rtsp", "rtsps", "http", "https"):
            raise ValueError("'username' and 'password_file' are for rtsp(s):// and http(s):// inputs")
        return self

    @field_validator("url")
    @classmethod
    def _url(cls, v):
        return v if v is None else check_url(v)

    @field_validator("channel")
    @classmethod
    def _channel(cls, v):
        if isinstance(v, int) and not 0 <= v < MAX_CHANNELS:
            raise ValueError(f"channel index must be 0-{MAX_CHANNELS - 1}, or 'mix'")
        return v
