"""One writer per run directory (and per sweep folder): an exclusive ``flock`` held while a process writes.

Two processes writing one run directory double every log line and leave config.json and the checkpoint
disagreeing, so every writer (``train``, ``train --resume``, a sweep worker, a sweep driver for its
folder) first takes an exclusive, non-blocking ``fcntl.flock`` on ``FOLDER/.lock`` and holds it for as long
as it writes. The kernel releases a flock when the process dies, however it dies (kill -9 included), so a
crash never leaves a stale lock behind: the file may stay, but nobody holds it. A second writer fails at
once with one line naming the holder (pid, host, start time, written into the file by the holder).

The file is removed on a clean release. Removing a lock file is racy in general (a process that opened
it just before the removal could lock the orphaned inode), so acquiring checks, after the lock is taken,
that the path still names the very file that was locked, and starts again if not.

Readers (evaluate, traverse, report) take no lock: they read files that are replaced atomically.
Without ``fcntl`` (Windows) there is no locking at all.
"""

from __future__ import annotations

import os
import socket
import time
import weakref
from pathlib import Path

try:
    import fcntl
except ImportError:  # not POSIX
    fcntl = None

LOCK_NAME = ".lock"


class LockHeld(RuntimeError):
    """Another live process holds the folder's lock."""


class DirLock:
    """An exclusive lock on ``folder``, held until :meth:`release` (or until the process ends)."""

    def __init__(self, folder: str | Path, what: str = "run directory") -> None:
        self.folder, self.path = Path(folder), Path(folder) / LOCK_NAME
        self.fd: int | None = None
        if fcntl is None:
            return
        while self.fd is None:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder(fd)
                os.close(fd)
                raise LockHeld(f"{what} {self.folder} is in use by another process ({holder}); wait for it to "
                               "finish or stop it, then try again") from None
            if _same_file(fd, self.path):
                self.fd = fd
            else:  # a holder removed the file between our open and our lock: lock the current one
                os.close(fd)
        os.ftruncate(self.fd, 0)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        os.pwrite(self.fd, f"pid {os.getpid()} on {socket.gethostname()}, since {stamp}\n".encode(), 0)
        # a lock dropped without release() still frees its descriptor (and so the lock) when collected
        self._finalizer = weakref.finalize(self, os.close, self.fd)

    @property
    def held(self) -> bool:
        return self.fd is not None

    def release(self) -> None:
        """Remove the lock file (while still holding it, so no one can lock it in between) and unlock."""
        if self.fd is None:
            return
        try:
            if _same_file(self.fd, self.path):
                self.path.unlink()
        except OSError:
            pass  # a read-only or vanished folder: closing below still unlocks
        self._finalizer()  # closes the descriptor: the kernel drops the lock
        self.fd = None

    def __enter__(self) -> DirLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _same_file(fd: int, path: Path) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, 200, 0).decode(errors="replace").strip()
    except OSError:
        text = ""
    return text or "it has not written its pid yet"
