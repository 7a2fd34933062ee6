"""The original 3D Shapes release, ``3dshapes.h5`` (paper §4; docs/paper.md §8), read with h5py.

The factor grid and its names are the built-in renderer's (shapes3d.py); the reader takes the factor values
from the file's own labels.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .factors import DataError, GroundTruthData, index_to_factors
from .shapes3d import FACTOR_NAMES, SIZE

if TYPE_CHECKING:
    import h5py

IN_MEMORY_LIMIT = 1 << 30  # bytes; smaller image arrays are read into memory once, larger ones per batch


class Shapes3DFile(GroundTruthData):
    """The original ``3dshapes.h5`` (or a smaller file in the same format), read with h5py.

    ``labels`` (float64, N×6) are mapped to class indices column by column (the sorted distinct values of a
    column are its classes), which gives the factor sizes; the rows must form the full grid in the release's
    order (orientation fastest) so that index sampling and factor lookups agree.

    The release's images take 5.9 GB, so by default they stay on disk and each batch is read from the file:
    an uncompressed, unchunked ``images`` dataset (as in the release) is memory-mapped with numpy at its byte
    offset in the file, which lets the OS page cache do the work; a chunked or compressed one is read through
    h5py. Arrays under ``IN_MEMORY_LIMIT`` bytes, or any with ``in_memory=True``, are read into memory once.
    """

    name = "shapes3d"
    factor_names = FACTOR_NAMES
    observation_shape = (3, SIZE, SIZE)

    def __init__(self, path: str | Path, in_memory: bool | None = None) -> None:
        import h5py  # imported here so the built-in renderer does not need it

        self.path = Path(path)
        if not self.path.is_file():
            raise DataError(f"3D Shapes file not found: {self.path} (pass 3dshapes.h5 from the release)")
        if not h5py.is_hdf5(self.path):
            raise DataError(f"{self.path} is not an HDF5 file; pass 3dshapes.h5 from the 3D Shapes release")
        try:
            with h5py.File(self.path, "r") as h5:
                missing = [k for k in ("images", "labels") if not isinstance(h5.get(k), h5py.Dataset)]
                if missing:
                    raise DataError(
                        f"{self.path} is missing dataset(s) {missing}; expected 3dshapes.h5 with 'images' and 'labels'"
                    )
                images, labels = h5["images"], h5["labels"][()]
                n = images.shape[0] if images.ndim else 0  # a scalar dataset has no length
                if n == 0 or images.shape != (n, SIZE, SIZE, 3) or images.dtype != np.uint8:
                    raise DataError(
                        f"{self.path}: 'images' is {images.dtype} {images.shape}; expected uint8 (N, 64, 64, 3)"
                    )
                if labels.shape != (n, 6):
                    raise DataError(f"{self.path}: 'labels' has shape {labels.shape}, expected ({n}, 6)")
                self._imgs: np.ndarray | None = None
                if in_memory or (in_memory is None and images.size <= IN_MEMORY_LIMIT):
                    self._imgs = images[()]
                # the byte offset of a contiguous, unfiltered dataset; None when h5py must decode chunks
                plain = images.chunks is None and not images.compression
                self._offset = images.id.get_offset() if plain else None
        except OSError as exc:  # h5py's error for a damaged file
            raise DataError(f"{self.path} is not a readable HDF5 file ({exc})") from exc
        columns = [np.unique(labels[:, k], return_inverse=True) for k in range(6)]
        self.factor_values = tuple(values for values, _ in columns)  # the label value of each class
        self.factor_sizes = tuple(len(values) for values in self.factor_values)
        factors = np.stack([inverse.ravel() for _, inverse in columns], 1)
        if np.prod(self.factor_sizes) != n or not np.array_equal(
            factors, index_to_factors(np.arange(n), self.factor_sizes)
        ):
            raise DataError(f"{self.path}: 'labels' is not a full factor grid in 3D Shapes order (orientation fastest)")
        self.num_examples = n
        self._h5 = None
        self._pid = -1

    def images(self, indices: np.ndarray) -> np.ndarray:
        indices = np.asarray(indices, dtype=np.int64)
        if self._imgs is None and self._offset is not None:
            shape = (self.num_examples, SIZE, SIZE, 3)
            self._imgs = np.memmap(self.path, dtype=np.uint8, mode="r", offset=self._offset, shape=shape)
        if self._imgs is not None:
            batch = self._imgs[indices]
        else:
            # h5py selects strictly increasing indices only: read each distinct image once, then reorder
            unique, inverse = np.unique(indices, return_inverse=True)
            batch = self._file()["images"][unique][inverse.ravel()]
        return np.ascontiguousarray(batch.transpose(0, 3, 1, 2))  # (n, H, W, C) -> (n, C, H, W)

    def _file(self) -> h5py.File:
        import h5py

        # one handle per process: an HDF5 handle must not be shared across fork (data loader workers)
        if self._h5 is None or self._pid != os.getpid():
            self._h5, self._pid = h5py.File(self.path, "r"), os.getpid()
        return self._h5

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_h5"], state["_pid"] = None, -1  # open handles cannot be pickled; reopened on first use
        if isinstance(self._imgs, np.memmap):
            state["_imgs"] = None  # would pickle all 5.9 GB; mapped again on first use
        return state
