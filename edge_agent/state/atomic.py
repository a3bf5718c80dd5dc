"""One way to replace a file so that a crash leaves either the old or the new one, never a torn one:
write a temporary file beside it, fsync, rename over, fsync the folder."""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator


def _set_and_restore_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# os.umask can only be read by setting it, which is not thread-safe: read once while importing, and
# later from /proc (Linux 4.7+), so that a umask set after import (by a wrapper, or a test) counts.
_IMPORT_UMASK = _set_and_restore_umask()


def current_umask() -> int:
    """The process's umask now, read without changing it where the kernel says it."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return _IMPORT_UMASK


def file_mode(path: Path) -> int:
    """The permissions a replacement of ``path`` gets: the old file's, or what ``open`` would give a
    new one under the process's umask. (mkstemp's 0600 made bundles, banks and alarm evidence
    unreadable to any other user, the service user included.)"""
    try:
        return path.stat().st_mode & 0o7777
    except FileNotFoundError:
        return 0o666 & ~current_umask()


@contextmanager
def atomic_write(path: str | Path, mode: str = "wb") -> Iterator[IO]:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", suffix=".tmp", dir=path.parent)
    try:
        try:
            os.fchmod(fd, file_mode(path))
        except OSError:  # a file system without permissions (vfat): the write matters, not the mode
            pass
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """A private folder next to ``path`` to fill; on success it replaces ``path`` (readable by all,
    as a bundle must be for a service user), on an error it is removed and ``path`` is untouched."""
    path = Path(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=path.parent if path.parent.exists() else None))
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        tmp.chmod(0o755)
        tmp.rename(path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
