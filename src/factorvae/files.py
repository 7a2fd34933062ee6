"""Atomic file writes and durable log appends: the bottom layer every writer of a run directory uses.

Every file of a run directory is written to a temporary file in the same folder, flushed to disk and
renamed over the target, so a crash mid-write leaves the previous version intact; a process killed in
the middle leaves only its temporary file, which the next writer of the folder removes
(:func:`remove_stale_temps`). The ``.jsonl`` logs grow by appends instead, one record per ``write`` call,
fsynced; an append that fails part-way is cut back off, so only a kill during that one call can leave a
torn last line, which resume drops (:func:`read_jsonl_lines`). Checkpoints are written the same way
(:mod:`factorvae.run.checkpoint`), with stop signals held back until the write is over (:func:`stops_deferred`).
"""

from __future__ import annotations

import errno
import json
import math
import os
import signal
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

# the signals that ask a process to stop: Ctrl-C, `kill`, a closed terminal
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


def atomic_write_with(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write ``path`` through ``write(file)`` into a temporary file, fsync it and rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:  # e.g. a read-only folder
        raise OSError(exc.errno, exc.strerror, exc.filename or str(path)) from exc
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give them the usual permissions
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename is None:  # say which file could not be written
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_with(Path(path), lambda f: f.write(text.encode()))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write_with(Path(path), lambda f: f.write(data))


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None: ``NaN`` and ``Infinity`` are not JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line with a single ``write`` and fsync it; a short or failed write is cut back off."""
    data = (json.dumps(json_safe(record)) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        start = os.fstat(fd).st_size
        try:
            written = os.write(fd, data)
            if written != len(data):  # the disk filled up during the write
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            os.fsync(fd)
        except OSError as exc:
            try:
                os.ftruncate(fd, start)
            except OSError:
                pass  # not a regular file: nothing to cut back
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
    finally:
        os.close(fd)


def read_jsonl_lines(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """(line, record) for each line of a run's ``.jsonl`` log, dropping a torn last line (and only that).

    A kill or a full disk can tear the line being appended, never an earlier one, so a bad line anywhere
    else means the file was damaged otherwise: ValueError, naming the line, rather than a silent loss.
    """
    try:
        text = Path(path).read_bytes().decode()
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path} is not UTF-8 text ({exc}); move it away to continue without it") from None
    lines = [line for line in text.split("\n") if line.strip()]
    out = []
    for i, line in enumerate(lines):
        try:
            record = json.loads(line)
            if not isinstance(record, dict) or not isinstance(record.get("step"), int):
                raise ValueError("not a record with a step")
        except ValueError as exc:
            if i == len(lines) - 1:
                break  # the torn last line of an interrupted append
            raise ValueError(f"{path}, line {i + 1} of {len(lines)} is damaged ({exc}); only a torn last line "
                             "is dropped automatically: remove or repair that line to continue") from None
        out.append((line, record))
    return out


def remove_stale_temps(folder: Path, names: tuple[str, ...]) -> list[Path]:
    """Delete the temporary files that an interrupted :func:`atomic_write_with` of ``names`` left in ``folder``.

    Only the folder's writer, holding its lock, may call this: another writer's temp file is in use.
    """
    removed = []
    for name in names:
        for tmp in Path(folder).glob(f".{name}.*.tmp"):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def mount_point(path: Path) -> Path:
    """The mount point of the file system holding ``path`` (the "device" a full-disk message names)."""
    path = Path(path).resolve()
    while not path.exists() and path != path.parent:
        path = path.parent
    dev = path.stat().st_dev
    while path != path.parent and path.parent.stat().st_dev == dev:
        path = path.parent
    return path


@contextmanager
def stops_deferred() -> Iterator[None]:
    """Hold back SIGINT, SIGTERM and SIGHUP until the block ends, then hand each to the handler it would have
    reached. A Python handler that raises inside ``torch.save``'s writer does not stop it cleanly: torch turns
    the exception into ``RuntimeError: ... unexpected pos``, which reads as a failed run. Handlers run in the
    main thread only, so elsewhere (a Ray task's thread) this changes nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    old = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    old = {sig: handler for sig, handler in old.items() if handler is not None}  # None: set outside Python
    for sig in old:
        signal.signal(sig, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        for sig in caught:
            handler = old[sig]
            if callable(handler):
                handler(sig, None)
            elif handler == signal.SIG_DFL:
                signal.raise_signal(sig)
