"""SAP, the Separated Attribute Predictability score (Kumar et al., "Variational Inference of
Disentangled Latent Concepts from Unlabeled Observations", ICLR 2018, where SAP is defined).

Score matrix S (D × K): how well code dimension d alone predicts factor k. For discrete factors, as in
disentanglement_lib (dlib), S_dk is the test accuracy of a linear SVM (scikit-learn LinearSVC, C = 0.01,
balanced class weights) fitted on the single feature z_d. SAP is the mean over factors of the gap between
the best and second-best dimension. A single threshold-like feature cannot separate the middle values of
a many-valued factor, so even a perfect representation scores well below 1 on factors such as dSprites'
position: compare SAP numbers only with SAP numbers from the same data set.

The SVM problem. LinearSVC's defaults (squared hinge, L2 penalty, one-vs-rest, the intercept as the weight
of a constant feature 1, regularised with w) fit, for each class c, with y_i = +1 if label_i == c else -1,
    minimise over (w, b):  0.5 (w² + b²) + Σ_i C_i max(0, 1 − y_i (w x_i + b))²
and predict argmax_c (w_c x + b_c) over the sorted classes. scikit-learn's liblinear (svm/src/liblinear/
linear.cpp, ``train``) weights only the positives: C_i = C·weight[c] where label_i == c and the plain C for
every negative, "balanced" weight[j] = n / (n_classes · count_j). With two classes it trains one problem,
classes[1] (C·weight[1]) against classes[0] (C·weight[0]), and predicts classes[1] where w x + b > 0.
With one class in the training labels (LinearSVC raises) both solvers predict that class, so the
factor's accuracy is 1 in every dimension and its SAP gap 0.

Setting ``solver``:
- "exact" (default, both protocols): the same optimum, solved until each gradient entry is ≤ 1e-10 of the
  summed magnitudes of its terms. In one feature the active samples (margin < 1) of a class are a prefix
  or a suffix of the codes sorted once per dimension, so gradient and 2×2 Hessian come from prefix sums
  of v, v² and np.searchsorted in O(log n); a generalised Newton method with a line search then runs on
  all D · Σ_k n_classes problems at once (8 steps on dSprites-like codes), and predictions are read off
  the upper envelope of each factor's class lines. liblinear instead stops at tol = 1e-4 (a relative
  gradient norm; with one feature scikit-learn's dual="auto" picks its primal Newton solver), which
  on dSprites-like raw codes leaves w and b up to 1e-3 from the optimum (1e-2 on shifted or rescaled
  codes), or at max_iter = 1,000 with a ConvergenceWarning that dlib ignores (the dual coordinate
  descent of dlib's scikit-learn hit it on codes scaled ×30). So the two differ only where liblinear
  stopped early: by at most 2 test points in 1,000 per entry in tests/test_sap_solver.py and 2 in 5,000
  below. Classes whose training codes are identical have identical optima; which of them wins the
  argmax is then decided by rounding, in either solver.
- "liblinear": one LinearSVC per (d, k), as dlib; kept to check the exact solver and for dlib's code path.
Speed of ``score_matrix`` (10 dims, factor sizes (3, 6, 40, 32, 32), 10,000 training and 5,000 test
points, 2 shared CPU cores; method and command in docs/metrics.md): exact 0.04 s, liblinear 0.74 s
(median of 7), about 18× faster.

Protocols: both "paper" and "dlib" use dlib's 10,000 training and 5,000 test points (Kim & Mnih do not
use SAP) and the exact solver.
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
SOLVERS = ("exact", "liblinear")
PROTOCOLS: dict[str, dict[str, Any]] = {
    "paper": {"num_train": 10_000, "num_test": 5_000, "svm_c": 0.01, "solver": "exact"},
    "dlib": {"num_train": 10_000, "num_test": 5_000, "svm_c": 0.01, "solver": "exact"},
}
GRADIENT_TOL = 1e-10  # each gradient entry vs the summed magnitudes of its terms (rounding is ~1e-16 of those)
MAX_NEWTON = 100
MAX_LINE_SEARCH = 30
CURVATURE = 0.1  # accept a step once |slope along the step| ≤ CURVATURE × |slope at its start| (strong Wolfe)

# One fit per factor: the sorted classes and (coef, intercept), each (D, P) with P = 1 for two classes
# (sklearn's single binary problem), P = n_classes for more and P = 0 for one class.
Fit = tuple[np.ndarray, np.ndarray, np.ndarray]
# gradient (P, 2), the summed magnitudes of its terms (P, 2), and the Hessian's entries H00, H01, H11 (P,)
Derivatives = tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]]


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
    _check_solver(s["solver"])
    pool = CodePool.get(pool, data, represent, seed, batch_size, exhaustive)
    encoded_before = pool.images_encoded
    y_train, x_train = pool.random_sample(s["num_train"], "train")
    y_test, x_test = pool.random_sample(s["num_test"], "test")
    scores = score_matrix(x_train, y_train, x_test, y_test, s["svm_c"], s["solver"])  # (D, K)
    top = np.sort(np.vstack([scores, np.zeros((1, scores.shape[1]))]), axis=0)[::-1]  # zero row: 1-dim code
    per_factor = top[0] - top[1]
    return make_result(
        NAME, float(per_factor.mean()), protocol, {**s, **pool.describe()}, seed,
        per_factor=per_factor, score_matrix=scores, factor_names=list(data.factor_names),
        images_encoded=pool.images_encoded - encoded_before,
    )


def score_matrix(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, c: float,
    solver: str = "exact",
) -> np.ndarray:
    """Test accuracy (D, K) of a linear SVM, fitted by ``solver``, on each single code dimension for each factor."""
    _check_solver(solver)
    x_train, x_test = x_train.astype(np.float64), x_test.astype(np.float64)
    if solver == "liblinear":
        return _liblinear_scores(x_train, y_train, x_test, y_test, c)
    predictions = predict_linear_svc(fit_linear_svc(x_train, y_train, c), x_test)  # (n_test, D, K)
    return np.mean(predictions == y_test[:, None, :], axis=0)


def _check_solver(solver: str) -> None:
    if solver not in SOLVERS:
        raise ValueError(f"sap: unknown solver '{solver}'; choose one of: {', '.join(SOLVERS)}")


def _liblinear_scores(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, c: float
) -> np.ndarray:
    scores = np.ones((x_train.shape[1], y_train.shape[1]))  # a one-class factor is always predicted right
    with warnings.catch_warnings():
        # a strongly regularised SVM on raw, unscaled codes may stop at max_iter; dlib accepts that too
        warnings.simplefilter("ignore", ConvergenceWarning)
        for k in range(y_train.shape[1]):
            if np.unique(y_train[:, k]).size < 2:
                scores[:, k] = np.mean(y_test[:, k] == y_train[0, k])
                continue
            for d in range(x_train.shape[1]):
                svm = LinearSVC(C=c, class_weight="balanced").fit(x_train[:, d : d + 1], y_train[:, k])
                scores[d, k] = np.mean(svm.predict(x_test[:, d : d + 1]) == y_test[:, k])
    return scores


def fit_linear_svc(x: np.ndarray, y: np.ndarray, c: float) -> list[Fit]:
    """LinearSVC(C=c, class_weight="balanced") on each single column of x (n, D) for each column of y (n, K).

    Returns per factor (classes, coef, intercept) with coef and intercept (D, P) laid out like sklearn's
    ``coef_[:, 0]`` and ``intercept_`` of the fit on column d, P as described at ``Fit``.
    """
    x = np.asarray(x, dtype=np.float64)
    classes, labels = zip(*(np.unique(col, return_inverse=True) for col in np.asarray(y).T), strict=True)
    problems = _OneFeatureProblems(x, np.stack(labels, axis=1), [cl.size for cl in classes], c)
    coef, intercept = problems.solve()  # (D, Q) each, Q = problems over all factors
    bounds = np.cumsum([0, *problems.per_factor])
    spans = zip(classes, bounds[:-1], bounds[1:], strict=True)
    return [(cl, coef[:, lo:hi], intercept[:, lo:hi]) for cl, lo, hi in spans]


def predict_linear_svc(fits: list[Fit], x: np.ndarray) -> np.ndarray:
    """Predicted labels (n, D, K) of each single-column fit on x (n, D), with sklearn's decision rule."""
    out = np.empty((x.shape[0], x.shape[1], len(fits)), dtype=np.result_type(*(f[0] for f in fits)))
    for k, (classes, coef, intercept) in enumerate(fits):
        for d in range(x.shape[1]):
            if classes.size == 1:
                out[:, d, k] = classes[0]
            elif classes.size == 2:
                out[:, d, k] = np.where(x[:, d] * coef[d, 0] + intercept[d, 0] > 0, classes[1], classes[0])
            else:
                # argmax_c (w_c x + b_c) in one feature is piecewise constant in x: look x up between the
                # breakpoints of the lines' upper envelope instead of evaluating all of them at every x
                winners, breaks = _upper_envelope(coef[d], intercept[d])
                out[:, d, k] = classes[winners[np.searchsorted(breaks, x[:, d])]]
    return out


def _upper_envelope(slope: np.ndarray, offset: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lines (indices) on top of max_c slope_c·x + offset_c from left to right, and the x where each hands over.

    Lines with equal slope: the larger offset wins, then the smaller index (argmax's first maximum).
    At a breakpoint itself the two lines tie; there the left one is returned.
    """
    winners: list[int] = []
    breaks: list[float] = []
    for c in np.lexsort((np.arange(slope.size), -offset, slope)):  # slope ascending
        if winners and slope[winners[-1]] == slope[c]:
            continue
        while winners:
            takeover = (offset[winners[-1]] - offset[c]) / (slope[c] - slope[winners[-1]])
            if not breaks or takeover > breaks[-1]:
                breaks.append(takeover)
                break
            winners.pop()  # c overtakes it before it ever overtook its predecessor: never on top
            breaks.pop()
        winners.append(int(c))
    return np.array(winners), np.array(breaks)


def _ovr_problems(counts: np.ndarray, c: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positive class, positives' C and negatives' C of each problem liblinear trains for one factor."""
    weight = counts.sum() / (counts.size * counts)  # "balanced"
    if counts.size == 1:
        return np.zeros(0, np.int64), np.zeros(0), np.zeros(0)
    if counts.size == 2:  # one problem, classes[1] positive, each side weighted by its own class
        return np.array([1]), c * weight[1:], c * weight[:1]
    # liblinear weights only the positives; negatives of every class get the plain C (linear.cpp, train)
    return np.arange(counts.size), c * weight, np.full(counts.size, c)


class _OneFeatureProblems:
    """Every one-vs-rest problem of every (dimension, factor) pair, each evaluated in O(log n).

    Codes are standardised per dimension, v = (x − μ)/σ, and each problem is solved for θ = (a, β) with
    a v + β = w x + b (a = wσ, β = b + wμ): the prefix sums of v and v² then do not cancel. The
    regulariser 0.5 (w² + b²) becomes 0.5 θᵀRθ. Problems are ordered dimension-major, Q per dimension.
    """

    def __init__(self, x: np.ndarray, labels: np.ndarray, num_classes: list[int], c: float) -> None:
        n, num_dims = x.shape
        constant = np.ptp(x, axis=0) == 0  # its mean may be an ulp off x, so its std ~1e-16, not 0
        self.mu = np.where(constant, x[0], x.mean(axis=0))
        self.sigma = np.where(constant, 1.0, x.std(axis=0))
        v = (x - self.mu) / self.sigma  # (n, D)
        order = np.argsort(v.T, axis=1)  # (D, n)
        self.sorted_v = np.take_along_axis(v.T, order, axis=1)  # (D, n)
        self.all_sums = _prefix_sums(self.sorted_v)  # (2, D·(n+1)): Σv, Σv² of the q smallest codes
        counts = [np.bincount(labels[:, k], minlength=m) for k, m in enumerate(num_classes)]
        offsets = np.cumsum([0, *num_classes])  # global class id = offsets[k] + label
        self.keys, self.class_sums = _class_prefix_sums(self.sorted_v, order, labels + offsets[:-1], counts)

        per = [_ovr_problems(cnt, c) for cnt in counts]
        self.per_factor = [p[0].size for p in per]
        factor = np.repeat(np.arange(len(per)), self.per_factor)  # (Q,)
        self.dim = np.repeat(np.arange(num_dims), factor.size)  # (P,) = (D·Q,)
        row = self.dim * len(per) + np.tile(factor, num_dims)
        positive = np.tile(np.concatenate([p[0] for p in per]) + offsets[factor], num_dims)
        self.key_base = (self.dim * offsets[-1] + positive) * (n + 1)
        self.row_start, self.row_sums, self.all_start = row * n, row * (n + 1), self.dim * (n + 1)
        self.cp = np.tile(np.concatenate([p[1] for p in per]), num_dims)
        self.cn = np.tile(np.concatenate([p[2] for p in per]), num_dims)
        mu, sigma = self.mu[self.dim], self.sigma[self.dim]
        # R00, R01, R11 of the regulariser, from w = a/σ and b = β − aμ/σ
        self.reg = ((1 + mu**2) / sigma**2, -mu / sigma, np.ones_like(mu))
        self.n, self.num_dims = n, num_dims

    def solve(self) -> tuple[np.ndarray, np.ndarray]:
        """Generalised Newton on all problems at once; (coef, intercept), each (D, Q), in units of x."""
        theta = np.zeros((self.dim.size, 2))  # (P, 2): a, β
        grad, scale, (h00, h01, h11) = self.derivatives(theta)
        for _ in range(MAX_NEWTON):
            todo = np.any(np.abs(grad) > GRADIENT_TOL * scale, axis=1)
            if not todo.any():
                coef = theta[:, 0] / self.sigma[self.dim]
                intercept = theta[:, 1] - coef * self.mu[self.dim]
                return coef.reshape(self.num_dims, -1), intercept.reshape(self.num_dims, -1)
            det = h00 * h11 - h01**2  # > 0: R alone is positive definite
            step = -np.stack([h11 * grad[:, 0] - h01 * grad[:, 1], h00 * grad[:, 1] - h01 * grad[:, 0]], axis=1)
            step = np.where(todo[:, None], step / det[:, None], 0.0)
            theta, (grad, scale, (h00, h01, h11)) = self._line_search(theta, step, grad)
        worst = np.max(np.abs(grad) / np.maximum(scale, np.finfo(float).tiny))
        raise RuntimeError(
            f"sap: exact SVM solver stopped after {MAX_NEWTON} Newton steps at relative gradient {worst:.1e} "
            f"(tolerance {GRADIENT_TOL:.0e}); try solver='liblinear'"
        )

    def derivatives(self, theta: np.ndarray) -> Derivatives:
        """Gradient, the summed magnitudes of its terms and the (generalised) Hessian at theta (P, 2).

        The objective is 0.5 θᵀRθ + Σ_active C_i (y_i − a v_i − β)² (y_i² = 1), so the active samples'
        Σ C_i v_i^p (p = 0, 1, 2) and Σ C_i y_i v_i^p (p = 0, 1) give everything.
        """
        a, beta = theta[:, 0], theta[:, 1]
        pos_lo, pos_hi, neg_lo, neg_hi = self._active_ranges(a, beta)
        # (3, P) each: count, Σv, Σv² of the active positives, and of the positive class in the negatives' range
        pos, in_neg = self._class_sums_in(np.stack([pos_lo, neg_lo]), np.stack([pos_hi, neg_hi]))
        neg = self._all_sums_in(neg_lo, neg_hi) - in_neg
        s = self.cp * pos + self.cn * neg
        t = self.cp * pos[:2] - self.cn * neg[:2]
        r00, r01, r11 = self.reg
        terms = np.stack([
            [r00 * a, r01 * beta, 2 * s[2] * a, 2 * s[1] * beta, -2 * t[1]],
            [r01 * a, r11 * beta, 2 * s[1] * a, 2 * s[0] * beta, -2 * t[0]],
        ])  # (2, 5, P)
        hess = (r00 + 2 * s[2], r01 + 2 * s[1], r11 + 2 * s[0])
        return terms.sum(axis=1).T, np.abs(terms).sum(axis=1).T, hess

    def _active_ranges(self, a: np.ndarray, beta: np.ndarray) -> tuple[np.ndarray, ...]:
        """Sorted positions [lo, hi) of the samples with margin < 1, for positives and for negatives.

        A positive is active where a v + β < 1, a negative where a v + β > −1: for a ≥ 0 the positives
        below one threshold and the negatives above another, for a < 0 the mirror image. Samples exactly
        at margin 1 may fall on either side; they add nothing to objective or gradient.
        """
        with np.errstate(over="ignore"):
            safe = np.where(a == 0, 1.0, a)
            to_pos = np.where(a == 0, np.where(beta < 1, np.inf, -np.inf), (1 - beta) / safe)
            to_neg = np.where(a == 0, np.where(beta > -1, -np.inf, np.inf), (-1 - beta) / safe)
        below_pos, below_neg = self._count_below(np.stack([to_pos, to_neg], axis=1))
        up, n = a >= 0, self.n
        return (np.where(up, 0, below_pos), np.where(up, below_pos, n),
                np.where(up, below_neg, 0), np.where(up, n, below_neg))

    def _count_below(self, threshold: np.ndarray) -> np.ndarray:
        """Number of codes below each threshold (P, T) in its problem's dimension: (T, P)."""
        per_dim = threshold.reshape(self.num_dims, -1)  # dimension-major problems
        counts = [np.searchsorted(self.sorted_v[d], per_dim[d]) for d in range(self.num_dims)]
        return np.concatenate(counts).reshape(-1, threshold.shape[1]).T

    def _all_sums_in(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Count, Σv, Σv² of all samples at sorted positions [lo, hi): (3, P)."""
        sums = self.all_sums[:, self.all_start + hi] - self.all_sums[:, self.all_start + lo]
        return np.vstack([hi - lo, sums])

    def _class_sums_in(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Count, Σv, Σv² (R, 3, P) of the positive class's samples at sorted positions [lo, hi), each (R, P)."""
        local = np.searchsorted(self.keys, self.key_base + np.stack([lo, hi])) - self.row_start  # (2, R, P)
        sums = self.class_sums[:, self.row_sums + local[1]] - self.class_sums[:, self.row_sums + local[0]]
        return np.concatenate([(local[1] - local[0])[:, None], sums.transpose(1, 0, 2)], axis=1)

    def _line_search(self, theta: np.ndarray, step: np.ndarray, grad: np.ndarray) -> tuple[np.ndarray, Derivatives]:
        """The next iterate along each Newton step, and ``derivatives`` there.

        The full step is kept unless it passes the minimum along its line by more than the curvature
        condition allows (in our tests only when forced), so its derivatives, needed for that test anyway,
        usually serve the next iteration and each Newton step costs one evaluation.
        """
        slope0 = np.sum(step * grad, axis=1)  # < 0 wherever the step is not zero
        derivs = self.derivatives(theta + step)
        slope1 = np.sum(step * derivs[0], axis=1)
        overshoot = slope1 > CURVATURE * np.abs(slope0)
        if not overshoot.any():
            return theta + step, derivs
        alpha = np.where(overshoot, self._regula_falsi(theta, step, slope0, slope1, overshoot), 1.0)
        theta = theta + alpha[:, None] * step
        return theta, self.derivatives(theta)

    def _regula_falsi(
        self, theta: np.ndarray, step: np.ndarray, slope0: np.ndarray, slope1: np.ndarray, search: np.ndarray
    ) -> np.ndarray:
        """Step lengths in (0, 1) near the minimum along each step where ``search``.

        Along a line the objective is convex and piecewise quadratic, so its slope is increasing and
        piecewise linear: regula falsi on the slope, with the Illinois tweak against one-sided
        convergence, brackets the root in a few evaluations.
        """
        enough = CURVATURE * np.abs(slope0)
        lo, s_lo, hi, s_hi = np.zeros_like(slope0), slope0, np.ones_like(slope0), slope1
        alpha = hi.copy()
        for _ in range(MAX_LINE_SEARCH):
            if not search.any():
                return alpha
            trial = np.where(search, lo + (hi - lo) * s_lo / np.where(search, s_lo - s_hi, -1.0), 1.0)
            s = np.sum(step * self.derivatives(theta + trial[:, None] * step)[0], axis=1)
            left, right = search & (s <= 0), search & (s > 0)
            lo, s_lo, s_hi = np.where(left, trial, lo), np.where(left, s, s_lo), np.where(left, s_hi / 2, s_hi)
            hi, s_hi, s_lo = np.where(right, trial, hi), np.where(right, s, s_hi), np.where(right, s_lo / 2, s_lo)
            alpha = np.where(search, trial, alpha)
            search = search & (np.abs(s) > enough)
        return np.where(search, lo, alpha)  # unsettled: the last point known to lie before the minimum


def _class_prefix_sums(
    sorted_v: np.ndarray, order: np.ndarray, ids: np.ndarray, counts: list[np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted keys (D·K·n,) and prefix sums (2, D·K·(n+1)) of v and v² of each class in code order.

    Row (d, k) lists dimension d's sorted positions grouped by factor k's class, increasing within a class,
    with key (d, class, position). "The class-c samples among the q smallest codes" is then one
    searchsorted of (d, c, q) over all rows at once. ids: (n, K) global class ids; order: (D, n) argsort.
    """
    num_dims, n = sorted_v.shape
    total = sum(cnt.size for cnt in counts)
    ids = ids.astype(np.min_scalar_type(total)).T[:, order].transpose(1, 0, 2)  # (D, K, n) at sorted positions
    position = np.argsort(ids, axis=2, kind="stable")  # (D, K, n); small ints, so a radix sort
    offsets = np.cumsum([0, *(cnt.size for cnt in counts)])
    grouped = np.stack([  # (K, n): the class ids in grouped order, the same in every dimension
        np.repeat(o + np.arange(cnt.size), cnt) for o, cnt in zip(offsets[:-1], counts, strict=True)
    ])
    keys = (np.arange(num_dims)[:, None, None] * total + grouped) * (n + 1)
    keys += position
    position += (np.arange(num_dims) * n)[:, None, None]  # now into the flat (D·n,) sorted codes
    return keys.ravel(), _prefix_sums(np.take(sorted_v, position).reshape(-1, n))


def _prefix_sums(rows: np.ndarray) -> np.ndarray:
    """Σv and Σv² of the first q entries of each row, q = 0..n: (2, rows · (n+1)), flattened row-major."""
    out = np.empty((2, rows.shape[0], rows.shape[1] + 1))
    out[:, :, 0] = 0.0
    np.cumsum(rows, axis=1, out=out[0, :, 1:])
    np.cumsum(rows**2, axis=1, out=out[1, :, 1:])
    return out.reshape(2, -1)
