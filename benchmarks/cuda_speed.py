"""FactorVAE training steps/s on a GPU through the normal `factorvae train` path.

The paper's dSprites run (paper §4, Algorithm 2, batch 64, 3·10^5 steps) with the built-in data rendered on
the device. Prints the device, steps/s and ms/step of ``--steps`` measured steps after ``--warmup`` steps,
the projected wall time of a full 3·10^5-step run (target: under 10 minutes on an H100-class GPU), and the
same with ``torch.backends.cudnn.benchmark`` on. One short invocation, so that a lent GPU's minutes suffice:

    .venv/bin/python benchmarks/cuda_speed.py                        # on a GPU machine, ~1-3 min
    .venv/bin/python benchmarks/cuda_speed.py --device cpu --steps 20 --warmup 5   # check the script here
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from factorvae.config import make_config
from factorvae.training.loop import fit, prepare_run

PAPER_STEPS = 300_000
TARGET_MINUTES = 10.0


def measure(device: str, warmup: int, steps: int, out_dir: Path) -> float:
    """Seconds per step over ``steps`` steps of one run, after ``warmup`` steps (no log line or checkpoint
    inside the measured stretch; the finiteness check reads back only at the end, as a real run does)."""
    big = 10**9
    run = prepare_run(make_config(steps=warmup, log_every=big, checkpoint_every=big, device=device), out_dir)
    fit(run, progress=False)
    run.config = make_config(run.config, steps=run.step + steps)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    fit(run, progress=False)  # ends with one log line and one checkpoint save, both after a sync
    total = time.perf_counter() - start
    logged = json.loads((out_dir / "log.jsonl").read_text().splitlines()[-1])
    # the log line's rate is timed before the checkpoint save; fall back to wall time if it is missing
    return 1.0 / logged["steps_per_s"] if logged.get("steps_per_s") else total / steps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu to check the script")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--steps", type=int, default=3000)
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("cuda_speed: no CUDA device here; run this on a GPU machine (or --device cpu to check the script)",
              file=sys.stderr)
        return 2
    name = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "cpu"
    print(f"device {name}, torch {torch.__version__}, FactorVAE paper networks, batch 64, built-in dSprites")
    for cudnn_benchmark in (False, True):
        torch.backends.cudnn.benchmark = cudnn_benchmark
        with tempfile.TemporaryDirectory() as tmp:
            seconds = measure(args.device, args.warmup, args.steps, Path(tmp) / "run")
        minutes = PAPER_STEPS * seconds / 60
        verdict = "ok" if minutes < TARGET_MINUTES else "over"
        print(f"cudnn.benchmark={cudnn_benchmark!s:5s}: {1 / seconds:8.1f} steps/s, {1000 * seconds:6.2f} ms/step; "
              f"3e5 steps ≈ {minutes:6.1f} min (target < {TARGET_MINUTES:.0f} min on H100-class: {verdict})",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
