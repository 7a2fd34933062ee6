"""Images per second of the built-in renderers on one thread (docs/paper.md §8: data sets rendered on demand).

Training draws 64 images per step (paper §4), so a renderer must outpace the model by a wide margin.
Targets: dSprites >= 50,000 images/s, 3D Shapes >= 5,000 images/s, on one CPU core.

    .venv/bin/python benchmarks/render_speed.py [--seconds 3] [--batch 64]
"""

from __future__ import annotations

import os

# one thread everywhere: must be set before numpy and torch load their thread pools
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[var] = "1"

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from factorvae.data.dsprites import DSprites  # noqa: E402
from factorvae.data.shapes3d import Shapes3D  # noqa: E402

TARGETS = {"dsprites": 50_000, "shapes3d": 5_000}


def images_per_second(data, seconds: float, batch: int) -> float:
    """Random batches (as training samples them) for about ``seconds``; returns images per second."""
    rng = np.random.default_rng(0)
    data.images(data.sample_indices(batch, rng))  # warm-up: first-touch page faults, lazy imports
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        data.images(data.sample_indices(batch, rng))
        done += batch
    return done / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    try:
        import torch

        torch.set_num_threads(1)  # in case anything on the path uses torch
    except ImportError:
        pass
    for name, cls in (("dsprites", DSprites), ("shapes3d", Shapes3D)):
        start = time.perf_counter()
        data = cls()
        setup = time.perf_counter() - start
        rate = images_per_second(data, args.seconds, args.batch)
        verdict = "ok" if rate >= TARGETS[name] else "BELOW TARGET"
        print(f"{name:9s} setup {setup:5.2f} s  {rate:10,.0f} images/s  (target {TARGETS[name]:,}: {verdict})")


if __name__ == "__main__":
    main()
