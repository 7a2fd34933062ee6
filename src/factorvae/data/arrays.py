"""Array arithmetic under every data set (docs/paper.md §8): flat index <-> factor rows of a full grid stored
with the last factor fastest, and the uint8 -> float32 conversion at the model boundary."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def factors_to_index(factors: np.ndarray, factor_sizes: Sequence[int]) -> np.ndarray:
    """Row-major (last factor fastest) flat index of each factor row. factors: (n, K) -> (n,) int64."""
    factors = np.asarray(factors, dtype=np.int64)
    if factors.ndim != 2 or factors.shape[1] != len(factor_sizes):
        raise ValueError(f"factors must have shape (n, {len(factor_sizes)}), got {factors.shape}")
    sizes = np.asarray(factor_sizes, dtype=np.int64)
    if (factors < 0).any() or (factors >= sizes).any():
        raise ValueError(f"factor values out of range for sizes {tuple(factor_sizes)}")
    strides = np.r_[np.cumprod(sizes[::-1])[::-1][1:], 1]  # (K,) product of the sizes after each factor
    return factors @ strides


def index_to_factors(index: np.ndarray, factor_sizes: Sequence[int]) -> np.ndarray:
    """Inverse of :func:`factors_to_index`. index: (n,) -> (n, K) int64."""
    index = np.asarray(index, dtype=np.int64)
    return np.stack(np.unravel_index(index, tuple(factor_sizes)), axis=1).astype(np.int64)


def to_float(images: np.ndarray) -> np.ndarray:
    """uint8 (n, C, H, W) -> float32 in [0, 1]. Binary data stored as {0, 1} is scaled by its own max."""
    out = images.astype(np.float32)
    out *= 1.0 / 255.0
    return out
