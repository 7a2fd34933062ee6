"""Many runs on one machine: a sweep's total throughput against runs one after another.

A grid of short FactorVAE runs (paper networks, batch 64, built-in dSprites, γ ∈ {10, 20, 30, 40}) is
trained (a) one run after another in this process with torch's default thread count, as a user would with
a shell loop over `factorvae train`, and (b) by `factorvae.experiments.sweep` with the local backend and the given
workers × threads. Both include building the data and networks of every run; (b) also pays one Python
start per run. Printed: total runs·steps/s of each and the ratio (target ≥ 1.5×). The machine is shared,
so the load average is printed beside the numbers; compare only within one invocation.

    .venv/bin/python benchmarks/sweep_throughput.py --runs 4 --steps 150
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
import time
from pathlib import Path

import torch

from factorvae.config import make_config
from factorvae.experiments.backends import available_cores, default_workers
from factorvae.experiments.sweep import sweep
from factorvae.training.loop import train

GAMMAS = (10.0, 20.0, 30.0, 40.0, 50.0, 100.0, 5.0, 1.0)  # the paper's γ grid first, then more if asked


def _settings(steps: int) -> dict:
    # one log line and one checkpoint per run, so file writes do not blur the comparison
    return {"steps": steps, "log_every": steps, "checkpoint_every": steps}


def sequential(runs: int, steps: int, root: Path, threads: int) -> float:
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    for i in range(runs):
        train(make_config(gamma=GAMMAS[i], **_settings(steps)), root / f"seq{threads}-{i}", progress=False)
    return time.perf_counter() - t0


def swept(runs: int, steps: int, root: Path, workers: int, threads: int) -> float:
    t0 = time.perf_counter()
    summary = sweep("factorvae", GAMMAS[:runs], 1, root / "sweep", overrides=_settings(steps), metrics=(),
                    workers=workers, threads=threads, stream=io.StringIO())
    if summary["failed"]:
        errors = {name: summary["runs"][name]["error"] for name in summary["failed"]}
        raise SystemExit(f"sweep runs failed: {errors}")
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=4, help="runs in the grid (default 4)")
    parser.add_argument("--steps", type=int, default=150, help="training steps per run (default 150)")
    parser.add_argument("--workers", type=int, help="sweep workers (default: cores // threads)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per sweep worker (default 1)")
    args = parser.parse_args()
    cores = available_cores()
    workers, threads = default_workers(args.runs, args.threads, cores)
    workers = args.workers or workers
    total = args.runs * args.steps
    print(f"{args.runs} runs x {args.steps} steps, FactorVAE paper networks, batch 64; {cores} cores; "
          f"torch {torch.__version__}, default threads {torch.get_num_threads()}")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    default_threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as tmp:
        t_seq = sequential(args.runs, args.steps, Path(tmp), default_threads)
        print(f"(a) one after another, {default_threads} threads (default): {t_seq:7.1f} s  "
              f"{total / t_seq:6.2f} runs*steps/s", flush=True)
        t_sweep = swept(args.runs, args.steps, Path(tmp), workers, threads)
        print(f"(b) sweep, {workers} workers x {threads} thread(s):        {t_sweep:7.1f} s  "
              f"{total / t_sweep:6.2f} runs*steps/s", flush=True)
        # for context, not the target: how much of the gain is one thread per run rather than parallel runs
        t_one = sequential(args.runs, args.steps, Path(tmp), 1)
        print(f"(c) one after another, 1 thread:             {t_one:7.1f} s  "
              f"{total / t_one:6.2f} runs*steps/s", flush=True)
    print(f"ratio (b)/(a): {t_seq / t_sweep:.2f}x (target >= 1.5x); (b)/(c): {t_one / t_sweep:.2f}x")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
