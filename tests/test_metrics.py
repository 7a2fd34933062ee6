"""Known-answer tests of the disentanglement metrics (paper §5) on data whose observations are the factors.

The toy data set's observation of a factor row is the row itself as float32 (n, K): no images, so the
metrics are checked for what they measure, and the tests run in seconds.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest

import factorvae.metrics
from factorvae.data import DataError, GroundTruthData
from factorvae.metrics import (
    METRICS,
    CodePool,
    betavae_score,
    dci,
    evaluate_metrics,
    factorvae_score,
    mig,
    sap,
)
from factorvae.metrics.dci import completeness, disentanglement
from factorvae.metrics.mig import histogram_discretize, mutual_info_matrix
from helpers import FactorGrid

SIZES = (3, 6, 10, 8, 8)
K = len(SIZES)
SCALE = np.array([0.5, 2.0, 0.1, 3.0, 1.0], dtype=np.float32)  # per-dim scales: metrics must not care
# small sample sizes where the known answers still hold, so the file runs fast
FAST = {
    "factorvae": {"num_variance": 2000, "num_train": 300, "num_eval": 300},
    "betavae": {"num_train": 300, "num_eval": 300, "vote_size": 32},
    "mig": {"num_train": 3000},
    "dci": {"num_train": 2000, "num_test": 1000, "forest_trees": 10},
    "sap": {"num_train": 2000, "num_test": 1000},
}


SMALL_GRID = (2, 3, 4)


class NoFactors(GroundTruthData):
    name = "faces"
    num_examples = 10


DATA = FactorGrid(SIZES, ("shape", "scale", "angle", "x", "y"))


def identity(obs: np.ndarray) -> np.ndarray:
    return obs * SCALE


def permuted(obs: np.ndarray) -> np.ndarray:
    """Identity with dimensions permuted, rescaled (one sign flipped) and shifted."""
    return (obs * SCALE)[:, [3, 0, 4, 1, 2]] * np.array([1.0, -4.0, 0.2, 7.0, 1.5]) + 3.0


def with_constant(obs: np.ndarray) -> np.ndarray:
    """Identity plus a dimension that collapsed (a constant, as a dimension at the prior mean)."""
    return np.hstack([identity(obs), np.full((len(obs), 1), 0.7, dtype=np.float32)])


def missing_last(obs: np.ndarray) -> np.ndarray:
    """Captures K−1 factors perfectly and ignores the last: the paper's failure case of Higgins' metric."""
    return obs[:, : K - 1] * SCALE[: K - 1]


def noise(obs: np.ndarray) -> np.ndarray:
    """Codes unrelated to the observations (seeded by the batch so runs repeat)."""
    rng = np.random.default_rng(int(obs.sum()) % 2**32)
    return rng.normal(size=(len(obs), K))


@pytest.mark.parametrize("represent", [identity, permuted, with_constant])
def test_disentangled_codes_score_high(represent):
    results = evaluate_metrics(DATA, represent, protocol="paper", settings=FAST)
    assert results["factorvae"]["score"] >= 0.99
    assert results["betavae"]["score"] >= 0.95
    assert results["mig"]["score"] >= 0.75
    assert results["dci"]["score"] >= 0.9
    assert results["dci"]["informativeness"] >= 0.95
    # SAP's single-dimension linear SVM cannot separate middle values of many-valued factors (dlib's
    # definition), so a perfect code scores far below 1; its top dimension must still be the right one
    scores = np.array(results["sap"]["score_matrix"])
    assert results["sap"]["score"] >= 0.2
    if represent is identity:
        assert list(scores.argmax(axis=0)) == list(range(K))


def test_collapsed_dimension_is_pruned():
    result = factorvae_score(DATA, with_constant, **FAST["factorvae"])
    assert result["active_dims"] == list(range(K))
    assert result["classifier"][K] == -1  # the constant dimension never wins a vote
    assert np.array(result["train_votes"])[K].sum() == 0


def test_noise_scores_chance():
    results = evaluate_metrics(DATA, noise, protocol="paper", settings=FAST)
    assert abs(results["factorvae"]["score"] - 1 / K) < 0.07
    assert abs(results["betavae"]["score"] - 1 / K) < 0.07
    assert results["mig"]["score"] < 0.03
    assert results["dci"]["score"] < 0.1
    assert abs(results["dci"]["informativeness"] - np.mean(1 / np.array(SIZES))) < 0.05
    assert results["sap"]["score"] < 0.03


def test_higgins_metric_fails_where_the_paper_metric_does_not():
    """Paper §5: K−1 disentangled factors get 100% on Higgins' metric but only (K−1)/K on the new one."""
    higgins = betavae_score(DATA, missing_last, protocol="paper")
    ours = factorvae_score(DATA, missing_last, protocol="paper")
    assert higgins["score"] >= 0.95
    # every vote with the last factor fixed goes to a dimension that belongs to another factor, and all
    # other votes are right: the score is exactly the fraction of votes that did not fix the last factor
    eval_votes = np.array(ours["eval_votes"])
    assert ours["score"] == pytest.approx(eval_votes[:, : K - 1].sum() / eval_votes.sum())
    assert ours["score"] <= (K - 1) / K + 0.05


def test_dlib_protocol_known_answers():
    fv = factorvae_score(DATA, identity, protocol="dlib")
    assert fv["score"] >= 0.99
    assert fv["settings"] == {"vote_size": 64, "num_train": 10_000, "num_eval": 5_000, "num_variance": 10_000,
                              "prune_std": 0.05, "batch_size": 2048, "exhaustive": False}
    assert np.array(fv["train_votes"]).sum() == 10_000
    assert betavae_score(DATA, missing_last, protocol="dlib")["score"] >= 0.95
    assert mig(DATA, identity, protocol="dlib")["score"] >= 0.75
    # dlib's gradient boosted trees fit one tree per class per stage: a 3-factor grid keeps the test fast
    gbt = dci(FactorGrid(SMALL_GRID), lambda obs: obs * 3.0, protocol="dlib", num_train=500, num_test=300)
    assert gbt["settings"]["predictor"] == "gbt"
    assert gbt["score"] >= 0.9 and gbt["completeness"] >= 0.9


def test_higgins_dlib_classifier_is_one_vs_rest_liblinear_with_100_iterations():
    from sklearn.linear_model import LogisticRegression

    from factorvae.metrics.betavae_score import make_classifier, pair_features

    higgins = betavae_score(DATA, missing_last, protocol="dlib", num_train=600, num_eval=300)
    assert higgins["settings"]["classifier"] == "dlib" and higgins["score"] >= 0.95
    assert betavae_score(DATA, identity, protocol="paper", **FAST["betavae"])["settings"]["classifier"] == "lbfgs"
    # the old scikit-learn default dlib used: one binary liblinear fit per factor, prediction by the largest
    # decision value; ours must predict exactly what K such fits predict
    pool = CodePool(DATA, noise, seed=0)
    x, y = pair_features(pool, np.random.default_rng(1), 400, 16)
    ours = make_classifier("dlib").fit(x, y)
    fits = [LogisticRegression(solver="liblinear", C=1.0, max_iter=100, random_state=0).fit(x, y == k)
            for k in range(K)]
    scores = np.stack([f.decision_function(x) for f in fits], axis=1)  # (n, K)
    assert np.array_equal(ours.predict(x), scores.argmax(1))
    assert all(e.max_iter == 100 and e.solver == "liblinear" for e in ours.estimators_)
    with pytest.raises(ValueError, match="unknown classifier 'svm'; choose one of: lbfgs, dlib"):
        betavae_score(DATA, identity, classifier="svm")


def test_same_seed_same_numbers_and_seed_matters():
    a = evaluate_metrics(DATA, permuted, seed=3, settings=FAST)
    b = evaluate_metrics(DATA, permuted, seed=3, settings=FAST)
    assert a == b
    c = factorvae_score(DATA, noise, seed=4, **FAST["factorvae"])
    assert c["eval_votes"] != factorvae_score(DATA, noise, seed=5, **FAST["factorvae"])["eval_votes"]


def _without(result: dict, *keys: str) -> dict:
    out = {k: v for k, v in result.items() if k not in keys}
    out["settings"] = {k: v for k, v in result["settings"].items() if k not in keys}
    return out


def test_scores_do_not_depend_on_batch_size():
    small = evaluate_metrics(DATA, permuted, batch_size=37, settings=FAST)
    large = evaluate_metrics(DATA, permuted, batch_size=4096, settings=FAST)
    for name in METRICS:
        assert _without(small[name], "batch_size") == _without(large[name], "batch_size")


def test_exhaustive_mode_gives_identical_results():
    sampled = evaluate_metrics(DATA, permuted, settings=FAST)
    exhaustive = evaluate_metrics(DATA, permuted, exhaustive=True, settings=FAST)
    for name in METRICS:
        assert _without(sampled[name], "exhaustive", "images_encoded") == _without(
            exhaustive[name], "exhaustive", "images_encoded"
        )
    assert sum(r["images_encoded"] for r in exhaustive.values()) == DATA.num_examples


def test_shared_pool_matches_metrics_run_alone_and_encodes_less():
    together = evaluate_metrics(DATA, identity, seed=1, settings=FAST)
    for name, metric in METRICS.items():
        alone = metric(DATA, identity, seed=1, **FAST[name])
        assert _without(alone, "images_encoded") == _without(together[name], "images_encoded")
    # the 2,000-row variance sample of the FactorVAE metric is reused by MIG/DCI/SAP's training rows
    assert together["mig"]["images_encoded"] == 1000  # only the rows beyond 2,000 up to MIG's 3,000
    assert together["dci"]["images_encoded"] == 1000  # its test rows; training rows already encoded
    assert together["sap"]["images_encoded"] == 0


def test_pool_counts_and_checks_its_owner():
    pool = CodePool(DATA, identity, seed=0, batch_size=100)
    factors, codes = pool.random_sample(250)
    assert factors.shape == (250, K) and codes.shape == (250, K) and pool.images_encoded == 1000
    np.testing.assert_array_equal(pool.random_sample(120)[0], factors[:120])  # prefixes of one stream
    with pytest.raises(ValueError, match="another"):
        mig(DATA, permuted, pool=pool)


def test_results_record_protocol_settings_and_are_json():
    results = evaluate_metrics(DATA, identity, protocol="dlib", settings={"mig": {"num_bins": 10}},
                               names=["mig"])
    result = results["mig"]
    assert result["protocol"] == "dlib" and result["metric"] == "mig" and result["seed"] == 0
    assert result["settings"] == {"num_train": 10_000, "num_bins": 10, "batch_size": 2048, "exhaustive": False}
    json.dumps(result)
    json.dumps(evaluate_metrics(DATA, identity, settings=FAST))


def test_bad_arguments_fail_clearly():
    with pytest.raises(ValueError, match="unknown protocol"):
        mig(DATA, identity, protocol="nope")
    with pytest.raises(TypeError, match="num_bins"):
        mig(DATA, identity, num_bin=10)
    with pytest.raises(ValueError, match="num_bins must be an integer >= 1"):
        mig(DATA, identity, num_bins=0)
    with pytest.raises(ValueError, match="num_bins must be an integer >= 1"):
        mig(DATA, identity, num_bins=2.5)
    with pytest.raises(ValueError, match="unknown"):
        evaluate_metrics(DATA, identity, names=["irs"])
    with pytest.raises(ValueError, match="predictor"):
        dci(DATA, identity, predictor="svm")
    for metric in METRICS.values():
        with pytest.raises(DataError, match="no ground-truth factors"):
            metric(NoFactors(), identity)
    with pytest.raises(DataError, match="no ground-truth factors"):
        evaluate_metrics(NoFactors(), identity)


def test_no_active_dimension_scores_zero():
    result = factorvae_score(DATA, lambda obs: np.zeros((len(obs), 3)), **FAST["factorvae"])
    assert result["score"] == 0.0 and result["num_active_dims"] == 0 and "note" in result


def test_dci_scores_of_known_importance_matrices():
    assert disentanglement(np.eye(4)) == pytest.approx(1.0)
    assert completeness(np.eye(4)) == pytest.approx(1.0)
    assert disentanglement(np.ones((4, 4))) == pytest.approx(0.0, abs=1e-9)
    # one dimension carries two factors: it is half-disentangled (entropy 1 bit of log2(4) = 2 bits)
    two = np.array([[1.0, 1.0, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1.0]])
    assert disentanglement(two) == pytest.approx(0.5 * 0.5 + 0.5 * 1.0)
    assert completeness(two) == pytest.approx(1.0)


def test_histogram_discretize_uses_equal_width_bins_over_the_range():
    codes = np.array([[0.0], [0.49], [0.5], [1.0]])
    np.testing.assert_array_equal(histogram_discretize(codes, 2)[:, 0], [1, 1, 2, 2])


def test_mutual_info_matrix_equals_sklearn():
    from sklearn.metrics import mutual_info_score

    rng = np.random.default_rng(3)
    factors = np.stack([rng.integers(0, s, 2000) * 7 + 100 for s in (2, 6, 40)], axis=1)  # labels need not be 0..m−1
    codes = np.concatenate([factors[:, 2:] // 14, rng.integers(0, 20, (2000, 2)), np.zeros((2000, 1))], axis=1)
    ours = mutual_info_matrix(codes, factors)
    ref = np.array([[mutual_info_score(f, c) for f in factors.T] for c in codes.T])
    np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-12)
    assert ours[-1].tolist() == [0.0, 0.0, 0.0]  # a constant dimension carries no information
    entropy = np.diag(mutual_info_matrix(factors, factors))
    np.testing.assert_allclose(entropy, [mutual_info_score(f, f) for f in factors.T], rtol=1e-12)


def test_sap_ranks_the_informative_dimension_first():
    result = sap(DATA, identity, **FAST["sap"])
    noise_result = sap(DATA, noise, **FAST["sap"])
    assert result["score"] > noise_result["score"] + 0.15


def test_metrics_do_not_import_torch_or_models():
    """Metrics know nothing about models (style rule 6): no module of the package imports them."""
    banned = {"torch", "factorvae.nets", "factorvae.methods", "factorvae.training", "factorvae.run"}
    package = Path(factorvae.metrics.__file__).parent
    for path in package.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [("factorvae." if node.level == 2 else "") + (node.module or "")]
            else:
                continue
            for name in names:
                assert not any(name == b or name.startswith(b + ".") for b in banned), f"{path.name}: {name}"


def test_the_docs_example_of_an_own_data_object_runs(capsys):
    """docs/metrics.md: an object with disentanglement_lib's members (no has_factors, no base class) is scored."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "metrics.md").read_text()
    block = text.split("<!-- example: own data object -->", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    exec(compile("\n".join(line[2:] for line in block.splitlines()), "docs/metrics.md", "exec"), {})
    assert capsys.readouterr().out.split() == ["1.0", "True"]


def test_duck_typed_data_gets_factor_names_and_grid_size_derived():
    from factorvae.metrics.pool import factor_names, has_factors, num_examples

    class Bare:
        factor_sizes = (3, 4)

        def sample_factors(self, n, rng):
            return rng.integers(0, self.factor_sizes, size=(n, 2))

        def observations(self, factors):
            return factors.astype(np.float32)

    assert has_factors(Bare()) and not has_factors(type("NoFactors", (), {"factor_sizes": ()})())
    assert factor_names(Bare()) == ["factor0", "factor1"] and num_examples(Bare()) == 12
    result = factorvae_score(Bare(), lambda obs: obs, exhaustive=True, num_train=100, num_eval=100)
    assert result["score"] == 1.0 and result["factor_names"] == ["factor0", "factor1"]
    with pytest.raises(DataError, match="has no ground-truth factors"):
        factorvae_score(type("NoFactors", (), {"factor_sizes": ()})(), lambda obs: obs)
