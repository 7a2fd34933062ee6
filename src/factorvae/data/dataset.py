"""Our data sets as a ``torch.utils.data.Dataset``, for training loops written outside this library.

Items are (image float32 (C, 64, 64) in [0, 1], factor classes int64 (K,)), K = 0 for the data sets without
factors (CelebA, 3D Chairs, 3D Faces), as the paper's models see them (paper §4; docs/paper.md §8). Nothing is
copied: an item is rendered (built-in data) or read (real files, memory-mapped where they can be) when asked
for, so the data set costs what the underlying object costs, and a ``DataLoader`` batch of 64 is one call to
``images`` through ``__getitems__`` rather than 64.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .arrays import index_to_factors, to_float


class FactorDataset(torch.utils.data.Dataset):
    """``data`` as a map-style torch data set of ``data.num_examples`` items, in index order."""

    def __init__(self, data: Any) -> None:  # a GroundTruthData (not imported: factors.py imports this module)
        self.data = data

    def __len__(self) -> int:
        return int(self.data.num_examples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, factors = self.__getitems__([index])[0]
        return image, factors

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        # torch's DataLoader fetches a whole batch with one call here when the method exists (torch >= 2.1)
        index = np.asarray(indices, dtype=np.int64)
        if index.size and (index.min() < -len(self) or index.max() >= len(self)):
            raise IndexError(f"index out of range for {self.data.name} ({len(self)} examples)")
        index = index % max(len(self), 1)  # negative indices count from the end, as for a list
        images = torch.from_numpy(to_float(self.data.images(index)))  # (n, C, H, W)
        sizes = self.data.factor_sizes
        factors = torch.from_numpy(index_to_factors(index, sizes) if sizes else np.zeros((len(index), 0), np.int64))
        return list(zip(images, factors, strict=True))
