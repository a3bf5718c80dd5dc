"""Network input URLs: the credentials put in at connect time, and the form that may be shown
(logs, payloads, the status page: never a password)."""

from __future__ import annotations

from typing import Optional
from urllib.parse import quote, urlsplit, urlunsplit


def redacted(url: str) -> str:
    """The URL without its user and password: what logs and the page show."""
    u = urlsplit(url)
    if u.username is None and u.password is None:
        return url
    return _with_netloc(u, "")


def with_credentials(url: str, username: Optional[str], password: Optional[str]) -> str:
    """The URL to connect to: ``username`` (or the URL's own user) and ``password``, percent-encoded."""
    u = urlsplit(url)
    user = username if username is not None else u.username
    if user is None and password is None:
        return url
    auth = quote(user or "", safe="") + (":" + quote(password, safe="") if password is not None else "")
    return _with_netloc(u, auth + "@")


def _with_netloc(u, auth: str) -> str:
    """``u`` with ``auth`` ("user:password@" or "") before its host and port."""
    host = u.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = auth + host + (f":{u.port}" if u.port is not None else "")
    return urlunsplit((u.scheme, netloc, u.path, u.query, u.fragment))


def scrub(text: str, secrets: tuple[str, ...]) -> str:
    """``text`` (a decoder's message) with every secret replaced: ffmpeg names the URL it failed on."""
    for s in secrets:
        if s:
            text = text.replace(s, "***")
    return text
