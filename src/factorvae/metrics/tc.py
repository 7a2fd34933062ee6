"""The true total correlation of the aggregate posterior, by Monte Carlo (paper §4, Fig. 7; docs/paper.md §6).

TC(q) = KL(q(z) ‖ Π_j q(z_j)) with q(z) = (1/N) Σ_n q(z|x_n), a mixture of N diagonal Gaussians. The
discriminator's estimate during training is biased low, so the paper also reports the true TC. We use the
exact-mixture estimator: draw M codes z_i ~ q(z|x_i) from the mixture, evaluate

    log q(z_i)    = logsumexp_n Σ_j log N(z_ij; μ_nj, σ²_nj) − log N
    log q(z_ij)   = logsumexp_n       log N(z_ij; μ_nj, σ²_nj) − log N     (each marginal, also a mixture)

over all N components (not β-TCVAE's minibatch-weighted approximation, which uses a minibatch of the
components), and average log q(z_i) − Σ_j log q(z_ij). It is unbiased for the TC of the N-component mixture
(up to the M-sample Monte-Carlo error, reported as a standard error). Math is float64 and chunked over the
M samples so that each (chunk, N) block of log densities stays under ``max_elements`` numbers.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from ..data import GroundTruthData, index_to_factors
from .pool import check_finite_codes, num_examples, require_factors
from .protocol import metric_rng

ESTIMATOR = "exact-mixture Monte Carlo: log q(z) = logsumexp over all N components of q(z|x_n) - log N"
LOG_2PI = float(np.log(2 * np.pi))


def total_correlation(
    mu: np.ndarray, logvar: np.ndarray, num_samples: int = 10_000, seed: int = 0, max_elements: int = 1 << 22,
    marginal_components: int | None = None,
) -> dict[str, Any]:
    """TC (nats) of q(z) = mean_n N(mu_n, exp(logvar_n)), from encoder outputs mu, logvar: (N, D) each.

    ``marginal_components``: evaluate the 1-D marginals q(z_ij) on that many components drawn at random
    (independently of the samples), instead of all N; log q(z_i) always uses all N. Meant for N = a whole
    data set, where the joint must see every component (a narrow posterior's own neighbours decide it) but
    each marginal, a smooth 1-D mixture of many overlapping components, is estimated well from 10^4 of them.
    """
    mu, logvar = np.asarray(mu, dtype=np.float64), np.asarray(logvar, dtype=np.float64)
    if mu.ndim != 2 or mu.shape != logvar.shape:
        raise ValueError(f"mu and logvar must both be (N, D), got {mu.shape} and {logvar.shape}")
    check_finite_codes(mu, "means")
    check_finite_codes(logvar, "log-variances")
    n, d = mu.shape
    rng = metric_rng(seed, "tc")
    # which mixture components the M samples come from: each once if M <= N, else with replacement
    source = rng.choice(n, size=num_samples, replace=num_samples > n)
    z = mu[source] + np.exp(0.5 * logvar[source]) * rng.standard_normal((num_samples, d))  # (M, D)
    terms = np.empty(num_samples)  # log q(z_i) - Σ_j log q(z_ij) per sample
    chunk = max(1, max_elements // n)
    subset = marginal_components is not None and marginal_components < n
    picked = (np.sort(metric_rng(seed, "tc/marginals").choice(n, size=marginal_components, replace=False))
              if subset else slice(None))
    joint, mu_m, logvar_m = _JointDensity(mu, logvar), mu[picked], logvar[picked]

    def chunk_terms(zc: np.ndarray) -> np.ndarray:
        return joint.log_q(zc) - _sum_log_marginals(zc, mu_m, logvar_m)

    starts = range(0, num_samples, chunk)
    # numpy's elementwise loops and BLAS release the GIL, so chunks on threads use every core; each chunk
    # writes its own slice, so the result does not depend on the number of threads
    with ThreadPoolExecutor(max_workers=min(len(starts), os.cpu_count() or 1)) as pool:
        for start, values in zip(starts, pool.map(lambda s: chunk_terms(z[s : s + chunk]), starts), strict=True):
            terms[start : start + chunk] = values
    return {
        "tc": float(terms.mean()),
        "stderr": float(terms.std(ddof=1) / np.sqrt(num_samples)) if num_samples > 1 else None,  # JSON has no NaN
        "estimator": ESTIMATOR,
        "num_data": int(n),
        "num_samples": int(num_samples),
        "marginal_components": int(marginal_components) if subset else int(n),
        "seed": int(seed),
    }


class _JointDensity:
    """log q(z) = logsumexp_n log N(z; μ_n, diag σ²_n) − log N for many z against all N components at once.

    Σ_j (z_j − μ_nj)² / σ²_nj expands to z²·a_n − 2 z·(μa)_n + Σ_j μ²_nj a_nj with a = 1/σ², so a chunk of
    samples against all components is one (c, 2D) × (2D, N) matrix product (BLAS, all cores) instead of D
    elementwise passes over (c, N). Float64: the expanded terms are large for narrow posteriors (a ~ 10^4)
    and their differences stay accurate to ~1e-11.
    """

    def __init__(self, mu: np.ndarray, logvar: np.ndarray) -> None:
        a = np.exp(-logvar)  # (N, D)
        self.weights = np.concatenate([-0.5 * a, mu * a], axis=1).T.copy()  # (2D, N)
        self.offset = -0.5 * (np.sum(mu * mu * a, axis=1) + np.sum(logvar, axis=1) + mu.shape[1] * LOG_2PI)
        self.log_n = np.log(len(mu))

    def log_q(self, z: np.ndarray) -> np.ndarray:
        log_p = np.concatenate([z * z, z], axis=1) @ self.weights  # (c, N)
        log_p += self.offset
        return _logsumexp_rows(log_p) - self.log_n


def _sum_log_marginals(z: np.ndarray, mu: np.ndarray, logvar: np.ndarray) -> np.ndarray:
    """Σ_j log q(z_ij), each marginal the mixture of the given components' 1-D Gaussians: (c,)."""
    total = np.zeros(len(z))
    for j in range(mu.shape[1]):
        log_p = (z[:, j, None] - mu[None, :, j]) ** 2  # (c, n)
        log_p *= -0.5 * np.exp(-logvar[:, j])
        log_p -= 0.5 * (LOG_2PI + logvar[:, j])
        total += _logsumexp_rows(log_p) - np.log(len(mu))
    return total


def _logsumexp_rows(x: np.ndarray) -> np.ndarray:
    """log Σ_n exp(x[:, n]) for (c, N) -> (c,), shifted by the row max so exp never overflows."""
    top = x.max(axis=1)
    return top + np.log(np.exp(x - top[:, None]).sum(axis=1))


def estimate_total_correlation(
    data: GroundTruthData,
    encode_dist: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
    num_data: int = 10_000,
    num_samples: int = 10_000,
    seed: int = 0,
    batch_size: int = 2048,
    all_data: bool = False,
) -> dict[str, Any]:
    """True TC of an encoder on ``num_data`` random observations of ``data``, or on all of them.

    ``encode_dist`` maps observations (n, ...) to (mu, logvar), each (n, D) numpy arrays. The observations
    are drawn by ``data.sample_factors`` from their own seeded stream and encoded in batches of
    ``batch_size`` (which changes speed, not the estimate).

    ``all_data``: q(z) is the mixture over every example of the (finite) data set, the paper's "true" TC:
    each of the ``num_samples`` codes is scored against all ``num_examples(data)`` components for log q(z)
    and against ``num_data`` random ones for each marginal (see :func:`total_correlation`). This removes
    the upward bias that a sampled mixture has when posteriors are narrow (docs/metrics.md).
    """
    require_factors(data)
    if all_data:
        if num_examples(data) <= 0:
            name = getattr(data, "name", "?")
            raise ValueError(f"tc: all_data needs a finite data set; '{name}' does not list its examples")
        factors = index_to_factors(np.arange(num_examples(data), dtype=np.int64), data.factor_sizes)
    else:
        factors = data.sample_factors(num_data, metric_rng(seed, "tc/data"))
    mus, logvars = [], []
    for start in range(0, len(factors), batch_size):
        mu, logvar = encode_dist(data.observations(factors[start : start + batch_size]))
        mus.append(np.asarray(mu))
        logvars.append(np.asarray(logvar))
    result = total_correlation(np.concatenate(mus), np.concatenate(logvars), num_samples, seed,
                               marginal_components=num_data if all_data else None)
    result.update(batch_size=int(batch_size), all_data=bool(all_data))
    return result
