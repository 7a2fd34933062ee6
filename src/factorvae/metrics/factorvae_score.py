"""The FactorVAE disentanglement metric: majority vote over least-variance dimensions (Kim & Mnih 2018, §5).

One vote: pick a factor k; draw ``vote_size`` (the paper's L) observations in which factor k takes one
random value and every other factor varies at random; encode them; divide each code dimension by its
global standard deviation; the vote is (dimension of least variance across the L codes, k). Dimensions
whose global std is below ``prune_std`` collapsed to the prior and take no part (they would otherwise win
every vote with a near-zero variance). A majority-vote classifier maps each dimension to the factor it got
most training votes for; the score is its accuracy on separate evaluation votes.

Protocols (docs/paper.md §5): "paper" uses L = 100 with 800 training and 800 evaluation votes, as the
paper's reimplementations do; "dlib" follows disentanglement_lib (L = 64, 10,000 / 5,000 votes). Both
estimate the global std from 10,000 random observations (ddof=1, as dlib) and prune std < 0.05 (dlib's
threshold; the paper only says collapsed dimensions are removed).

One deliberate difference from dlib: a dimension that received no training vote predicts no factor (-1),
so evaluation votes that land on it count as errors; dlib's argmax would silently predict factor 0.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..data import GroundTruthData
from .pool import CodePool, Represent, factor_names
from .protocol import make_result, metric_rng, resolve_settings

NAME = "factorvae"
_COMMON = {"num_variance": 10_000, "prune_std": 0.05}
PROTOCOLS: dict[str, dict[str, Any]] = {
    "paper": {"vote_size": 100, "num_train": 800, "num_eval": 800, **_COMMON},
    "dlib": {"vote_size": 64, "num_train": 10_000, "num_eval": 5_000, **_COMMON},
}


def factorvae_score(
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
    """Majority-vote accuracy of the paper's metric. ``overrides`` replace the protocol's settings."""
    s = resolve_settings(NAME, PROTOCOLS, protocol, overrides)
    if s["vote_size"] < 2:
        raise ValueError("vote_size (L) must be >= 2: a vote compares variances across L codes")
    pool = CodePool.get(pool, data, represent, seed, batch_size, exhaustive)
    encoded_before = pool.images_encoded
    settings = {**s, **pool.describe()}

    _, codes = pool.random_sample(s["num_variance"], "train")
    global_std = codes.astype(np.float64).std(axis=0, ddof=1)  # (D,)
    active = np.flatnonzero(global_std >= s["prune_std"])
    common = {"factor_names": factor_names(data), "global_std": global_std, "active_dims": active,
              "num_active_dims": len(active)}
    if len(active) == 0:
        return make_result(NAME, 0.0, protocol, settings, seed, train_accuracy=0.0, eval_accuracy=0.0,
                           note="no active dimension (every global std < prune_std): score 0 as in dlib",
                           images_encoded=pool.images_encoded - encoded_before, **common)

    train_votes = vote_matrix(pool, metric_rng(seed, f"{NAME}/train"), s["num_train"], s["vote_size"],
                              global_std, active)
    eval_votes = vote_matrix(pool, metric_rng(seed, f"{NAME}/eval"), s["num_eval"], s["vote_size"],
                             global_std, active)
    classifier = majority_classifier(train_votes)
    eval_accuracy = vote_accuracy(eval_votes, classifier)
    return make_result(
        NAME, eval_accuracy, protocol, settings, seed,
        train_accuracy=vote_accuracy(train_votes, classifier), eval_accuracy=eval_accuracy,
        classifier=classifier, train_votes=train_votes, eval_votes=eval_votes,
        images_encoded=pool.images_encoded - encoded_before, **common,
    )


def vote_matrix(
    pool: CodePool, rng: np.random.Generator, num_votes: int, vote_size: int,
    global_std: np.ndarray, active: np.ndarray,
) -> np.ndarray:
    """Votes counted per (code dimension, fixed factor): int64 (D, K).

    All factor rows are drawn before anything is encoded, so the votes do not depend on the batch size.
    """
    sizes = np.asarray(pool.data.factor_sizes)
    k = rng.integers(len(sizes), size=num_votes)  # (V,) the fixed factor of each vote
    factors = pool.data.sample_factors(num_votes * vote_size, rng).reshape(num_votes, vote_size, -1)
    factors[np.arange(num_votes), :, k] = rng.integers(0, sizes[k])[:, None]  # (V, L) <- one value per vote
    codes = pool.encode(factors.reshape(num_votes * vote_size, -1)).astype(np.float64)
    codes = codes.reshape(num_votes, vote_size, -1)[:, :, active]  # (V, L, A)
    # variance of codes / global std == variance / global variance: one division per vote, not per code
    local = codes.var(axis=1, ddof=1) / global_std[active] ** 2  # (V, A)
    dims = active[np.argmin(local, axis=1)]  # (V,) winning dimension, as an index into all D dims
    votes = np.zeros((len(global_std), len(sizes)), dtype=np.int64)
    np.add.at(votes, (dims, k), 1)
    return votes


def majority_classifier(votes: np.ndarray) -> np.ndarray:
    """Factor predicted for each dimension (D,): its most-voted factor, -1 where it got no vote."""
    return np.where(votes.sum(axis=1) > 0, votes.argmax(axis=1), -1)


def vote_accuracy(votes: np.ndarray, classifier: np.ndarray) -> float:
    """Fraction of votes (D, K) whose factor is the one the classifier predicts for their dimension."""
    voted = classifier >= 0
    correct = votes[np.flatnonzero(voted), classifier[voted]].sum()
    return float(correct / max(votes.sum(), 1))
