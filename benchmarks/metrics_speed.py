"""Speed of the disentanglement metrics (paper §5) on dSprites with the paper's encoder (appendix A).

A metric's time should be its encoder passes and little else. This script measures the encoder's
inference throughput (images/s, torch.inference_mode: the module in NCHW and in channels_last, and
InferenceEncoder, the oneDNN-layout copy that evaluation uses),
then times each metric run alone with a representation function that counts the images it encodes, and
compares the wall time with the bound ``images encoded / throughput``. It also times all metrics run
together on one shared pool, and the exhaustive mode that encodes all 737,280 dSprites images once.

Targets (from the issue): throughput >= 4,500 images/s; each metric's wall time <= 1.2 × bound.
The encoder is randomly initialised (speed does not depend on training). Run:

    .venv/bin/python benchmarks/metrics_speed.py                  # protocol "paper", shared, exhaustive
    .venv/bin/python benchmarks/metrics_speed.py --protocols paper dlib --no-exhaustive
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from factorvae.data import load
from factorvae.kernels import InferenceEncoder
from factorvae.metrics import METRICS, CodePool, evaluate_metrics
from factorvae.nets import Encoder


class CountingEncoder:
    """The representation function: observations (n, 1, 64, 64) float32 -> encoder means (n, D).

    ``mode`` is how the encoder runs: "eager" (the module, NCHW), "channels_last" (the module, NHWC) or
    "inference" (:class:`factorvae.kernels.InferenceEncoder`, what ``factorvae evaluate`` uses).
    A randomly initialised encoder's means barely vary across dSprites (std < 0.05 in every dimension),
    so the FactorVAE metric would prune every dimension as collapsed and stop after its variance sample.
    ``scale`` (1 / std measured on a calibration batch) makes the codes vary as a trained encoder's do;
    it is one multiply per code and does not change the cost of encoding.
    """

    def __init__(self, encoder: Encoder, device: torch.device, mode: str) -> None:
        self.device, self.mode = device, mode
        encoder.to(memory_format=torch.channels_last if mode == "channels_last" else torch.contiguous_format)
        self.forward = InferenceEncoder(encoder) if mode == "inference" else encoder
        self.images = 0
        self.seconds = 0.0  # time inside the encoder: a load-independent denominator for the overhead
        self.scale = np.float32(1.0)

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        start = time.perf_counter()
        x = torch.from_numpy(obs).to(self.device, non_blocking=True)
        if self.mode == "channels_last":
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            mu, _ = self.forward(x)
        codes = mu.float().cpu().numpy() * self.scale
        self.images += len(obs)
        self.seconds += time.perf_counter() - start
        return codes


MODES = ("eager", "channels_last", "inference")


def measure_throughput(
    encoder: Encoder, obs: np.ndarray, device: torch.device, seconds: float
) -> dict[tuple[int, str], float]:
    """Encoder-only images/s for each (batch size, mode); observations are pre-rendered."""
    table = {}
    for mode in MODES:
        represent = CountingEncoder(encoder, device, mode)
        for batch in sorted({128, 512, len(obs)}):
            represent(obs[:batch])  # warm-up: first-call allocations and kernel selection
            if device.type == "cuda":
                torch.cuda.synchronize()
            start, count = time.perf_counter(), 0
            while time.perf_counter() - start < seconds:
                represent(obs[:batch])
                count += batch
            table[(batch, mode)] = count / (time.perf_counter() - start)
    return table


def timed(
    represent: CountingEncoder, fn: Callable[..., Any], *args: Any, **kwargs: Any
) -> tuple[float, int, float, Any]:
    """(wall s, images encoded, seconds inside the encoder, return value) of ``fn(*args, **kwargs)``."""
    images, seconds, start = represent.images, represent.seconds, time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - start, represent.images - images, represent.seconds - seconds, out


HEADER = (f"{'metric':10s} {'proto':6s} {'mode':10s} {'images':>9s} {'wall s':>8s} {'bound s':>8s} "
          f"{'ratio':>6s} {'in enc s':>8s} {'wall/enc':>8s}  score")


def row(name: str, protocol: str, mode: str, timing: tuple, rate: float, score: float | str = "-") -> str:
    """One table line. ratio = wall / (images / throughput); wall/enc = wall / time inside the encoder,
    the overhead measured against the encoder's actual speed during this run (robust to machine load)."""
    wall, images, enc = timing[:3]
    bound = images / rate
    ratio = f"{wall / bound:6.2f}" if images else "     -"
    overhead = f"{wall / enc:8.2f}" if enc else "       -"
    score = f"{score:.3f}" if isinstance(score, float) else score
    return (f"{name:10s} {protocol:6s} {mode:10s} {images:9,d} {wall:8.1f} {bound:8.1f} {ratio} {enc:8.1f} "
            f"{overhead}  {score}")


def run_metrics(data, represent: CountingEncoder, rate: float, args: argparse.Namespace) -> None:
    """Each metric alone on a fresh pool, then all of them on one shared pool, per protocol."""
    print(HEADER)
    for protocol in args.protocols:
        for name in args.metrics:
            timing = timed(represent, METRICS[name], data, represent, protocol=protocol,
                           batch_size=args.batch_size)
            print(row(name, protocol, "alone", timing, rate, timing[3]["score"]), flush=True)
        if not args.no_shared:
            timing = timed(represent, evaluate_metrics, data, represent, args.metrics, protocol,
                           batch_size=args.batch_size, progress=False)
            print(row("all", protocol, "shared", timing, rate), flush=True)
    if args.no_exhaustive:
        return
    pool = CodePool(data, represent, batch_size=args.batch_size, exhaustive=True)
    timing = timed(represent, pool.table)
    print(row("encode all", "-", "exhaustive", timing, rate), flush=True)
    for protocol in args.protocols:
        timing = timed(represent, evaluate_metrics, data, represent, args.metrics, protocol,
                       progress=False, pool=pool)
        print(row("all", protocol, "exh.+table", timing, rate), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--protocols", nargs="+", default=["paper"], choices=["paper", "dlib"])
    parser.add_argument("--metrics", nargs="+", default=list(METRICS), choices=list(METRICS))
    parser.add_argument("--batch-size", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--seconds", type=float, default=4.0, help="per throughput configuration")
    parser.add_argument("--no-shared", action="store_true", help="skip the run of all metrics on one pool")
    parser.add_argument("--no-exhaustive", action="store_true", help="skip encoding all 737,280 images")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    encoder = Encoder(channels=1, latent_dim=10, width=128).to(device).eval()
    data = load("dsprites")
    obs = data.observations(data.sample_factors(args.batch_size, np.random.default_rng(0)))
    print(f"device {device}, torch threads {torch.get_num_threads()}, batch size {args.batch_size}")

    rates = measure_throughput(encoder, obs, device, args.seconds)
    for (batch, mode), rate in rates.items():
        print(f"encoder throughput: batch {batch:5d} {mode:13s} {rate:8.0f} images/s")
    rate, mode = max((r, m) for (b, m), r in rates.items() if b == args.batch_size)
    print(f"best at batch {args.batch_size}: {mode}, {rate:.0f} images/s (target >= 4,500)")
    represent = CountingEncoder(encoder, device, mode)
    represent.scale = (1.0 / (represent(obs).std(axis=0) + 1e-8)).astype(np.float32)
    represent.images, represent.seconds = 0, 0.0
    factors = data.sample_factors(20_000, np.random.default_rng(1))
    wall, images, enc, _ = timed(represent, CodePool(data, represent, batch_size=args.batch_size).encode, factors)
    print(f"render + encode 20,000 random images: {images / wall:.0f} images/s ({images / enc:.0f} in the encoder)")
    print(f"bound = images / {rate:.0f} images/s (batch {args.batch_size}, {mode}); "
          "target: wall <= 1.2 x bound\n")
    run_metrics(data, represent, rate, args)


if __name__ == "__main__":
    main()
