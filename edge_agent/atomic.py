"""One way to replace a file so that a crash leaves either the old or the new one, never a torn one:
write a temporary file beside it, fsync, rename over, fsync the folder."""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator


@contextmanager
def atomic_write(path: str | Path, mode: str = "wb") -> Iterator[IO]:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", suffix=".tmp", dir=path.parent)
    try:
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
