"""Checkpoints that never unpickle arbitrary objects (the state a run resumes from exactly; paper Algorithm 2).

A checkpoint holds only tensors and plain Python values: module and optimizer state dicts, the random
generators' states, the log window. It is written atomically like every file of a run directory
(:mod:`factorvae.files`) and read back with ``torch.load(weights_only=True)``.

It is serialised in memory first and then written with plain ``write`` calls: torch's own file writer turns
a full disk into ``RuntimeError: ... unexpected pos``, a plain write into ``OSError(ENOSPC)``, which
:func:`factorvae.run.rundir.failure_message` reports as a full disk with the size that did not fit.
Stop signals wait until the write is over (docs/reliability.md).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from ..files import atomic_write_with, is_disk_full, stops_deferred


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically. On a full disk the OSError carries ``needed``: the bytes."""
    with stops_deferred():
        buffer = io.BytesIO()
        torch.save(state, buffer)
        data = buffer.getbuffer()
        try:
            atomic_write_with(Path(path), lambda f: f.write(data))
        except OSError as exc:
            if is_disk_full(exc):
                exc.needed = data.nbytes
            raise
        finally:
            data.release()


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    return torch.load(Path(path), map_location=map_location, weights_only=True)
