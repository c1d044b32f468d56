"""One run per directory: an exclusive ``fcntl.flock`` on ``<run dir>/.lock`` that names its holder.

A second run on the same directory fails at once with :class:`RunLockedError` naming the holder's pid,
host and command (written into the lock file). The lock is released when the holder exits, however it
exits (the kernel drops ``flock`` locks with the process), so a killed run never leaves a stale lock.
A ``.lock`` that is a symbolic link is refused (``OSError`` ``ELOOP``), never followed.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path
from types import TracebackType


class RunLockedError(RuntimeError):
    """The run directory is held by another process."""


class RunLock:
    """``with RunLock(directory): ...`` holds ``directory/.lock`` (``name``) exclusively for this process."""

    def __init__(self, directory: str | Path, name: str = ".lock") -> None:
        self.path = Path(directory) / name
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:  # O_NOFOLLOW: a .lock that is a symlink would have us truncate whatever it points to
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as err:
            if err.errno != errno.ELOOP:
                raise
            raise OSError(errno.ELOOP, f"{self.path} is a symbolic link (to {os.readlink(self.path)}), not a lock file; "
                          "remove it, or use another output directory") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise RunLockedError(
                f"run directory {self.path.parent} is in use by {holder}; wait for that run to end, or use another "
                "output directory"
            ) from None
        info = {"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(sys.argv),
                "since_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.release()


def _holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        info = {}
    if not info:
        return "another process"
    return f"pid {info.get('pid')} on host {info.get('host')} (command: {info.get('command')}, since {info.get('since_utc')})"
