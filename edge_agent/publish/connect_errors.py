"""A failed broker connection in words, with what to check (the MQTT log line and status)."""

from __future__ import annotations

import socket
import ssl
from typing import Optional


def describe_connect_error(err: Optional[BaseException], host: str, port: int) -> str:
    """A failed connection attempt in words, with what to check."""
    if isinstance(err, socket.gaierror):
        return f"cannot resolve the host name {host!r} ({err.strerror}); check mqtt.host"
    if isinstance(err, ConnectionRefusedError):
        return f"connection refused (is the broker running and listening on port {port}? check mqtt.host and mqtt.port)"
    if isinstance(err, (TimeoutError, socket.timeout)):
        return "timed out (is the broker reachable from here? check the network and firewalls)"
    if err is None:
        return "connection failed"
    if isinstance(err, ssl.SSLError):
        return f"TLS handshake failed ({err}); check mqtt.tls"
    return f"{type(err).__name__}: {err}"
