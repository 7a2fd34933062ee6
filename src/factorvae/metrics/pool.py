"""Encoding for the metrics: big batches, a shared pool of random codes, and an exhaustive mode (paper §5).

A metric's time is almost all encoder passes, so every metric gets its codes through a :class:`CodePool`:

- ``encode(factors)`` renders observations and calls ``represent`` in batches of ``batch_size`` rows. The
  batch size changes speed only: every random draw happens before encoding, so scores do not depend on it.
- ``random_sample(n, split)`` returns the first ``n`` rows of a cached stream of uniformly random
  (factors, codes) pairs. MIG, DCI and SAP all need such pairs (dlib draws 10,000 train and 5,000 test
  points for each), and so does the global variance of the FactorVAE metric; metrics run together on one
  pool share them instead of encoding them again. Each split has its own seeded stream drawn in fixed
  chunks, so a request for 5,000 rows is always the prefix of a request for 10,000: results do not depend
  on which metric asked first.
- ``exhaustive=True`` encodes every example of the finite data set once (``num_examples`` rows, in
  index order) and answers ``encode`` by table lookup through :func:`factors_to_index`. All random draws
  stay the same, so for a deterministic representation the results are identical to the sampled mode;
  it pays off when the metrics together need more images than the data set holds (dlib's protocol).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from tqdm.auto import tqdm

from ..data import DataError, GroundTruthData, factors_to_index, index_to_factors
from .protocol import metric_rng

Represent = Callable[[np.ndarray], np.ndarray]  # observations (n, ...) float32 -> codes (n, D)

SAMPLE_CHUNK = 1000  # rows drawn per rng call in the random streams; fixed so prefixes are stable


def has_factors(data: GroundTruthData) -> bool:
    """Whether ``data`` has ground-truth factors, read from ``factor_sizes`` alone, so that any object with
    disentanglement_lib's members (``factor_sizes``, ``factor_names``, ``sample_factors(n, rng)``,
    ``observations(factors)``) can be scored, not only our own data classes."""
    return len(getattr(data, "factor_sizes", None) or ()) > 0


def factor_names(data: GroundTruthData) -> list[str]:
    """The data set's factor names, or factor0, factor1, ... where it has none."""
    names = getattr(data, "factor_names", None)
    return list(names) if names else [f"factor{k}" for k in range(len(data.factor_sizes))]


def num_examples(data: GroundTruthData) -> int:
    """Size of the full factor grid: ``num_examples`` where the object has it, else the product of the sizes."""
    n = getattr(data, "num_examples", None)
    return int(n) if n is not None else int(np.prod(data.factor_sizes))


def require_factors(data: GroundTruthData) -> None:
    """Raise :class:`DataError` for data sets without ground-truth factors (CelebA, 3D Chairs, 3D Faces)."""
    if not has_factors(data):
        raise DataError(
            f"data set '{getattr(data, 'name', '?')}' has no ground-truth factors; the disentanglement "
            "metrics need a data set with factors (dsprites, shapes3d)"
        )


def check_finite_codes(codes: np.ndarray, what: str = "codes") -> None:
    """Refuse NaN or infinite codes: every metric would turn them into a meaningless number (0 for most)."""
    if np.issubdtype(codes.dtype, np.number) and not np.isfinite(codes).all():
        bad = int((~np.isfinite(codes)).any(axis=tuple(range(1, codes.ndim))).sum())
        raise DataError(f"the representation gave non-finite {what} (NaN or inf) for {bad} of {len(codes)} "
                        "observations; a diverged or broken encoder cannot be scored")


class CodePool:
    """Codes of one representation on one data set, encoded in batches and cached for sharing."""

    def __init__(
        self,
        data: GroundTruthData,
        represent: Represent,
        seed: int = 0,
        batch_size: int = 2048,
        exhaustive: bool = False,
        progress: bool = False,
    ) -> None:
        require_factors(data)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.data, self.represent, self.seed = data, represent, int(seed)
        self.batch_size, self.exhaustive, self.progress = int(batch_size), bool(exhaustive), progress
        self.images_encoded = 0  # observations passed through `represent` so far
        self._table: np.ndarray | None = None  # (num_examples, D) codes in exhaustive mode
        self._samples: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # split -> (factors, codes)
        self._streams: dict[str, np.random.Generator] = {}

    @classmethod
    def get(
        cls, pool: CodePool | None, data: GroundTruthData, represent: Represent, seed: int,
        batch_size: int, exhaustive: bool,
    ) -> CodePool:
        """``pool`` if given (checked to belong to this data, representation and seed), else a new one."""
        if pool is None:
            return cls(data, represent, seed, batch_size, exhaustive)
        if pool.data is not data or pool.represent is not represent or pool.seed != int(seed):
            raise ValueError("the pool was built for another data set, representation or seed")
        return pool

    def describe(self) -> dict[str, int | bool]:
        """Encoding settings to record beside a metric's own (they change speed, not scores)."""
        return {"batch_size": self.batch_size, "exhaustive": self.exhaustive}

    def encode(self, factors: np.ndarray) -> np.ndarray:
        """Codes of the observations of factor rows: (n, K) -> (n, D)."""
        factors = np.asarray(factors, dtype=np.int64)
        if self.exhaustive:
            return self.table()[factors_to_index(factors, self.data.factor_sizes)]
        return self._encode_batches(factors, self.data.observations)

    def table(self) -> np.ndarray:
        """Codes of every example in index order, encoded once: (num_examples, D)."""
        if self._table is None:
            index = np.arange(num_examples(self.data), dtype=np.int64)
            sizes = self.data.factor_sizes
            self._table = self._encode_batches(
                index, lambda rows: self.data.observations(index_to_factors(rows, sizes)), "encode all"
            )
        return self._table

    def random_sample(self, n: int, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
        """The first ``n`` uniformly random (factors (n, K), codes (n, D)) pairs of stream ``split``."""
        have = self._samples.get(split)
        count = 0 if have is None else len(have[0])
        if count < n:
            rng = self._streams.setdefault(split, metric_rng(self.seed, f"pool/{split}"))
            chunks = -(-(n - count) // SAMPLE_CHUNK)  # ceil
            factors = np.concatenate([self.data.sample_factors(SAMPLE_CHUNK, rng) for _ in range(chunks)])
            codes = self.encode(factors)
            if have is not None:
                factors, codes = np.concatenate([have[0], factors]), np.concatenate([have[1], codes])
            self._samples[split] = have = (factors, codes)
        return have[0][:n], have[1][:n]

    def _encode_batches(
        self, rows: np.ndarray, render: Callable[[np.ndarray], np.ndarray], desc: str | None = None
    ) -> np.ndarray:
        out: np.ndarray | None = None
        bar = tqdm(total=len(rows), desc=desc, unit="img", disable=not (self.progress and desc))
        for start in range(0, len(rows), self.batch_size):
            chunk = rows[start : start + self.batch_size]
            codes = np.asarray(self.represent(render(chunk)))
            if codes.ndim != 2 or len(codes) != len(chunk):
                raise ValueError(f"represent must return codes (n, D) for n={len(chunk)}, got {codes.shape}")
            check_finite_codes(codes)
            if out is None:
                out = np.empty((len(rows), codes.shape[1]), dtype=codes.dtype)
            out[start : start + len(chunk)] = codes
            self.images_encoded += len(chunk)
            bar.update(len(chunk))
        bar.close()
        if out is None:  # the code size is only known after one call of `represent`
            raise ValueError("nothing to encode: ask for at least one row")
        return out
