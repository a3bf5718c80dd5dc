"""One agent per state_dir. Two agents on one folder (a test `edge-agent run` started beside the
systemd service is the usual way) would hand out the same outbox ids, send each other's alarms
twice or drop them, and overwrite each other's open alarms and learning periods. The running agent
holds an exclusive ``flock`` on ``edge-agent.lock``; the kernel drops it when the process ends, even
by SIGKILL, so a crash leaves no stale lock behind."""

from __future__ import annotations

import fcntl
import logging
import os
from pathlib import Path

from edge_agent.errors import UserError
from edge_agent.state.paths import LOCK_NAME, lock_path

log = logging.getLogger("edge_agent.state.lock")


class StateDirInUse(UserError):
    pass


class StateLock:
    """Held from ``acquire`` until ``release`` (or the process's end)."""

    def __init__(self, path: Path, fd: int):
        self.path, self._fd = path, fd

    @classmethod
    def acquire(cls, state_dir: Path) -> "StateLock":
        path = lock_path(state_dir)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise UserError(
                f"state_dir {state_dir}: cannot create {LOCK_NAME} ({e.strerror}); free disk space or make the "
                "folder writable for this user"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise StateDirInUse(
                f"state_dir {state_dir} is in use by another edge-agent{holder}: two agents on one folder "
                "would send alarms twice or lose them. Stop the other one (systemctl stop edge-agent), "
                "or give this one a state_dir of its own"
            ) from None
        try:  # only for the message a second agent gets: a full disk must not stop this one
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as e:
            log.debug("writing the pid to %s: %s", path, e)
        return cls(path, fd)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)  # the pid is not the holder's any more
        except OSError as e:  # a full or read-only disk: the unlock below is what matters
            log.debug("clearing %s: %s", self.path, e)
        os.close(self._fd)  # closing the only descriptor drops the flock
        self._fd = None


def _holder(fd: int) -> str:
    """' (pid N)' from the lock file, or '' when the holder has not (or could not) write it."""
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        text = ""
    return f" (pid {text})" if text.isdigit() else ""
