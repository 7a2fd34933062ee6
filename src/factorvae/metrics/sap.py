"""SAP, the Separated Attribute Predictability score (Kumar et al., "Variational Inference of
Disentangled Latent Concepts from Unlabeled Observations", ICLR 2018).

Score matrix S (D × K): how well code dimension d alone predicts factor k. For discrete factors, as in
disentanglement_lib (dlib), S_dk is the test accuracy of a linear SVM (scikit-learn LinearSVC, C = 0.01,
balanced class weights) fitted on the single feature z_d. SAP is the mean over factors of the gap between
the best and second-best dimension. A single threshold-like feature cannot separate the middle values of
a many-valued factor, so even a perfect representation scores well below 1 on factors such as dSprites'
position: compare SAP numbers only with SAP numbers from the same data set.

Protocols: both "paper" and "dlib" use dlib's 10,000 training and 5,000 test points (Kim & Mnih do not
use SAP).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.svm import LinearSVC

from ..data import GroundTruthData
from .pool import CodePool, Represent
from .protocol import make_result, resolve_settings

NAME = "sap"
PROTOCOLS: dict[str, dict[str, Any]] = {
    "paper": {"num_train": 10_000, "num_test": 5_000, "svm_c": 0.01},
    "dlib": {"num_train": 10_000, "num_test": 5_000, "svm_c": 0.01},
}


def sap(
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
    """Mean over factors of the accuracy gap between the two most predictive single code dimensions."""
    s = resolve_settings(NAME, PROTOCOLS, protocol, overrides)
    pool = CodePool.get(pool, data, represent, seed, batch_size, exhaustive)
    encoded_before = pool.images_encoded
    y_train, x_train = pool.random_sample(s["num_train"], "train")
    y_test, x_test = pool.random_sample(s["num_test"], "test")
    scores = score_matrix(x_train, y_train, x_test, y_test, s["svm_c"])  # (D, K)
    top = np.sort(np.vstack([scores, np.zeros((1, scores.shape[1]))]), axis=0)[::-1]  # zero row: 1-dim code
    per_factor = top[0] - top[1]
    return make_result(
        NAME, float(per_factor.mean()), protocol, {**s, **pool.describe()}, seed,
        per_factor=per_factor, score_matrix=scores, factor_names=list(data.factor_names),
        images_encoded=pool.images_encoded - encoded_before,
    )


def score_matrix(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, c: float
) -> np.ndarray:
    """Test accuracy of a LinearSVC on each single code dimension for each factor: (D, K)."""
    x_train, x_test = x_train.astype(np.float64), x_test.astype(np.float64)
    scores = np.zeros((x_train.shape[1], y_train.shape[1]))
    with warnings.catch_warnings():
        # a strongly regularised SVM on raw, unscaled codes may stop at max_iter; dlib accepts that too
        warnings.simplefilter("ignore", ConvergenceWarning)
        for d in range(x_train.shape[1]):
            for k in range(y_train.shape[1]):
                svm = LinearSVC(C=c, class_weight="balanced").fit(x_train[:, d : d + 1], y_train[:, k])
                scores[d, k] = np.mean(svm.predict(x_test[:, d : d + 1]) == y_test[:, k])
    return scores
