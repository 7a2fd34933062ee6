"""Throughput of K FactorVAE runs trained as one batched model against the same K runs one after another
(paper §3, Algorithm 2, paper settings: dSprites 64×64, batch 64, latent 10, D 6×1000).

    .venv/bin/python benchmarks/batched_speed.py [--threads 1] [--steps 20] [--warmup 3] [--ks 1,2,4,8]
    .venv/bin/python benchmarks/batched_speed.py --device cuda      # on a GPU machine

For each K it times ``--steps`` iterations, after ``--warmup`` ones, of (1) K single FactorVAE methods
(``build_method(...).train_step``), each in turn, and (2) one :class:`BatchedVAE` of the K members in each
``--modes`` ("loop": member by member through the single networks; "grouped": grouped convolutions and
batched matmuls), and prints member-steps per second (K × iterations / seconds) and the ratio to (1).
Members differ in seed and γ as a sweep's runs do. The minibatches come from a pool rendered once on the
device, so the data renderer and host-to-device copies are left out of every figure alike. On a shared
machine the numbers are noisy: compare only within one run.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

import numpy as np
import torch

from factorvae.config import make_config
from factorvae.data import load
from factorvae.methods import build_method
from factorvae.methods.batched import MODES, BatchedVAE

BATCH = 64
GAMMAS = (10.0, 20.0, 30.0, 40.0, 50.0, 100.0)  # the paper's γ grid (docs/paper.md §4)
POOL = 8  # distinct minibatches per member, cycled


def batch_pool(k: int, device: torch.device) -> torch.Tensor:
    """(POOL, K, B, 1, 64, 64) float32 dSprites minibatches on ``device``, member k from its own sampler."""
    data = load("dsprites")
    rngs = [np.random.default_rng(seed) for seed in range(k)]
    pool = [np.stack([data.sample_observations(BATCH, rng) for rng in rngs]) for _ in range(POOL)]
    return torch.from_numpy(np.stack(pool)).to(device)


def cycle(pool: torch.Tensor) -> Callable[[], torch.Tensor]:
    count = [0]

    def next_batch() -> torch.Tensor:
        count[0] += 1
        return pool[count[0] % len(pool)]

    return next_batch


def timed(step: Callable[[], object], warmup: int, steps: int, device: torch.device) -> float:
    """Seconds for ``steps`` calls of ``step`` after ``warmup`` calls (the GPU synchronised at both ends)."""
    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def sequential(k: int, pool: torch.Tensor, device: torch.device, warmup: int, steps: int) -> float:
    """Member-steps/s of K single methods trained one after another."""
    seconds = 0.0
    for member in range(k):
        config = make_config(seed=member, gamma=GAMMAS[member % len(GAMMAS)], batch_size=BATCH)
        torch.manual_seed(config.seed)
        method = build_method(config, 1, torch.Generator(device).manual_seed(member + 1), device)
        next_batch = cycle(pool[:, member])
        seconds += timed(lambda: method.train_step(next_batch), warmup, steps, device)  # noqa: B023
    return k * steps / seconds


def batched(k: int, mode: str, pool: torch.Tensor, device: torch.device, warmup: int, steps: int) -> float:
    """Member-steps/s of one batched model of K members."""
    configs = [make_config(seed=m, gamma=GAMMAS[m % len(GAMMAS)], batch_size=BATCH) for m in range(k)]
    generators = [torch.Generator(device).manual_seed(m + 1) for m in range(k)]
    model = BatchedVAE(configs, 1, generators, device, mode=mode)
    next_batch = cycle(pool)
    return k * steps / timed(lambda: model.train_step(next_batch), warmup, steps, device)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--steps", type=int, default=20, help="measured iterations per K (default 20)")
    parser.add_argument("--warmup", type=int, default=3, help="iterations before timing (default 3)")
    parser.add_argument("--ks", default="1,2,4,8", help="member counts, comma-separated (default 1,2,4,8)")
    parser.add_argument("--modes", default=",".join(MODES), help=f"batched modes (default {','.join(MODES)})")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("batched_speed: no CUDA device here; use --device cpu", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    ks = [int(k) for k in args.ks.split(",")]
    modes = [m for m in args.modes.split(",") if m]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {args.threads} thread(s)"
    print(f"{name}, torch {torch.__version__}; FactorVAE paper networks, batch {BATCH}, "
          f"{args.steps} steps after {args.warmup}; member-steps/s (× the sequential runs)")
    print(f"{'K':>3} {'sequential':>11}" + "".join(f" {m:>16}" for m in modes))
    for k in ks:
        pool = batch_pool(k, device)
        base = sequential(k, pool, device, args.warmup, args.steps)
        cells = []
        for mode in modes:
            rate = batched(k, mode, pool, device, args.warmup, args.steps)
            cells.append(f"{rate:8.2f} ({rate / base:4.2f}×)")
        print(f"{k:>3} {base:11.2f}" + "".join(f" {c:>16}" for c in cells), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
