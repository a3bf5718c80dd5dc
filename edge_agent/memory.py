"""Giving freed heap memory back to the operating system.

glibc keeps the memory of freed blocks for reuse, and with many short-lived arrays of different
sizes (an alarm's audio, its spectrogram and PNG, batches of windows in a fast replay) the process
keeps growing although little is alive: measured, 38 MB of a fast replay's RSS were released by one
``malloc_trim``. The agent calls ``trim`` after each piece of evidence and at every status line.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from functools import lru_cache

log = logging.getLogger("edge_agent.memory")


@lru_cache(maxsize=1)
def _malloc_trim():
    name = ctypes.util.find_library("c")
    try:
        fn = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to do
        fn = None
    if fn is not None:
        fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
    return fn


def trim() -> bool:
    """Return freed heap memory to the system (glibc); False where the C library cannot."""
    fn = _malloc_trim()
    if fn is None:
        return False
    fn(0)
    return True
