"""JSON at the agent's edges: bounded parsing of what others send, strict writing of what it sends.

Parsing an untrusted document checks its size before anything else, then its nesting depth with a
linear scan (``json.loads`` recurses once per level: a few kilobytes of ``[`` raise RecursionError,
which is no ValueError), and refuses ``NaN`` and ``Infinity``, which are not JSON.

Writing never emits ``NaN`` or ``Infinity`` either: strict parsers (a browser's ``JSON.parse``,
most MQTT consumers) refuse the whole document for one of them. A non-finite number becomes
``null``; the caller's payload says why where it matters (a score that could not be computed).
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any, Union

log = logging.getLogger("edge_agent.json")

MAX_DEPTH = 16


class UntrustedJSONError(ValueError):
    """A document refused: the message says why in words a sender can act on."""


def _depth(text: str) -> int:
    """Deepest nesting of arrays and objects outside strings."""
    depth = deepest = 0
    in_string = escaped = False
    for c in text:
        if in_string:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif c in "]}":
            depth -= 1
    return deepest


def _no_constant(name: str) -> Any:
    raise UntrustedJSONError(f"{name} is not a JSON number")


def loads(raw: Union[bytes, str], max_bytes: int, max_depth: int = MAX_DEPTH) -> Any:
    """Parse an untrusted JSON document of at most ``max_bytes`` bytes and ``max_depth`` levels."""
    if isinstance(raw, (bytes, bytearray)):
        if len(raw) > max_bytes:
            raise UntrustedJSONError(f"{len(raw)} bytes; at most {max_bytes} are accepted")
        try:
            text = bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            raise UntrustedJSONError("not UTF-8 text") from None
    else:
        text = raw
        if len(text) > max_bytes:  # characters: at least as many bytes
            raise UntrustedJSONError(f"{len(text)} characters; at most {max_bytes} bytes are accepted")
    if _depth(text) > max_depth:
        raise UntrustedJSONError(f"nested deeper than {max_depth} levels")
    try:
        return json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as e:
        raise UntrustedJSONError(f"not valid JSON ({e.msg} at character {e.pos})") from None
    except RecursionError:  # unreachable after the depth check; kept as the last line of defence
        raise UntrustedJSONError(f"nested deeper than {max_depth} levels") from None


def finite(obj: Any) -> Any:
    """``obj`` with every non-finite float replaced by None (containers copied, the rest as is)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def dumps(obj: Any, **kw) -> str:
    """``json.dumps`` that never writes NaN or Infinity (they become null)."""
    try:
        return json.dumps(obj, allow_nan=False, **kw)
    except ValueError:
        log.debug("non-finite numbers written as null")
        return json.dumps(finite(obj), allow_nan=False, **kw)
