"""One-shot GPU readiness run: speed of one run and of batched runs, eager and
CUDA-graphed, projected to the paper's budget, and CUDA-against-CPU checks (paper §4, Algorithm 2).

The paper's dSprites settings: batch 64, latent 10, appendix-A networks, FactorVAE γ = 40, the built-in
dSprites rendered on the device from indices drawn by each run's own numpy sampler. Sections, each with a
time limit of its own so that one slow section cannot eat the others, printed as they go:

    a. device, torch, CUDA, cuDNN and TF32 settings (left at torch's defaults: a run does not change them)
    e. checks: CUDA against CPU (forward; one full step with the noise made equal), batched "grouped"
       member against its single run, graphed steps against eager ones (run first: they are short)
    b. steps/s of one run through the normal path (prepare_run, then the method's train_step with the
       loop's per-step bookkeeping), eager and graph-captured (training/cuda_graph.py), in three numerics:
       strict fp32 (TF32 off), TF32 (matmuls and convolutions), and precision=bf16 (docs/performance.md)
    c. member-steps/s of K batched members (BatchedVAE "grouped"; "loop" for K <= 6), eager and graphed,
       with build time and peak GPU memory; a K that runs out of memory or time is skipped with the reason
    d. projections against the issue's goals: one 3e5-step run under 5 min, the 120-run grid under 1 h

    bash benchmarks/gpu_oneshot.sh                                   # on a GPU machine, under 10 min
    .venv/bin/python benchmarks/gpu_oneshot.py --device cpu --quick  # check the script here (~1 min)

On CPU capture is refused ("not CUDA") and the checks compare CPU with itself: that run checks the
script's logic only. Written and dry-run on CPU only; its GPU figures are unmeasured until a GPU runs it.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import signal
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import factorvae.methods.factorvae as factorvae_method
from factorvae.config import make_config
from factorvae.data import load
from factorvae.methods import build_method
from factorvae.methods.batched import BatchedVAE
from factorvae.training.cuda_graph import capture_step
from factorvae.training.health import all_finite
from factorvae.training.prepare import prepare_run
from factorvae.training.state import noise_seed

GAMMA = 40.0
PAPER_STEPS, GRID_RUNS = 300_000, 120  # paper §4: 3e5 iterations; the paper's 120-run grid (docs/paper.md §4)
GOAL_RUN_MIN, GOAL_GRID_H = 5.0, 1.0
SHARES = {"checks": 0.2, "single": 0.25, "batched": 0.45}  # of --budget; the rest is start-up and slack
# single-run numerics: (TF32 for matmuls and cuDNN, the run's precision setting)
NUMERICS = {"fp32": (False, "fp32"), "tf32": (True, "fp32"), "bf16": (False, "bf16")}
# fp32 on different kernels sums in other orders: ~1e-6 relative per conv/matmul, so 1e-4 leaves 100x room
# for one forward; TF32 keeps 10 mantissa bits (~5e-4 per product), so 1e-2 under torch's default flags
FORWARD_TOL, TF32_TOL, STEP_TOL, D_STEP_TOL = 1e-4, 1e-2, 1e-4, 1e-3
# share of weights whose first Adam update (≈ ±lr each) differs by over lr/2: a wrong gradient flips about
# half; rounding flips those with a gradient near 0, and a leaky-ReLU kink (see e3) a few more (measured on
# CPU, grouped vs single: about 1.5e-3 of one D tensor)
FLIP_TOL = 1e-2
GROUPED_TOL = 1e-4  # tests/test_batched.py's GROUPED_TOLERANCE, in its setting (measured on CPU: up to 5.6e-5)
GRAPH_TOL = 1e-5  # graphed vs eager: the same kernels with cuDNN deterministic, expected equal


def say(*parts) -> None:
    print(*parts, flush=True)


class Budget:
    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def rate(step, device: torch.device, warmup: int, max_steps: int, seconds: float) -> float:
    """Calls of ``step`` per second over up to ``max_steps`` calls or ``seconds``, after ``warmup`` calls."""
    for _ in range(warmup):
        step()
    sync(device)
    start, done = time.perf_counter(), 0
    while done < max_steps:
        n = min(25, max_steps - done)
        for _ in range(n):
            step()
        sync(device)
        done += n
        if time.perf_counter() - start >= seconds:
            break
    return done / (time.perf_counter() - start)


@contextlib.contextmanager
def tf32(on: bool):
    """TF32 on or off for matmuls and cuDNN while inside (torch's defaults: matmul off, cuDNN on)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = on
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def strict_fp32():
    """TF32 off for matmuls and cuDNN while inside."""
    return tf32(False)


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    """max|a − b| / max|b|: the difference on the tensor's own scale (elementwise ratios blow up near 0)."""
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12)) if b.numel() else 0.0


def first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0]


def verdict(value: float, tol: float) -> str:
    return f"{value:.2e} (tol {tol:.0e}: {'PASS' if value <= tol else 'FAIL'})"


# ---- a. the device ---------------------------------------------------------------------------------------

def describe(device: torch.device) -> dict:
    info = {"torch": torch.__version__, "device": str(device),
            "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32, "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "register_generator_state": hasattr(torch.cuda.CUDAGraph, "register_generator_state")}
    backends = {"matmul": torch.backends.cuda.matmul, "cudnn_conv": getattr(torch.backends.cudnn, "conv", None)}
    for name, backend in backends.items():
        if hasattr(backend, "fp32_precision"):  # torch >= 2.9 also names the precision
            info[f"{name}_fp32_precision"] = backend.fp32_precision
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(name=props.name, memory_gib=round(props.total_memory / 2**30, 1), cuda=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version())
    else:
        info.update(name="cpu", threads=torch.get_num_threads())
    say("a. " + ", ".join(f"{k}={v}" for k, v in info.items()))
    if device.type == "cuda":
        say("   TF32 left at torch's defaults, as a training run leaves them: convolutions run in TF32 when "
            f"cudnn_allow_tf32=True (here {info['cudnn_allow_tf32']}); the checks below also run in strict fp32")
    return info


# ---- e. checks -------------------------------------------------------------------------------------------

def build(config, device: torch.device, generator_seed: int):
    torch.manual_seed(config.seed)
    return build_method(config, 1, torch.Generator(device).manual_seed(generator_seed), device)


@contextlib.contextmanager
def shared_noise(seed: int):
    """The FactorVAE step's reparameterisation noise and permute_dims keys drawn from one CPU generator
    (the package's own functions on CPU copies, moved back): a CPU and a CUDA step see equal numbers."""
    reparameterize, permute_dims = factorvae_method.reparameterize, factorvae_method.permute_dims
    cpu = torch.Generator().manual_seed(seed)
    factorvae_method.reparameterize = lambda mu, logvar, _: reparameterize(mu.cpu(), logvar.cpu(), cpu).to(mu.device)
    factorvae_method.permute_dims = lambda z, _: permute_dims(z.cpu(), cpu).to(z.device)
    try:
        yield
    finally:
        factorvae_method.reparameterize, factorvae_method.permute_dims = reparameterize, permute_dims


def check_forward(cpu_m, dev_m, x: torch.Tensor, device: torch.device, tol: float) -> dict:
    with torch.no_grad():
        mu, logvar = cpu_m.encoder(x)
        mu_d, logvar_d = dev_m.encoder(x.to(device))
        pairs = {"mu": (mu_d, mu), "logvar": (logvar_d, logvar),
                 "decoder logits": (dev_m.decoder(mu.to(device)), cpu_m.decoder(mu)),
                 "D logits": (dev_m.discriminator(mu.to(device)), cpu_m.discriminator(mu))}
    diffs = {k: relative(a, b) for k, (a, b) in pairs.items()}
    say("     " + ", ".join(f"{k} {v:.2e}" for k, v in diffs.items()) + f" -> max {verdict(max(diffs.values()), tol)}")
    return diffs


def check_step(cpu_m, dev_m, data, batch: int, lr: float) -> dict:
    """One full train_step on both, same weights, batches and noise: the step's numbers, and the share of
    weights whose update differs by more than lr/2 (Adam's first update is ≈ ±lr per weight)."""
    device = next(dev_m.encoder.parameters()).device
    rng = np.random.default_rng(7)
    batches = [torch.from_numpy(data.sample_observations(batch, rng)) for _ in range(2)]
    numbers = []
    for method, dev in ((cpu_m, torch.device("cpu")), (dev_m, device)):
        feed = iter([b.to(dev) for b in batches])
        with shared_noise(11):
            numbers.append(method.train_step(lambda feed=feed: next(feed)))
    diffs = {k: relative(numbers[1][k], numbers[0][k]) for k in numbers[0] if k != "d_acc"}
    flips = total = 0
    for name, module in cpu_m.modules.items():
        for p, q in zip(module.parameters(), dev_m.modules[name].parameters(), strict=True):
            flips += int(((p.detach() - q.detach().cpu()).abs() > lr / 2).sum())
            total += p.numel()
    d_acc = abs(float(numbers[1]["d_acc"]) - float(numbers[0]["d_acc"]))
    worst = max(v for k, v in diffs.items() if k != "d_loss")
    say("     step numbers " + ", ".join(f"{k} {v:.2e}" for k, v in diffs.items()) + f", d_acc |Δ| {d_acc:.4f}")
    say(f"     VAE numbers {verdict(worst, STEP_TOL)}; d_loss (after the update) {verdict(diffs['d_loss'], D_STEP_TOL)}"
        f"; weights updated differently {flips}/{total} -> {verdict(flips / total, FLIP_TOL)}")
    return {"numbers": diffs, "d_acc_abs": d_acc, "flipped_share": flips / total}


def check_cuda_vs_cpu(device: torch.device, data, batch: int) -> dict:
    config = make_config(model="factorvae", gamma=GAMMA, batch_size=batch, seed=0)
    cpu_m, dev_m = build(config, torch.device("cpu"), 1), build(config, device, 1)
    init = max(relative(q, p) for name, m in cpu_m.modules.items()
               for p, q in zip(m.parameters(), dev_m.modules[name].parameters(), strict=True))
    for name, module in dev_m.modules.items():  # the same weights whatever the device's initialisation did
        module.load_state_dict(cpu_m.modules[name].state_dict())
    say(f"   e1. CUDA vs CPU, same weights (initialised on {device}: max rel. difference {init:.1e}), same batch")
    x = torch.from_numpy(data.sample_observations(batch, np.random.default_rng(3)))
    out = {"init": init}
    with strict_fp32():
        say("     forward, strict fp32:")
        out["forward_fp32"] = check_forward(cpu_m, dev_m, x, device, FORWARD_TOL)
    tf32_convs = device.type == "cuda" and torch.backends.cudnn.allow_tf32
    say(f"     forward, torch's default flags ({'TF32 convolutions' if tf32_convs else 'fp32'}):")
    out["forward_default"] = check_forward(cpu_m, dev_m, x, device, TF32_TOL if tf32_convs else FORWARD_TOL)
    say("   e2. one full train_step, noise made equal, strict fp32:")
    with strict_fp32():
        out["step"] = check_step(cpu_m, dev_m, data, batch, min(config.lr, config.discriminator_lr))
    return out


def member_stream(data, seed: int, batch: int, device: torch.device):
    """next_batch for one run: indices from its numpy sampler, rendered on the device."""
    render, rng = data.renderer(device), np.random.default_rng(seed)
    return lambda: render(torch.from_numpy(data.sample_indices(batch, rng)).to(device))


def max_state_difference(model: BatchedVAE, k: int, method, norm=relative) -> float:
    """Largest per-tensor difference between member k and a single method: weights and Adam moments."""
    state = model.member_state(k)
    pairs = [(state["modules"][n][p], t) for n, m in method.modules.items() for p, t in m.state_dict().items()]
    pairs += [(a[key], b[key]) for n, o in method.optimizers.items() for a, b in
              zip(state["optimizers"][n]["state"].values(), o.state_dict()["state"].values(), strict=True)
              for key in ("exp_avg", "exp_avg_sq")]
    return max(norm(a, b) for a, b in pairs)


def train_pair(configs, device: torch.device, data, steps: int) -> tuple[float, list[float]]:
    """A "grouped" BatchedVAE of ``configs`` and each member's single run, ``steps`` steps side by side
    (strict fp32): the largest relative difference of the step numbers, and of each member's state."""
    with strict_fp32():
        gens = [torch.Generator(device).manual_seed(noise_seed(c.seed)) for c in configs]
        model = BatchedVAE(configs, 1, gens, device, mode="grouped")
        singles = [build(c, device, noise_seed(c.seed)) for c in configs]
        streams = [member_stream(data, c.seed, c.batch_size, device) for c in configs]
        owns = [member_stream(data, c.seed, c.batch_size, device) for c in configs]
        numbers = 0.0
        for _ in range(steps):
            ours = model.train_step(lambda: torch.stack([s() for s in streams]))
            for k, (single, own) in enumerate(zip(singles, owns, strict=True)):
                theirs = single.train_step(own)
                numbers = max(numbers, *(relative(ours[key][k], theirs[key]) for key in theirs if key != "d_acc"))
        return numbers, [max_state_difference(model, k, single) for k, single in enumerate(singles)]


def check_grouped_member(device: torch.device, data, batch: int) -> dict:
    """BatchedVAE "grouped" members against their single runs. (1) tests/test_batched.py's own setting and
    yardstick (batch 8, a 64-wide D, γ 10/40/40, 10 steps; max per-tensor relative difference of weights
    and Adam moments; measured on CPU 1e-5 to 5.6e-5, bound 1e-4). (2) The paper's networks, 3 steps,
    reported, not judged: with D's 6,000 leaky-ReLU units a pre-activation within rounding of 0 often takes
    the other slope in one of the two runs, and Adam turns that into whole-element differences (on CPU,
    batch 64, member 0 after one step: 6e-3 in a weight tensor, 3e-2 in an Adam moment, while the step
    numbers of all members stayed within 3.8e-4 over 3 steps)."""
    small = [make_config(model="factorvae", seed=s, gamma=g, batch_size=8, d_hidden=64) for s, g in
             ((0, 10.0), (1, 40.0), (2, 40.0))]
    numbers, states = train_pair(small, device, data, 10)
    say(f"   e3. batched grouped vs single runs on {device}, strict fp32, tests/test_batched.py's setting, 10 "
        f"steps: weights and Adam moments {verdict(max(states), GROUPED_TOL)}; step numbers {numbers:.1e}")
    paper = [make_config(model="factorvae", gamma=GAMMA, batch_size=batch, seed=s) for s in range(3)]
    numbers_paper, states_paper = train_pair(paper, device, data, 3)
    say(f"     paper networks, batch {batch}, 3 steps (reported only): step numbers {numbers_paper:.1e}, state per "
        "member " + ", ".join(f"{d:.1e}" for d in states_paper))
    return {"test_setting": {"numbers": numbers, "states": states},
            "paper": {"numbers": numbers_paper, "states": states_paper}}


def check_graph_vs_eager(device: torch.device, data, batch: int) -> dict | None:
    """Graphed steps against a twin's eager steps from the same state: 3 steps, cuDNN deterministic, so
    both should run the same kernels on the same numbers and agree exactly."""
    config = make_config(model="factorvae", gamma=GAMMA, batch_size=batch, seed=0)
    method, twin = build(config, device, 5), build(config, device, 5)
    graphed, why = capture_step(method, member_stream(data, 0, batch, device)())
    say(f"   e4. graphed vs eager from the same state: {why}")
    if graphed is None:
        return None
    saved, torch.backends.cudnn.deterministic = torch.backends.cudnn.deterministic, True
    try:
        a, b = member_stream(data, 1, batch, device), member_stream(data, 1, batch, device)
        numbers = 0.0
        for _ in range(3):
            ours = {k: v.clone() for k, v in graphed(a).items()}
            theirs = twin.train_step(b)
            numbers = max(numbers, *(relative(ours[k], theirs[k]) for k in theirs))
        pairs = [(p, q) for n, m in method.modules.items() for p, q in zip(m.parameters(), twin.modules[n].parameters(),
                                                                            strict=True)]
        weights = max(relative(p, q) for p, q in pairs)
        same_rng = torch.equal(method.generator.get_state(), twin.generator.get_state())
    finally:
        torch.backends.cudnn.deterministic = saved
    say(f"     3 steps: numbers {verdict(numbers, GRAPH_TOL)}, weights {verdict(weights, GRAPH_TOL)}, "
        f"noise generator at the same offset: {'PASS' if same_rng else 'FAIL'}")
    return {"numbers": numbers, "weights": weights, "same_generator_state": same_rng}


def checks(device: torch.device, data, batch: int, budget: Budget, out: dict) -> None:
    note = "; on CPU: CPU against itself, logic only" if device.type == "cpu" else ""
    say(f"e. checks (budget {budget.left():.0f} s){note}")
    for name, fn in (("cuda_vs_cpu", check_cuda_vs_cpu), ("grouped_member", check_grouped_member),
                     ("graph_vs_eager", check_graph_vs_eager)):
        if budget.left() <= 0:
            say(f"   {name}: skipped, the section's time budget is spent")
            continue
        try:
            out[name] = fn(device, data, batch)
        except Exception as exc:  # one failing check must not stop the others
            say(f"   {name}: ERROR {type(exc).__name__}: {first_line(exc)}")
        free(device)


# ---- b. one run ------------------------------------------------------------------------------------------

def single_run(device: torch.device, args, budget: Budget, out: dict) -> None:
    say(f"b. one run through prepare_run + train_step + the loop's per-step bookkeeping (budget {budget.left():.0f} s)")
    for name, (allow_tf32, precision) in NUMERICS.items():
        if budget.left() <= 0:
            say(f"   {name}: skipped, the section's time budget is spent")
            continue
        try:
            with tf32(allow_tf32):
                single_numerics(name, precision, device, args, budget, out)
        except Exception as exc:  # bf16 refused by a kernel, say: the other numerics still run
            say(f"   {name}: failed: {type(exc).__name__}: {first_line(exc)[:160]}")
        free(device)
    if "fp32_eager" in out:
        say("   vs strict fp32: " + ", ".join(f"{k} {v / out['fp32_eager']:.2f}x" for k, v in out.items()))


def single_numerics(name: str, precision: str, device: torch.device, args, budget: Budget, out: dict) -> None:
    """Eager and graphed steps/s of one run in one of NUMERICS, into out[f"{name}_eager"] / [..._graph]."""
    big = 10**9
    config = make_config(model="factorvae", gamma=GAMMA, batch_size=args.batch, device=str(device), steps=big,
                         log_every=big, checkpoint_every=big, threads=args.threads, precision=precision)
    with tempfile.TemporaryDirectory() as tmp:
        run = prepare_run(config, Path(tmp) / "run")
        try:
            def loop_step(step) -> None:  # what loop.py does every step besides writing
                numbers = step(run.next_batch)
                run.accumulate(numbers)
                all_finite(numbers)

            seconds = min(args.measure_s, budget.left() / 6)
            eager = out[f"{name}_eager"] = rate(lambda: loop_step(run.method.train_step), device, args.warmup,
                                                args.max_steps, seconds)
            say(f"   {name:>5} eager: {eager:8.1f} steps/s ({1000 / eager:.2f} ms/step)")
            graphed, why = capture_step(run.method, run.next_batch())
            say(f"   {name:>5} graph: {why}")
            if graphed is not None:
                seconds = min(args.measure_s, budget.left() / 4)
                graph = out[f"{name}_graph"] = rate(lambda: loop_step(graphed), device, args.warmup, args.max_steps,
                                                    seconds)
                say(f"   {name:>5} graph: {graph:8.1f} steps/s ({1000 / graph:.2f} ms/step), "
                    f"{graph / eager:.2f}x eager")
        finally:
            run.close()


# ---- c. batched members ----------------------------------------------------------------------------------

def batched_row(k: int, mode: str, device: torch.device, data, args, seconds: float) -> dict:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    configs = [make_config(model="factorvae", gamma=GAMMA, batch_size=args.batch, seed=s) for s in range(k)]
    start = time.perf_counter()
    model = BatchedVAE(configs, 1, [torch.Generator(device).manual_seed(noise_seed(s)) for s in range(k)],
                       device, mode=mode)
    sync(device)
    row = {"k": k, "mode": mode, "build_s": time.perf_counter() - start}
    render, rngs = data.renderer(device), [np.random.default_rng(s) for s in range(k)]

    def batches() -> torch.Tensor:  # (K, B, 1, 64, 64): member k's indices from its own sampler
        idx = torch.from_numpy(np.concatenate([data.sample_indices(args.batch, rng) for rng in rngs]))
        idx = idx.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else idx
        return render(idx).view(k, args.batch, 1, 64, 64)

    row["eager"] = k * rate(lambda: model.train_step(batches), device, args.warmup, args.max_steps, seconds)
    graphed, row["capture"] = capture_step(model, batches())
    if graphed is not None:
        row["graph"] = k * rate(lambda: graphed(batches), device, args.warmup, args.max_steps, seconds)
    if device.type == "cuda":
        row["peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return row


def batched(device: torch.device, data, args, budget: Budget, rows: list[dict]) -> None:
    say(f"c. batched members, member-steps/s (budget {budget.left():.0f} s)")
    say(f"   {'K':>4} {'mode':>8} {'build s':>8} {'eager':>10} {'graph':>10} {'peak GiB':>9}  capture")
    for k in args.ks:
        for mode in ("grouped", "loop") if k <= 6 else ("grouped",):
            seconds = min(args.measure_s, budget.left() / 4)
            if seconds < args.measure_s / 4:
                say(f"   {k:>4} {mode:>8} skipped: the section's time budget is spent")
                continue
            try:
                row = batched_row(k, mode, device, data, args, seconds)
            except torch.cuda.OutOfMemoryError as exc:
                say(f"   {k:>4} {mode:>8} skipped: out of GPU memory ({first_line(exc)[:100]})")
                free(device)
                continue
            except Exception as exc:  # e.g. a kernel refusing K groups: the other K still run
                say(f"   {k:>4} {mode:>8} failed: {type(exc).__name__}: {first_line(exc)[:160]}")
                free(device)
                continue
            graph = f"{row['graph']:10.1f}" if "graph" in row else f"{'-':>10}"
            peak = f"{row['peak_gib']:9.2f}" if "peak_gib" in row else f"{'-':>9}"
            say(f"   {k:>4} {mode:>8} {row['build_s']:8.1f} {row['eager']:10.1f} {graph} {peak}  {row['capture']}")
            rows.append(row)
            free(device)


# ---- d. projections --------------------------------------------------------------------------------------

def projections(single: dict, rows: list[dict]) -> dict:
    say("d. projections (training steps only: no evaluation, logging or checkpoints)")
    out = {}
    if single:
        best = max(single.values())
        out["run_min"] = PAPER_STEPS / best / 60
        say(f"   one 3e5-step run at {best:.1f} steps/s: {out['run_min']:.1f} min "
            f"(goal < {GOAL_RUN_MIN:.0f} min: {'ok' if out['run_min'] < GOAL_RUN_MIN else 'over'})")
    cells = [(row.get(kind, 0.0), row["k"], row["mode"], kind) for row in rows for kind in ("eager", "graph")]
    if cells:
        best, k, mode, kind = max(cells)
        out["grid_h"] = GRID_RUNS * PAPER_STEPS / best / 3600
        say(f"   the {GRID_RUNS}-run grid at {best:.1f} member-steps/s (K={k} {mode} {kind}): {out['grid_h']:.2f} h "
            f"(goal < {GOAL_GRID_H:.0f} h: {'ok' if out['grid_h'] < GOAL_GRID_H else 'over'})")
    return out


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu to check the script")
    parser.add_argument("--quick", action="store_true", help="small sizes: batch 16, K = 1, 2, a few steps")
    parser.add_argument("--budget", type=float, default=400, help="seconds for all sections (default 400)")
    parser.add_argument("--ks", default="1,6,30,120", help="batched member counts (default 1,6,30,120)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps before each measurement")
    parser.add_argument("--max-steps", type=int, default=3000, help="timed steps per measurement at most")
    parser.add_argument("--measure-s", type=float, default=8.0, help="seconds per measurement at most")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default torch's; --quick: 1)")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()
    if args.quick:
        args.batch, args.ks, args.warmup, args.max_steps, args.measure_s = 16, "1,2", 1, 3, 2.0
        args.threads = args.threads or 1
    args.ks = [int(k) for k in str(args.ks).split(",") if k]
    return args


def main() -> int:
    args = parse()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        say("gpu_oneshot: no CUDA device here; run it on a GPU machine (or --device cpu --quick to check it)")
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    # a time limit's SIGINT or SIGTERM ends the run with what it has (even where SIGINT came in ignored)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    results: dict = {"args": dict(vars(args)), "checks": {}, "single_run": {}, "batched": []}
    start = time.monotonic()
    try:
        results["device"] = describe(device)
        data = load("dsprites")
        # each section's clock starts when it does: a fast section leaves its time as slack, not to the next
        for section, share, inputs in ((checks, SHARES["checks"], (device, data, args.batch)),
                                       (single_run, SHARES["single"], (device, args)),
                                       (batched, SHARES["batched"], (device, data, args))):
            try:
                section(*inputs, Budget(share * args.budget), results[section.__name__])
            except Exception as exc:  # one broken section must not cost the others
                say(f"   {section.__name__} failed: {type(exc).__name__}: {first_line(exc)}")
                free(device)
    except KeyboardInterrupt:
        say("interrupted: the figures above stand; projections from what was measured")
    finally:
        results["projections"] = projections(results["single_run"], results["batched"])
        say(f"done in {time.monotonic() - start:.0f} s")
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
