"""Data sets of the paper (§4) behind one interface: :class:`GroundTruthData`.

``load(name, path=None)`` returns the built-in procedural version when ``path`` is None and reads the
real files from ``path`` otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .factors import DataError, GroundTruthData, factors_to_index, index_to_factors

__all__ = ["DataError", "GroundTruthData", "factors_to_index", "index_to_factors", "load", "DATASETS"]


@dataclass(frozen=True)
class DatasetEntry:
    """A registry entry: how to load a data set, and what the listing commands say about it."""

    loader: Callable[[str | Path | None], GroundTruthData]
    builtin: bool  # has a procedural version used when no path is given
    has_factors: bool  # has ground-truth factors (the disentanglement metrics need them)
    description: str

    def __call__(self, path: str | Path | None) -> GroundTruthData:
        return self.loader(path)


def _dsprites(path: str | Path | None) -> GroundTruthData:
    from .dsprites import DSprites, DSpritesFile

    return DSprites() if path is None else DSpritesFile(path)


def _shapes3d(path: str | Path | None) -> GroundTruthData:
    from .shapes3d import Shapes3D
    from .shapes3d_file import Shapes3DFile

    return Shapes3D() if path is None else Shapes3DFile(path)


def _image_folder(name: str) -> Callable[[str | Path | None], GroundTruthData]:
    def loader(path: str | Path | None) -> GroundTruthData:
        from .images import ImageFolderData

        if path is None:  # no procedural version can stand in for photographs or renders of real objects
            raise DataError(f"data set '{name}' has no built-in version; pass its image folder with --data-path")
        return ImageFolderData(path, name=name)

    return loader


# name -> entry; an entry is called with the path (or None) like a loader function.
DATASETS: dict[str, DatasetEntry] = {
    "dsprites": DatasetEntry(
        _dsprites, True, True, "2D Shapes: 737,280 binary 64x64 sprites, 5 factors (dsprites_ndarray_*.npz)"
    ),
    "shapes3d": DatasetEntry(_shapes3d, True, True, "3D Shapes: 480,000 RGB 64x64 scenes, 6 factors (3dshapes.h5)"),
    "celeba": DatasetEntry(
        _image_folder("celeba"), False, False, "CelebA faces, RGB, centre crop 140 -> 64x64 (image folder)"
    ),
    "chairs": DatasetEntry(
        _image_folder("chairs"), False, False, "3D Chairs renders, RGB, resized to 64x64 (image folder)"
    ),
    "faces": DatasetEntry(_image_folder("faces"), False, False, "3D Faces renders, greyscale 64x64 (image folder)"),
}


def load(name: str, path: str | Path | None = None) -> GroundTruthData:
    """The data set ``name``: built-in when ``path`` is None, else read from ``path``."""
    if name not in DATASETS:
        raise DataError(f"unknown data set '{name}'; choose one of: {', '.join(sorted(DATASETS))}")
    return DATASETS[name](path)
