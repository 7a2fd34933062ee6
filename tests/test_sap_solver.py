"""The exact one-feature SVM solver behind SAP (Kumar et al., ICLR 2018) against scikit-learn's liblinear.

The exact solver must find the optimum LinearSVC(C, class_weight="balanced") defines, so it is compared with a
LinearSVC run to tol 1e-10: weights, intercepts and predictions, on 2, 3 and 40 classes, unbalanced counts and
shifted or rescaled codes. Against liblinear at its default tolerance (dlib's setting) the SAP score matrix may
differ only by a few test points.
"""

from __future__ import annotations

import functools
import importlib
import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.svm import LinearSVC

from factorvae.metrics.sap import (
    CURVATURE,
    _OneFeatureProblems,
    fit_linear_svc,
    predict_linear_svc,
    sap,
    score_matrix,
)
from helpers import FactorGrid

# name: (classes, train samples, class probabilities or None for uniform, shift, scale, C)
CASES = {
    "2 classes": (2, 400, None, 0.0, 1.0, 0.01),
    "3 classes": (3, 600, None, 0.0, 1.0, 0.01),
    "40 classes": (40, 4000, None, 0.0, 1.0, 0.01),
    "unbalanced 2 classes": (2, 500, (0.15, 0.85), 0.0, 1.0, 0.01),
    "unbalanced 6 classes": (6, 900, (0.02, 0.08, 0.1, 0.2, 0.25, 0.35), 0.0, 1.0, 0.01),
    "shifted and scaled": (5, 800, None, 2.0, 5.0, 0.01),
    "tiny scale": (4, 800, None, -1.0, 0.01, 1.0),
    "large C": (3, 500, None, 0.5, 1.0, 10.0),
}
DSPRITES_SIZES = (3, 6, 40, 32, 32)
SAP_MODULE = importlib.import_module("factorvae.metrics.sap")  # the package's attribute `sap` is the function


def _one_feature_data(name: str, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Codes (n, 1) that follow the class with overlap, and labels that are not 0..m-1 (m values, 3 apart)."""
    m, _, probs, shift, scale, _ = CASES[name]
    rng = np.random.default_rng(seed)
    index = rng.choice(m, size=n, p=probs)
    index[:m] = np.arange(m)  # every class present
    x = (index / m + 0.3 * rng.normal(size=n)) * scale + shift
    return x[:, None], 3 * index - 5


@functools.cache
def _fits(name: str) -> tuple:
    """(our fit, LinearSVC run to tol 1e-10, test codes) for one case; cached so the two tests fit once."""
    n, c = CASES[name][1], CASES[name][5]
    x, y = _one_feature_data(name, n, seed=len(name))
    reference = LinearSVC(C=c, class_weight="balanced", tol=1e-10, max_iter=10**6).fit(x, y)
    x_test, _ = _one_feature_data(name, 2000, seed=len(name) + 1)
    return fit_linear_svc(x, y[:, None], c)[0], reference, x_test


@pytest.mark.parametrize("name", CASES)
def test_weights_match_linearsvc_at_tight_tolerance(name):
    (classes, coef, intercept), reference, _ = _fits(name)
    np.testing.assert_array_equal(classes, reference.classes_)
    assert coef.shape == (1, reference.coef_.shape[0])  # one problem for 2 classes, one per class otherwise
    np.testing.assert_allclose(coef[0], reference.coef_[:, 0], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(intercept[0], reference.intercept_, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", CASES)
def test_predictions_match_linearsvc(name):
    fit, reference, x_test = _fits(name)
    np.testing.assert_array_equal(predict_linear_svc([fit], x_test)[:, 0, 0], reference.predict(x_test))


def _dsprites_like(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A dSprites-sized factor table (n, 5) and raw-scale codes (n, 10): five noisy single-factor
    dimensions at different scales and offsets, three mixtures, one near-constant and one pure-noise one."""
    factors = rng.integers(0, DSPRITES_SIZES, size=(n, len(DSPRITES_SIZES)))
    z = factors / np.array(DSPRITES_SIZES)
    single = (z + 0.2 * rng.normal(size=z.shape)) * np.array([1.0, -3.0, 0.5, 2.0, 8.0]) + np.array([0, 1, -2, 0, 5])
    mixed = z @ rng.normal(size=(5, 3)) + 0.5 * rng.normal(size=(n, 3))
    quiet = np.stack([0.01 * rng.normal(size=n) + 0.3, rng.normal(size=n)], axis=1)
    return factors, np.hstack([single, mixed, quiet]).astype(np.float32)


def test_score_matrix_agrees_with_default_liblinear():
    rng = np.random.default_rng(0)
    y_train, x_train = _dsprites_like(2000, rng)
    y_test, x_test = _dsprites_like(1000, rng)
    exact = score_matrix(x_train, y_train, x_test, y_test, 0.01)
    liblinear = score_matrix(x_train, y_train, x_test, y_test, 0.01, solver="liblinear")
    assert exact.shape == (10, 5)
    assert np.abs(exact - liblinear).max() <= 0.003
    assert list(exact[:5].argmax(axis=0)) == [0, 1, 2, 3, 4]  # each factor's own dimension predicts it best


def test_unknown_solver_is_refused():
    x, y = np.zeros((4, 1)), np.array([[0], [1], [0], [1]])
    with pytest.raises(ValueError, match="unknown solver 'dual'; choose one of: exact, liblinear"):
        score_matrix(x, y, x, y, 0.01, solver="dual")
    with pytest.raises(ValueError, match="unknown solver"):
        sap(TINY_GRID, lambda obs: obs, solver="dual")


@pytest.mark.parametrize("solver", ["exact", "liblinear"])
def test_single_class_factor_is_always_predicted(solver):
    rng = np.random.default_rng(1)
    y = np.stack([np.full(300, 7), rng.integers(0, 2, 300)], axis=1)  # factor 0 has one value only
    x = np.stack([y[:, 1] + 0.1 * rng.normal(size=300), rng.normal(size=300)], axis=1)
    scores = score_matrix(x[:200], y[:200], x[200:], y[200:], 0.01, solver=solver)
    np.testing.assert_array_equal(scores[:, 0], 1.0)
    assert scores[0, 1] > 0.9  # the other factor is still fitted


TINY_GRID = FactorGrid((1, 3, 4), ("constant", "a", "b"))  # the first factor takes a single value


@pytest.mark.parametrize("solver", ["exact", "liblinear"])
def test_sap_records_solver_and_scores_single_class_factor_zero(solver):
    overrides = {"num_train": 300, "num_test": 200} | ({} if solver == "exact" else {"solver": solver})
    result = sap(TINY_GRID, lambda obs: obs, **overrides)
    assert result["settings"]["solver"] == solver
    assert np.allclose(np.array(result["score_matrix"])[:, 0], 1.0)
    assert result["per_factor"][0] == 0.0  # every dimension predicts it: no gap
    assert result["per_factor"][2] > 0.2  # factor b: its own dimension beats the others


def test_line_search_stops_near_the_minimum_along_an_overlong_step():
    # full Newton steps are almost always taken; this drives the rarely used regula falsi directly
    rng = np.random.default_rng(2)
    x, labels = rng.normal(size=(300, 20)) * 3 + 1, rng.integers(0, 5, size=(300, 1))
    problems = _OneFeatureProblems(x, labels, [5], 0.5)
    theta = np.zeros((problems.dim.size, 2))
    grad, _, (h00, h01, h11) = problems.derivatives(theta)
    newton = -np.stack([h11 * grad[:, 0] - h01 * grad[:, 1], h00 * grad[:, 1] - h01 * grad[:, 0]], axis=1)
    step = 50 * newton / (h00 * h11 - h01**2)[:, None]
    new, (new_grad, _, _) = problems._line_search(theta, step, grad)
    slope0, slope = np.sum(step * grad, axis=1), np.sum(step * new_grad, axis=1)
    assert np.all(np.abs(slope) <= CURVATURE * np.abs(slope0))
    assert np.all((new / step > 0) & (new / step < 0.1))  # moved forward, well short of the overlong step


def test_solver_fails_loudly_when_out_of_newton_steps(monkeypatch):
    monkeypatch.setattr(SAP_MODULE, "MAX_NEWTON", 1)
    x, y = _one_feature_data("3 classes", 300, seed=0)
    with pytest.raises(RuntimeError, match="stopped after 1 Newton steps.*solver='liblinear'"):
        fit_linear_svc(x, y[:, None], 0.01)


def test_constant_dimension_predicts_one_class_and_matches_linearsvc():
    y = np.repeat([0, 1, 2], [50, 80, 70])
    x = np.full((200, 1), 0.7)
    (classes, coef, intercept), = fit_linear_svc(x, y[:, None], 0.01)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        reference = LinearSVC(C=0.01, class_weight="balanced", tol=1e-10, max_iter=10**6).fit(x, y)
    np.testing.assert_allclose(coef[0], reference.coef_[:, 0], atol=1e-8)
    np.testing.assert_allclose(intercept[0], reference.intercept_, atol=1e-8)
    assert np.unique(predict_linear_svc([(classes, coef, intercept)], x)).size == 1
