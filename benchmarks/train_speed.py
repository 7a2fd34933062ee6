"""FactorVAE training speed on CPU: the library's `factorvae train` path in fp32 and in bf16 against a plain
PyTorch FactorVAE of the same paper networks (fp32), measured in one run, plus GFLOP/s against the fp32 and
bf16 matmul peaks of the same run, renderer speed, peak memory, and the CPU's model and bf16 flags.

    .venv/bin/python benchmarks/train_speed.py [--rounds 6] [--steps 50] [--threads 2] [--ladder]
        [--baseline-src DIR]   # also time the library whose src/ is DIR/src (e.g. `git archive` of a commit)

Every implementation trains in its own worker process (so process-wide settings such as the allocator
tuning of `factorvae.training.runtime` cannot leak from one into another); the parent asks the workers in turn
for ``--steps`` steps, several rounds, so that load from other processes hits all of them alike, and
reports medians. ``--ladder`` adds workers that each add one idea of docs/performance.md to the plain
code, cumulatively, to show what each gave. Numbers on a shared machine are noisy: compare only within
one run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from factorvae.config import make_config
from factorvae.data.dsprites import DSprites
from factorvae.kernels import ImageDeconv
from factorvae.nets import Decoder, Discriminator, Encoder
from factorvae.training.runtime import keep_freed_memory

BATCH = 64
GAMMA = 40.0
# the ladder: the plain code plus one more idea per rung, in this order (docs/performance.md)
IDEAS = ("malloc", "channels_last", "fused_adam", "no_d_grads", "reuse_dz", "image_deconv")
TARGET_RATIO, TARGET_BF16_RATIO, TARGET_RSS_MB, TARGET_RSS_3D_MB = 1.5, 1.8, 1024, 1536
LIBRARY = {"library": "fp32", "library-bf16": "bf16", "baseline": "fp32"}  # worker kind -> precision


# ---- the plain reference: Algorithm 2 written the straightforward way (1Konny/FactorVAE style) ----------


def plain_nets(channels: int = 1, latent: int = 10, width: int = 128) -> tuple[nn.Module, nn.Module, nn.Module]:
    """The paper's appendix-A networks as plain nn.Sequential stacks (default NCHW layout)."""
    encoder = nn.Sequential(
        nn.Conv2d(channels, 32, 4, 2, 1), nn.ReLU(), nn.Conv2d(32, 32, 4, 2, 1), nn.ReLU(),
        nn.Conv2d(32, 64, 4, 2, 1), nn.ReLU(), nn.Conv2d(64, 64, 4, 2, 1), nn.ReLU(),
        nn.Flatten(), nn.Linear(1024, width), nn.ReLU(), nn.Linear(width, 2 * latent),
    )
    decoder = nn.Sequential(
        nn.Linear(latent, width), nn.ReLU(), nn.Linear(width, 1024), nn.ReLU(), nn.Unflatten(1, (64, 4, 4)),
        nn.ConvTranspose2d(64, 64, 4, 2, 1), nn.ReLU(), nn.ConvTranspose2d(64, 32, 4, 2, 1), nn.ReLU(),
        nn.ConvTranspose2d(32, 32, 4, 2, 1), nn.ReLU(), nn.ConvTranspose2d(32, channels, 4, 2, 1),
    )
    layers: list[nn.Module] = [nn.Linear(latent, 1000), nn.LeakyReLU(0.2)]
    for _ in range(5):
        layers += [nn.Linear(1000, 1000), nn.LeakyReLU(0.2)]
    return encoder, decoder, nn.Sequential(*layers, nn.Linear(1000, 2))


class PlainFactorVAE:
    """One Algorithm-2 iteration per ``step``; ``ideas`` switches on ladder rungs (none: the plain code)."""

    def __init__(self, ideas: tuple[str, ...] = (), seed: int = 0) -> None:
        torch.manual_seed(seed)
        self.ideas = set(ideas)
        self.encoder, self.decoder, self.d = plain_nets()
        if "image_deconv" in self.ideas:  # same weights, the library's patch-sum forward
            last = ImageDeconv(32, 1)
            last.load_state_dict(self.decoder[-1].state_dict())
            self.decoder[-1] = last
        if "channels_last" in self.ideas:
            self.encoder.to(memory_format=torch.channels_last)
            self.decoder.to(memory_format=torch.channels_last)
        fused = {"fused": True} if "fused_adam" in self.ideas else {}
        self.vae_params = [*self.encoder.parameters(), *self.decoder.parameters()]
        self.opt_vae = torch.optim.Adam(self.vae_params, lr=1e-4, betas=(0.9, 0.999), **fused)
        self.opt_d = torch.optim.Adam(self.d.parameters(), lr=1e-4, betas=(0.5, 0.9), **fused)
        self.data, self.rng = DSprites(), np.random.default_rng(seed)

    def batch(self) -> torch.Tensor:
        return torch.from_numpy(self.data.sample_observations(BATCH, self.rng))

    def step(self) -> None:
        x = self.batch()
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        recon = F.binary_cross_entropy_with_logits(self.decoder(z), x, reduction="sum") / BATCH
        kl = 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1).sum(1).mean()
        d_z = self.d(z)
        vae_loss = recon + kl + GAMMA * (d_z[:, 0] - d_z[:, 1]).mean()
        self.opt_vae.zero_grad()
        reuse = "reuse_dz" in self.ideas
        if "no_d_grads" in self.ideas or reuse:
            vae_loss.backward(inputs=self.vae_params, retain_graph=reuse)
        else:
            vae_loss.backward()
        self.opt_vae.step()

        with torch.no_grad():
            mu2, logvar2 = self.encoder(self.batch()).chunk(2, dim=1)
            z2 = mu2 + torch.exp(0.5 * logvar2) * torch.randn_like(mu2)
            z_perm = torch.stack([col[torch.randperm(BATCH)] for col in z2.t()], dim=1)
        logits_q = d_z if reuse else self.d(z.detach())
        zeros = torch.zeros(BATCH, dtype=torch.long)
        d_loss = 0.5 * (F.cross_entropy(logits_q, zeros) + F.cross_entropy(self.d(z_perm), 1 - zeros))
        self.opt_d.zero_grad()
        if reuse:
            d_loss.backward(inputs=list(self.d.parameters()))
        else:
            d_loss.backward()
        self.opt_d.step()


# ---- workers: one implementation each, driven over stdin/stdout -----------------------------------------


def library_worker(warmup: int, out_dir: Path, precision: str = "fp32"):
    """The normal path: `prepare_run` + `fit` of factorvae.training.loop on the built-in dSprites, paper settings.

    Each measured stretch is one `fit` call, which ends with a checkpoint; a real run writes one every
    5,000 steps, so the save (66 MB + fsync) is left out here rather than charged to a 50-step stretch."""
    import importlib

    train_module = importlib.import_module("factorvae.training.loop")
    train_module.save_checkpoint = lambda path, state: None
    fit, prepare_run = train_module.fit, train_module.prepare_run
    big = 10**9  # no log line or checkpoint inside a measured stretch
    settings = {} if precision == "fp32" else {"precision": precision}  # a baseline may predate the setting
    run = prepare_run(make_config(steps=warmup, log_every=big, checkpoint_every=big, device="cpu", **settings), out_dir)
    fit(run, progress=False)

    def steps(n: int) -> float:
        run.config = make_config(run.config, steps=run.step + n)
        fit(run, progress=False)  # ends with a partial log line timed before its checkpoint save
        last = json.loads((out_dir / "log.jsonl").read_text().splitlines()[-1])
        return n / last["steps_per_s"]

    return steps


def plain_worker(warmup: int, ideas: tuple[str, ...]):
    if "malloc" in ideas:
        keep_freed_memory()
    model = PlainFactorVAE(ideas)
    for _ in range(warmup):
        model.step()

    def steps(n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            model.step()
        return time.perf_counter() - start

    return steps


def worker_main(kind: str, warmup: int, threads: int) -> None:
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        if kind in LIBRARY:
            steps = library_worker(warmup, Path(tmp) / "run", LIBRARY[kind])
        else:
            steps = plain_worker(warmup, tuple(i for i in kind.split("+")[1:] if i))
        print("ready", flush=True)
        for line in sys.stdin:
            cpu = time.process_time()
            wall = steps(int(line))
            print(wall, time.process_time() - cpu, flush=True)


def worker_env(args: argparse.Namespace, kind: str = "") -> dict[str, str]:
    """The workers' environment: OpenMP's wait policy is read once, when torch loads libgomp; the baseline
    worker imports factorvae from ``--baseline-src``."""
    env = dict(os.environ)
    if kind == "baseline":
        env["PYTHONPATH"] = os.pathsep.join([str(Path(args.baseline_src) / "src"), env.get("PYTHONPATH", "")])
    if args.omp_wait_policy != "default":
        env["OMP_WAIT_POLICY"] = args.omp_wait_policy
    return env


class Worker:
    def __init__(self, kind: str, args: argparse.Namespace) -> None:
        self.kind = kind
        cmd = [sys.executable, __file__, "--worker", kind, "--warmup", str(args.warmup), "--threads", str(args.threads)]
        env = worker_env(args, kind)
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError(f"worker {kind} failed to start")

    def run(self, n: int) -> tuple[float, float]:
        """Seconds of wall time and of CPU time (all threads) for ``n`` steps."""
        self.proc.stdin.write(f"{n}\n")
        self.proc.stdin.flush()
        wall, cpu = self.proc.stdout.readline().split()
        return float(wall), float(cpu)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


# ---- FLOPs, attainable GFLOP/s, renderer, memory ---------------------------------------------------------


def forward_macs(module: nn.Module, x: torch.Tensor) -> int:
    """Multiply-adds of one forward pass of ``module`` on ``x``, counted from its conv and linear layers."""
    total = 0

    def count(layer: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(layer, nn.ConvTranspose2d):  # every input pixel meets the whole kernel once
            total += inputs[0].numel() * layer.out_channels * layer.kernel_size[0] * layer.kernel_size[1]
        elif isinstance(layer, nn.Conv2d):
            total += out.numel() * layer.in_channels * layer.kernel_size[0] * layer.kernel_size[1]

    hooks = [m.register_forward_hook(count) for m in module.modules() if isinstance(m, nn.Conv2d | nn.ConvTranspose2d)]
    with torch.no_grad():
        module(x)
    for h in hooks:
        h.remove()
    # every linear layer of these nets maps each example once (the discriminator calls them by weight)
    return total + len(x) * sum(m.in_features * m.out_features for m in module.modules() if isinstance(m, nn.Linear))


def step_gflop() -> tuple[float, dict[str, float]]:
    """FLOPs of one Algorithm-2 step by the usual rule (training a layer ≈ 3 forwards), as in docs/performance.md:
    VAE step: encoder, decoder and D forward + backward on B; encoder forward on B2; D step: D forward +
    backward on 2B codes. The same count serves both implementations, so GFLOP/s ratios are speed ratios."""
    macs = {
        "encoder": forward_macs(Encoder(), torch.zeros(1, 1, 64, 64)),
        "decoder": forward_macs(Decoder(), torch.zeros(1, 10)),
        "discriminator": forward_macs(Discriminator(), torch.zeros(1, 10)),
    }
    e, d, disc = macs["encoder"], macs["decoder"], macs["discriminator"]
    step_macs = 3 * (e + d + disc) * BATCH + e * BATCH + 3 * disc * 2 * BATCH
    return 2 * step_macs / 1e9, {k: v / 1e6 for k, v in macs.items()}


def matmul_gflops(n: int = 2048, reps: int = 5, dtype: torch.dtype = torch.float32) -> float:
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    a @ b
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def renderer_images_per_s(seconds: float = 2.0) -> float:
    data, rng = DSprites(), np.random.default_rng(0)
    data.sample_observations(BATCH, rng)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        data.sample_observations(BATCH, rng)  # float32 batches, as training draws them
        done += BATCH
    return done / (time.perf_counter() - start)


def cpu_description() -> str:
    """The CPU's model name, family and model numbers, and its bf16 flags (bf16 is emulated without them)."""
    from factorvae.kernels import cpu_bf16_flags

    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        return "CPU: /proc/cpuinfo unreadable"
    flags = cpu_bf16_flags()
    return (f"CPU: {fields.get('model name', '?')} (family {fields.get('cpu family', '?')} model "
            f"{fields.get('model', '?')}); bf16 flags: {', '.join(flags) if flags else 'none (bf16 is emulated)'}")


def train_peak_rss_mb(steps: int, threads: int, dataset: str = "dsprites", precision: str = "fp32") -> float:
    """ru_maxrss of a `factorvae train` subprocess on a built-in data set (includes its checkpoint save)."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "factorvae", "train", "--steps", str(steps), "--out", f"{tmp}/run", "--quiet",
               "--dataset", dataset, "--set", f"threads={threads}", "--set", "device=cpu", "--set",
               f"precision={precision}"]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode:
            raise RuntimeError(f"factorvae train failed: {proc.stderr.read().decode()}")
    return usage.ru_maxrss / 1024  # KiB on Linux


# ---- the report ------------------------------------------------------------------------------------------


def measure(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    kinds = ["library", "library-bf16", "plain"] + (["baseline"] if args.baseline_src else [])
    if args.ladder:
        kinds += ["plain+" + "+".join(IDEAS[: i + 1]) for i in range(len(IDEAS))]
    print(cpu_description())
    print(f"torch {torch.__version__}, {args.threads} threads, {os.cpu_count()} CPUs, OMP_WAIT_POLICY "
          f"{args.omp_wait_policy}; load average {os.getloadavg()[0]:.1f}; batch {BATCH}, {args.rounds} rounds x "
          f"{args.steps} steps after {args.warmup} warm-up steps", flush=True)
    workers = [Worker(kind, args) for kind in kinds]
    rates: dict[str, list[float]] = {k: [] for k in kinds}  # steps/s of wall time
    cpu_ms: dict[str, list[float]] = {k: [] for k in kinds}  # CPU time (all threads) per step
    peaks: dict[str, list[float]] = {"fp32": [], "bf16": []}
    try:
        for r in range(args.rounds):
            order = workers[r % len(workers) :] + workers[: r % len(workers)]  # rotate who goes first
            for w in order:
                wall, cpu = w.run(args.steps)
                rates[w.kind].append(args.steps / wall)
                cpu_ms[w.kind].append(1e3 * cpu / args.steps)
            peaks["fp32"].append(matmul_gflops())
            peaks["bf16"].append(matmul_gflops(dtype=torch.bfloat16))
            print(f"round {r + 1}: " + "  ".join(f"{k} {v[-1]:.2f}" for k, v in rates.items()), flush=True)
    finally:
        for w in workers:
            w.close()
    report(args, rates, cpu_ms, {k: statistics.median(v) for k, v in peaks.items()})


def _label(kind: str) -> str:
    labels = {"library": "factorvae train (library), fp32", "library-bf16": "factorvae train (library), bf16",
              "plain": "plain PyTorch, fp32", "baseline": "library at --baseline-src, fp32"}
    label = labels.get(kind, kind.replace("+", " +"))
    return label if len(label) <= 34 else "  + " + kind.split("+")[-1]  # ladder rungs: the idea added


def _ratio(rates: dict, a: str, b: str) -> tuple[float, str]:
    """Median of the per-round ratios a / b of steps/s, and the rounds' ratios."""
    ratios = [x / y for x, y in zip(rates[a], rates[b], strict=True)]
    return statistics.median(ratios), ", ".join(f"{x:.2f}" for x in ratios)


def report(args: argparse.Namespace, rates: dict, cpu_ms: dict, peak: dict[str, float]) -> None:
    gflop, macs = step_gflop()
    print("\nforward multiply-adds per example: " + ", ".join(f"{k} {v:.2f} M" for k, v in macs.items()))
    print(f"one Algorithm-2 step = {gflop:.2f} GFLOP; matmul peaks ({args.threads}-thread 2048^3, median of rounds): "
          f"fp32 {peak['fp32']:.0f} GFLOP/s, bf16 {peak['bf16']:.0f} GFLOP/s\n")
    print(f"{'implementation':34s} {'steps/s':>7s} {'range':>11s} {'GFLOP/s':>7s} {'of fp32':>7s} {'of bf16':>7s} "
          f"{'CPU ms/step':>11s}")
    for kind, v in rates.items():
        med, rate = statistics.median(v), statistics.median(v) * gflop
        print(f"{_label(kind):34s} {med:7.2f} {min(v):5.2f}–{max(v):<5.2f} {rate:7.1f} {rate / peak['fp32']:7.0%} "
              f"{rate / peak['bf16']:7.0%} {statistics.median(cpu_ms[kind]):11.0f}")
    print()
    for a, b, target in (("library", "plain", TARGET_RATIO), ("library-bf16", "library", TARGET_BF16_RATIO),
                         ("library-bf16", "plain", None), ("library", "baseline", None)):
        if a in rates and b in rates:
            ratio, rounds = _ratio(rates, a, b)
            verdict = "" if target is None else f"; target {target}x: {'ok' if ratio >= target else 'BELOW TARGET'}"
            print(f"speed-up {a} / {b}: {ratio:.2f}x in steps/s, median of per-round ratios ({rounds}){verdict}")
    cpu_ratios = [b / a for a, b in zip(cpu_ms["library"], cpu_ms["plain"], strict=True)]
    print(f"CPU time per step plain / library: {statistics.median(cpu_ratios):.2f}x")
    print(f"dSprites renderer: {renderer_images_per_s():,.0f} images/s (float32 batches of {BATCH})")
    for dataset, precision, target in (("dsprites", "fp32", TARGET_RSS_MB), ("dsprites", "bf16", TARGET_RSS_MB),
                                       ("shapes3d", "fp32", TARGET_RSS_3D_MB)):
        rss = train_peak_rss_mb(args.rss_steps, args.threads, dataset, precision)
        print(f"peak RSS of `factorvae train --dataset {dataset} --set precision={precision}` ({args.rss_steps} steps "
              f"+ checkpoint): {rss:.0f} MB (target <= {target} MB: {'ok' if rss <= target else 'ABOVE TARGET'})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--steps", type=int, default=50, help="steps per worker per round")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (2: torch's default here)")
    parser.add_argument("--ladder", action="store_true", help="also time the plain code plus one idea at a time")
    parser.add_argument("--rss-steps", type=int, default=50)
    parser.add_argument("--baseline-src", help="a checkout of another version: its library is timed too (fp32)")
    parser.add_argument("--omp-wait-policy", choices=("default", "passive", "active"), default="default",
                        help="OpenMP wait policy of all workers; passive keeps a loaded machine measurable")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker_main(args.worker, args.warmup, args.threads)
    else:
        measure(args)


if __name__ == "__main__":
    main()
