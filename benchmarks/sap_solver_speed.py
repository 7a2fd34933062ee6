"""SAP's score matrix (Kumar et al. 2018; metrics/sap.py): the exact solver against liblinear's LinearSVC loop.

10 code dimensions (five noisy single-factor ones at raw scale, three mixtures, two noise), dSprites'
factor sizes, 10,000 training and 5,000 test points. Prints best and median seconds of each solver and
their largest difference. Run:

    .venv/bin/python benchmarks/sap_solver_speed.py 7
"""
import sys
import time

import numpy as np

from factorvae.metrics.sap import score_matrix

SIZES = (3, 6, 40, 32, 32)
rng = np.random.default_rng(0)


def sample(n):
    factors = np.stack([rng.integers(0, s, n) for s in SIZES], axis=1)
    # codes: the first five dims each follow one factor (raw scale, with noise), then a mix, then noise
    z = factors / np.array(SIZES) * 4 - 2
    codes = np.concatenate([z + 0.3 * rng.normal(size=z.shape),
                            z @ rng.normal(size=(5, 3)) + rng.normal(size=(n, 3)),
                            0.05 * rng.normal(size=(n, 2))], axis=1)
    return factors, codes.astype(np.float32)


y_train, x_train = sample(10_000)
y_test, x_test = sample(5_000)
reps = int(sys.argv[1]) if len(sys.argv) > 1 else 3
for solver in ("exact", "liblinear"):
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        s = score_matrix(x_train, y_train, x_test, y_test, 0.01, solver)
        times.append(time.perf_counter() - t)
    print(f"{solver:9s} best {min(times):.3f} s  median {np.median(times):.3f} s  (of {reps})")
    if solver == "exact":
        exact = s
print("max |exact - liblinear| per entry:", np.abs(exact - s).max(), " SAP gap diff:",
      np.abs(np.sort(exact, 0)[-1] - np.sort(exact, 0)[-2] - (np.sort(s, 0)[-1] - np.sort(s, 0)[-2])).max())
