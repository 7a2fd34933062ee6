"""Data sets of the paper (§4) behind one interface: :class:`GroundTruthData`.

``load(name, path=None)`` returns the built-in procedural version when ``path`` is None and reads the
real files from ``path`` otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .factors import DataError, GroundTruthData, factors_to_index, index_to_factors

__all__ = ["DataError", "GroundTruthData", "factors_to_index", "index_to_factors", "load", "DATASETS"]


def _dsprites(path: str | Path | None) -> GroundTruthData:
    from .dsprites import DSprites, DSpritesFile

    return DSprites() if path is None else DSpritesFile(path)


# name -> loader(path or None). Each entry says whether a built-in version exists.
DATASETS: dict[str, Callable[[str | Path | None], GroundTruthData]] = {
    "dsprites": _dsprites,
}


def load(name: str, path: str | Path | None = None) -> GroundTruthData:
    """The data set ``name``: built-in when ``path`` is None, else read from ``path``."""
    if name not in DATASETS:
        raise DataError(f"unknown data set '{name}'; choose one of: {', '.join(sorted(DATASETS))}")
    return DATASETS[name](path)
