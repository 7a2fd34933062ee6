"""Checkpoints that never unpickle arbitrary objects (the state a run resumes from exactly; paper Algorithm 2).

A checkpoint holds only tensors and plain Python values: module and optimizer state dicts, the random
generators' states, the log window. It is written atomically like every file of a run directory
(:mod:`factorvae.files`) and read back with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..files import atomic_write_with


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    atomic_write_with(Path(path), lambda f: torch.save(state, f))


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    return torch.load(Path(path), map_location=map_location, weights_only=True)
