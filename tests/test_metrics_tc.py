"""The Monte-Carlo total correlation of q(z) (paper §4, Fig. 7) against closed forms."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import mutual_info_score

from factorvae.data import DataError, GroundTruthData
from factorvae.metrics import estimate_total_correlation, total_correlation
from helpers import FactorGrid


def gaussian_tc(cov: np.ndarray) -> float:
    """TC of N(0, Σ) = 0.5 (Σ_j log Σ_jj − log det Σ)."""
    return 0.5 * (np.sum(np.log(np.diag(cov))) - np.linalg.slogdet(cov)[1])


def test_correlated_gaussian_codes_match_the_closed_form():
    """Means from N(0, Σ) and posterior variance σ²: q(z) → N(0, Σ + σ²I) as N grows.

    σ must not be tiny: the N-component mixture is what is measured, and with spikes far narrower than
    the spacing of the N means its TC grows towards (D−1)·log N instead of the Gaussian's.
    """
    rng = np.random.default_rng(0)
    cov, sigma, n = np.array([[1.0, 0.8], [0.8, 1.0]]), 0.2, 4000
    mu = rng.multivariate_normal(np.zeros(2), cov, size=n)
    result = total_correlation(mu, np.full(mu.shape, 2 * np.log(sigma)), num_samples=n)
    expected = gaussian_tc(cov + sigma**2 * np.eye(2))  # 0.448 nats
    assert result["tc"] == pytest.approx(expected, abs=0.05)
    assert result["stderr"] < 0.02
    assert result["num_data"] == n and result["num_samples"] == n and "exact-mixture" in result["estimator"]


def test_independent_codes_have_near_zero_tc():
    mu = np.random.default_rng(1).normal(size=(4000, 2))
    assert abs(total_correlation(mu, np.full(mu.shape, 2 * np.log(0.2)), 4000)["tc"]) < 0.02


def test_chunking_and_seed():
    rng = np.random.default_rng(2)
    mu, logvar = rng.normal(size=(300, 3)), rng.normal(size=(300, 3)) * 0.3 - 2
    whole = total_correlation(mu, logvar, 500, seed=7)
    chunked = total_correlation(mu, logvar, 500, seed=7, max_elements=301)
    assert chunked["tc"] == pytest.approx(whole["tc"], abs=1e-12)
    assert total_correlation(mu, logvar, 500, seed=8)["tc"] != whole["tc"]


def test_spiky_codes_on_data_give_the_plug_in_information():
    """Posteriors far narrower than the gaps between factor values: q(z) is a mixture of separated spikes,
    so TC is exactly the entropy (duplicated factor) or the plug-in mutual information of the N samples."""
    data = FactorGrid((3, 6, 10))
    n, logvar = 3000, np.log(1e-4)
    factors = None

    def encode(columns):
        def encode_dist(obs):
            nonlocal factors
            factors = obs if factors is None else np.vstack([factors, obs])
            mu = obs[:, columns].astype(np.float64)
            return mu, np.full(mu.shape, logvar)
        return encode_dist

    same = estimate_total_correlation(data, encode([0, 0]), num_data=n, num_samples=n, batch_size=700)
    f = factors.astype(int)
    assert same["tc"] == pytest.approx(mutual_info_score(f[:, 0], f[:, 0]), abs=1e-9)  # H(v_0) ≈ log 3
    factors = None
    pair = estimate_total_correlation(data, encode([0, 1]), num_data=n, num_samples=n, batch_size=n)
    f = factors.astype(int)
    assert pair["tc"] == pytest.approx(mutual_info_score(f[:, 0], f[:, 1]), abs=1e-9)  # ≈ 0
    assert pair["batch_size"] == n and pair["num_data"] == n


def test_no_factors_and_bad_shapes_fail_clearly():
    class NoFactors(GroundTruthData):
        name = "faces"

    with pytest.raises(DataError, match="no ground-truth factors"):
        estimate_total_correlation(NoFactors(), lambda obs: (obs, obs))
    with pytest.raises(ValueError, match="mu and logvar"):
        total_correlation(np.zeros((4, 2)), np.zeros((4, 3)))


def test_all_data_uses_the_whole_grid():
    """Over the whole factor grid the factors are exactly independent and uniform, so spiky codes give
    TC = H(v_0) = log 3 for a duplicated factor and exactly 0 for two different factors."""
    data = FactorGrid((3, 6, 10))
    logvar = np.log(1e-4)

    def encode(columns):
        def encode_dist(obs):
            mu = obs[:, columns].astype(np.float64)
            return mu, np.full(mu.shape, logvar)
        return encode_dist

    same = estimate_total_correlation(data, encode([0, 0]), num_data=500, num_samples=400, all_data=True)
    assert same["num_data"] == 180 and same["all_data"] and same["marginal_components"] == 180
    assert same["tc"] == pytest.approx(np.log(3), abs=1e-9)
    pair = estimate_total_correlation(data, encode([0, 1]), num_data=500, num_samples=400, all_data=True)
    assert pair["tc"] == pytest.approx(0.0, abs=1e-9)
    # marginals from a random subset of 150 of the 180 components: close, not exact
    sub = estimate_total_correlation(data, encode([0, 0]), num_data=150, num_samples=400, all_data=True)
    assert sub["marginal_components"] == 150 and sub["tc"] == pytest.approx(np.log(3), abs=0.15)


def test_joint_density_by_matrix_product_equals_the_direct_sum():
    from factorvae.metrics.tc import _JointDensity, _logsumexp_rows

    rng = np.random.default_rng(5)
    mu, logvar = rng.normal(size=(700, 4)) * 2, rng.uniform(-9, 1, size=(700, 4))  # σ from 0.01 to 1.6
    z = mu[:50] + np.exp(0.5 * logvar[:50]) * rng.normal(size=(50, 4))
    direct = -0.5 * (((z[:, None, :] - mu[None]) ** 2) * np.exp(-logvar)[None] + logvar[None] + np.log(2 * np.pi))
    expected = _logsumexp_rows(direct.sum(axis=2)) - np.log(700)
    np.testing.assert_allclose(_JointDensity(mu, logvar).log_q(z), expected, rtol=0, atol=1e-8)


def test_all_data_needs_a_finite_data_set():
    endless = FactorGrid((3, 6, 10))
    endless.num_examples = 0
    with pytest.raises(ValueError, match="all_data needs a finite data set"):
        estimate_total_correlation(endless, lambda obs: (obs, obs), all_data=True)
