"""Mutual Information Gap (Chen et al., "Isolating Sources of Disentanglement in VAEs", NeurIPS 2018).

For each factor k: the gap between the largest and second-largest mutual information I(z_d; v_k) over code
dimensions d, divided by the factor's entropy H(v_k); MIG is the mean over factors. As in
disentanglement_lib (dlib), the codes are random samples, each dimension is discretised into ``num_bins``
equal-width bins over its own range (a histogram), and both I and H are plug-in estimates from counts
(scikit-learn's ``mutual_info_score``). Chen et al.'s own estimator integrates q(z|x) over the whole data
set instead; we follow dlib, which is what most published MIG numbers use.

Protocols: both "paper" and "dlib" use dlib's 10,000 points and 20 bins (Kim & Mnih do not use MIG).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import mutual_info_score

from ..data import GroundTruthData
from .pool import CodePool, Represent
from .protocol import make_result, resolve_settings

NAME = "mig"
PROTOCOLS: dict[str, dict[str, Any]] = {
    "paper": {"num_train": 10_000, "num_bins": 20},
    "dlib": {"num_train": 10_000, "num_bins": 20},
}


def mig(
    data: GroundTruthData,
    represent: Represent,
    seed: int = 0,
    *,
    protocol: str = "paper",
    pool: CodePool | None = None,
    batch_size: int = 2048,
    exhaustive: bool = False,
    **overrides: Any,
) -> dict[str, Any]:
    """Mean over factors of the normalised gap between the two most informative code dimensions."""
    s = resolve_settings(NAME, PROTOCOLS, protocol, overrides)
    pool = CodePool.get(pool, data, represent, seed, batch_size, exhaustive)
    encoded_before = pool.images_encoded
    factors, codes = pool.random_sample(s["num_train"], "train")
    binned = histogram_discretize(codes, s["num_bins"])  # (n, D) bin ids
    mi = np.array([[mutual_info_score(f, b) for f in factors.T] for b in binned.T])  # (D, K) nats
    entropy = np.array([mutual_info_score(f, f) for f in factors.T])  # (K,) H(v_k) in nats
    top = np.sort(np.vstack([mi, np.zeros((1, mi.shape[1]))]), axis=0)[::-1]  # zero row: a 1-dim code
    defined = entropy > 0  # a factor that took one value in the sample has no entropy to normalise by
    per_factor = np.full(len(entropy), np.nan)
    per_factor[defined] = (top[0, defined] - top[1, defined]) / entropy[defined]
    return make_result(
        NAME, float(np.mean(per_factor[defined])) if defined.any() else 0.0, protocol,
        {**s, **pool.describe()}, seed,
        per_factor=[None if np.isnan(v) else float(v) for v in per_factor],
        mutual_info=mi, factor_entropy=entropy, factor_names=list(data.factor_names),
        images_encoded=pool.images_encoded - encoded_before,
    )


def histogram_discretize(codes: np.ndarray, num_bins: int) -> np.ndarray:
    """Bin each dimension into ``num_bins`` equal-width bins over its range, as dlib: (n, D) -> (n, D) ints.

    The top edge is left out of the search so the maximum falls in the last bin, not a bin of its own.
    """
    codes = np.asarray(codes, dtype=np.float64)
    out = np.empty(codes.shape, dtype=np.int64)
    for d in range(codes.shape[1]):
        edges = np.histogram_bin_edges(codes[:, d], bins=num_bins)
        out[:, d] = np.digitize(codes[:, d], edges[:-1])
    return out
