"""Ground-truth factor grids: index <-> factor conversion and sampling (paper §4, §5; docs/paper.md §8).

A data set with ground-truth factors is a full grid: every combination of factor values appears once,
stored with the last factor fastest. That makes an image's index and its factor tuple interchangeable,
which is what both training (uniform sampling of images) and the metrics (images with one factor fixed)
need. Data sets without factors (CelebA, 3D Chairs, 3D Faces) have ``factor_sizes == ()`` and are
sampled by index only.
"""

from __future__ import annotations

import numpy as np

from .arrays import factors_to_index, index_to_factors, to_float  # noqa: F401 (this module's names before)


class DataError(ValueError):
    """A data set file or folder is missing, unreadable or not in the expected format."""


class GroundTruthData:
    """The interface every data set offers (after disentanglement_lib's five members).

    Subclasses set ``name``, ``factor_names``, ``factor_sizes``, ``observation_shape`` and ``num_examples``
    and implement ``images(indices)``. Everything else is derived here so that every data set samples
    the same way.
    """

    name: str = ""
    factor_names: tuple[str, ...] = ()
    factor_sizes: tuple[int, ...] = ()
    observation_shape: tuple[int, int, int] = (1, 64, 64)  # (C, H, W)
    num_examples: int = 0

    @property
    def has_factors(self) -> bool:
        return len(self.factor_sizes) > 0

    def images(self, indices: np.ndarray) -> np.ndarray:
        """uint8 images (n, C, H, W) for flat indices (n,)."""
        raise NotImplementedError

    def sample_factors(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n factor rows drawn uniformly and independently per factor: int64 (n, K)."""
        self._require_factors()
        return rng.integers(0, np.asarray(self.factor_sizes), size=(n, len(self.factor_sizes)), dtype=np.int64)

    def observations(self, factors: np.ndarray) -> np.ndarray:
        """float32 images in [0, 1], shaped (n, C, H, W), for factor rows (n, K)."""
        self._require_factors()
        return to_float(self.images(factors_to_index(factors, self.factor_sizes)))

    def sample_indices(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n image indices drawn uniformly with replacement (the training sampler)."""
        return rng.integers(0, self.num_examples, size=n, dtype=np.int64)

    def sample_observations(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return to_float(self.images(self.sample_indices(n, rng)))

    def _require_factors(self) -> None:
        if not self.has_factors:
            raise DataError(
                f"data set '{self.name}' has no ground-truth factors; factor metrics and factor sampling "
                "need dsprites or shapes3d"
            )

    def torch_dataset(self):
        """This data set as a ``torch.utils.data.Dataset`` of (image (C, H, W) float32, factors (K,) int64)."""
        from .dataset import FactorDataset  # torch only when asked for: the data layer itself is numpy

        return FactorDataset(self)

    def describe(self) -> dict:
        return {
            "name": self.name,
            "num_examples": int(self.num_examples),
            "observation_shape": list(self.observation_shape),
            "factor_names": list(self.factor_names),
            "factor_sizes": list(self.factor_sizes),
        }


def sample_with_fixed_factor(
    data: GroundTruthData, n: int, k: int, rng: np.random.Generator, value: int | None = None
) -> np.ndarray:
    """n factor rows where factor k takes one value (random if not given) and the rest vary: (n, K)."""
    factors = data.sample_factors(n, rng)
    if value is None:
        value = int(rng.integers(data.factor_sizes[k]))
    factors[:, k] = value
    return factors
