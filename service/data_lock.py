"""One service per data directory: a second one would requeue and run the first one's
jobs into the same checkpoint directories. An exclusive ``flock`` on ``<data dir>/.lock``
is held for the service's life (the kernel drops it if the process dies)."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


class DataDirInUseError(RuntimeError):
    """Another service holds the data directory."""


class DataDirLock:
    def __init__(self, data_dir: Path):
        self.path = data_dir / ".lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise DataDirInUseError(
                f"the data dir {self.path.parent} is in use: {self.path} is locked by "
                f"{holder}; give each service its own SYNCSGD_DATA_DIR") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"syncsgd service pid {os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the lock
            self._fd = None
