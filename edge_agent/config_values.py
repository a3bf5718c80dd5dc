"""Checks of config values that become network names: MQTT topic levels, host names, listen addresses.
Each returns the value or raises ValueError with an example (pydantic names the key)."""

from __future__ import annotations

import ipaddress


def check_topic_levels(v: str, what: str, example: str) -> str:
    """Levels separated by '/', none empty, no wildcards or NUL: the agent publishes under it and
    subscribes below it, so a '#' or '+' would make paho refuse the subscription."""
    if not v or len(v) > 200 or any(c in v for c in "#+\0") or any(not lvl for lvl in v.split("/")):
        raise ValueError(
            f"{v!r} is not a valid {what}: use levels like {example}, without '#', '+', empty levels or a "
            "leading/trailing '/'"
        )
    return v


def check_host(v: str) -> str:
    """An IP address or a host name that can be looked up (IDNA-encodable, no spaces or empty labels)."""
    try:
        ipaddress.ip_address(v.strip("[]"))
        return v
    except ValueError:
        pass
    try:
        ok = not any(c.isspace() for c in v) and bool(v.encode("idna")) and all(v.rstrip(".").split("."))
    except UnicodeError:
        ok = False
    if not ok:
        raise ValueError(f"{v!r} is not a host name or IP address, e.g. 'localhost', 'broker.plant1' or '10.0.0.5'")
    return v


def check_listen(v: str, port_example: str) -> str:
    """``host:port`` with a port 0-65535 (0: any free port, the log names it)."""
    host, sep, port = v.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536 or any(c.isspace() for c in v):
        raise ValueError(
            f"{v!r} is not host:port, e.g. '127.0.0.1:{port_example}' (or '0.0.0.0:{port_example}' for every interface)"
        )
    return v
