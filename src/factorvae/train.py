"""The one training loop, for every method (paper §4, Algorithm 2; paper-notes §4).

A run directory holds ``config.json``, ``log.jsonl`` (one line per ``log_every`` steps: window means of
the method's numbers), ``metrics.jsonl`` (periodic evaluation), ``status.json`` and ``checkpoint.pt``.
Every write is atomic. The checkpoint holds the networks, the optimizers, the torch and numpy random
states and the log window's running sums, so stopping at step N and resuming gives bit-identical
weights and the same log as training straight through (on CPU).
"""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch

from .checkpoint import atomic_write_text, load_checkpoint, save_checkpoint
from .config import Config, make_config
from .data import load as load_data
from .methods import build_method
from .runtime import configure_cpu


class RunError(RuntimeError):
    """A run directory cannot be created, resumed or continued."""


class RunInterrupted(Exception):
    """Training stopped on SIGINT/SIGTERM after writing a checkpoint."""

    def __init__(self, out_dir: Path, step: int) -> None:
        super().__init__(f"interrupted at step {step}, checkpoint saved; continue with "
                         f"`factorvae train --resume {out_dir}`")
        self.out_dir, self.step = out_dir, step


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RunError("--device cuda was asked for but no CUDA GPU is available; use --device cpu")
    return torch.device(name)


def noise_seed(seed: int) -> int:
    """The seed of a run's noise generator: derived from the run's seed, distinct from it."""
    return int(np.random.SeedSequence([seed, 1]).generate_state(1)[0])


def is_run_dir(path: Path) -> bool:
    return (path / "config.json").is_file()


class Run:
    """Everything a training run holds in memory: data, method, random state, log window."""

    def __init__(self, config: Config, out_dir: Path) -> None:
        self.config, self.out_dir = config, out_dir
        configure_cpu(config.threads)
        self.device = resolve_device(config.device)
        self.data = load_data(config.dataset, config.data_path)
        # on CUDA the built-in dSprites renders on the GPU, so only indices cross the bus; on CPU numpy's
        # renderer is the faster one (docs/performance.md)
        renderer = getattr(self.data, "renderer", None)
        self.render = renderer(self.device) if renderer is not None and self.device.type == "cuda" else None
        self.defer_checks = self.device.type == "cuda"  # non-finite loss checks only at steps that write
        torch.manual_seed(config.seed)  # network initialisation
        # reparameterisation noise and permute_dims: a stream of its own, since on CPU a generator seeded
        # like the global one would replay the very numbers that drew the initial weights
        self.generator = torch.Generator(device=self.device).manual_seed(noise_seed(config.seed))
        self.rng = np.random.default_rng(config.seed)  # the data sampler
        self.method = build_method(config, self.data.observation_shape[0], self.generator, self.device)
        self.step = 0
        self.window: dict[str, torch.Tensor] = {}
        self.window_count = 0

    def next_batch(self) -> torch.Tensor:
        """A training minibatch (B, C, H, W) float32 on the device. Indices always come from the numpy
        sampler, so the data stream and exact resume are the same on every device."""
        n = self.config.batch_size
        if self.render is not None:
            return self.render(self._to_device(torch.from_numpy(self.data.sample_indices(n, self.rng))))
        return self._to_device(torch.from_numpy(self.data.sample_observations(n, self.rng)))

    def _to_device(self, t: torch.Tensor) -> torch.Tensor:
        if self.device.type == "cuda":  # from pinned memory the copy is asynchronous: no sync per step
            t = t.pin_memory()
        return t.to(self.device, non_blocking=True)

    def state(self) -> dict:
        return {
            "step": self.step,
            "config": json.dumps(self.config.to_dict()),
            "modules": {k: m.state_dict() for k, m in self.method.modules.items()},
            "optimizers": {k: o.state_dict() for k, o in self.method.optimizers.items()},
            "torch_rng": self.generator.get_state(),
            "torch_global_rng": torch.get_rng_state(),
            "numpy_rng": json.dumps(self.rng.bit_generator.state),
            "window": dict(self.window),
            "window_count": self.window_count,
        }

    def restore(self, state: dict) -> None:
        for k, m in self.method.modules.items():
            m.load_state_dict(state["modules"][k])
        for k, o in self.method.optimizers.items():
            o.load_state_dict(state["optimizers"][k])
        self.generator.set_state(state["torch_rng"])
        torch.set_rng_state(state["torch_global_rng"])
        self.rng.bit_generator.state = json.loads(state["numpy_rng"])
        self.window = {k: v.to(self.device) for k, v in state["window"].items()}
        self.window_count = state["window_count"]
        self.step = state["step"]

    def accumulate(self, numbers: dict[str, torch.Tensor]) -> None:
        for k, v in numbers.items():
            self.window[k] = self.window[k] + v if k in self.window else v.clone()
        self.window_count += 1

    def flush_window(self, reset: bool = True) -> dict:
        record = {}
        for k, v in self.window.items():
            mean = (v / self.window_count).cpu()
            record[k] = mean.tolist() if mean.ndim else float(mean)
        if reset:
            self.window, self.window_count = {}, 0
        return record


def _write_status(out_dir: Path, step: int, state: str, error: str | None = None) -> None:
    atomic_write_text(out_dir / "status.json", json.dumps({"step": step, "state": state, "error": error}) + "\n")


def _truncate_jsonl(path: Path, last_step: int) -> None:
    """Drop lines logged after the checkpoint we resume from (and partial last lines), so the log matches
    a straight run."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        record = json.loads(line) if line.strip() else None
        if record and record["step"] <= last_step and not record.get("partial"):
            keep.append(line)
    atomic_write_text(path, "".join(line + "\n" for line in keep))


def _append_jsonl(path: Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()


def prepare_run(config: Config | None, out_dir: str | Path, resume: bool = False, steps: int | None = None) -> Run:
    """Create a new run directory, or reopen one to resume (optionally to a new total ``steps``)."""
    out_dir = Path(out_dir)
    if resume:
        if not is_run_dir(out_dir):
            raise RunError(f"--resume {out_dir}: no run there (config.json missing); start one with --out")
        config = Config.load(out_dir / "config.json")
        if steps is not None and steps != config.steps:
            config = make_config(config, steps=steps)
            config.save(out_dir / "config.json")
        run = Run(config, out_dir)
        if (out_dir / "checkpoint.pt").exists():
            try:
                run.restore(load_checkpoint(out_dir / "checkpoint.pt", map_location=run.device))
            except Exception as exc:  # a corrupt checkpoint must not be silently replaced by a fresh start
                raise RunError(f"cannot read {out_dir / 'checkpoint.pt'}: {exc}") from exc
        _truncate_jsonl(out_dir / "log.jsonl", run.step)
        _truncate_jsonl(out_dir / "metrics.jsonl", run.step)
        return run
    assert config is not None, "a new run needs a config"
    if is_run_dir(out_dir) or (out_dir / "checkpoint.pt").exists():
        raise RunError(f"{out_dir} already holds a run; continue it with --resume {out_dir} or choose another --out")
    if out_dir.exists() and not out_dir.is_dir():
        raise RunError(f"--out {out_dir} is a file, not a folder")
    run = Run(config, out_dir)  # builds data and networks first, so bad settings leave no folder behind
    out_dir.mkdir(parents=True, exist_ok=True)
    config.save(out_dir / "config.json")
    _write_status(out_dir, 0, "running")
    return run


class _StopSignal:
    """Turns SIGINT/SIGTERM into a flag checked between steps, so the checkpoint is consistent."""

    def __init__(self) -> None:
        self.requested = False
        self._old = {}

    def __enter__(self) -> _StopSignal:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. a sweep worker): the caller handles stops
                pass
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:  # a second Ctrl-C aborts at once
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


class _Progress:
    """A tqdm bar with ETA on a terminal; otherwise a plain line at most every ``every_s`` seconds."""

    def __init__(self, start: int, total: int, enabled: bool, every_s: float = 30.0) -> None:
        self.total, self.enabled, self.every_s = total, enabled, every_s
        self.bar = None
        self.last_print = time.monotonic()
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=start, unit="step", dynamic_ncols=True)

    def update(self, step: int, record: dict | None) -> None:
        if self.bar is not None:
            self.bar.update(1)
            if record:
                self.bar.set_postfix({k: f"{v:.3g}" for k, v in record.items() if k in ("recon", "kl", "tc")})
        elif self.enabled and record and (time.monotonic() - self.last_print >= self.every_s or step == self.total):
            self.last_print = time.monotonic()
            shown = " ".join(f"{k}={v:.4g}" for k, v in record.items() if isinstance(v, float) and k != "time")
            print(f"step {step}/{self.total} {shown}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def fit(run: Run, progress: bool = True) -> Path:
    """Train ``run`` up to ``config.steps``, logging, checkpointing and evaluating as configured."""
    cfg, out = run.config, run.out_dir
    log_path = out / "log.jsonl"
    bar = _Progress(run.step, cfg.steps, progress)
    t0, step0 = time.monotonic(), run.step
    last_good = run.step if (out / "checkpoint.pt").exists() else None
    finite_since, first_unchecked = None, run.step + 1  # losses not yet read back: all finite?, from which step
    with _StopSignal() as stop:
        try:
            while run.step < cfg.steps:
                numbers = run.method.train_step(run.next_batch)
                run.step += 1
                finite = torch.isfinite(numbers["loss"])
                finite_since = finite if finite_since is None else finite_since & finite
                on_grid, stopping = run.step % cfg.log_every == 0, stop.requested
                writes = (on_grid or run.step == cfg.steps or run.step % cfg.checkpoint_every == 0 or stopping
                          or (cfg.eval_every and run.step % cfg.eval_every == 0))
                # reading the loss back syncs a GPU, so there the check waits for the next step that writes
                if writes or not run.defer_checks:
                    if not bool(finite_since):
                        where = f"step {last_good}" if last_good is not None else "none written yet"
                        at = (f"({float(numbers['loss'])}) at step {run.step}" if first_unchecked == run.step
                              else f"at a step in {first_unchecked}..{run.step}")
                        msg = (f"non-finite loss {at}; training stopped, last good checkpoint "
                               f"kept ({where}); lower the learning rate or γ/β and resume or restart")
                        _write_status(out, first_unchecked - 1, "failed", msg)
                        raise RunError(msg)
                    finite_since, first_unchecked = None, run.step + 1
                run.accumulate(numbers)
                record = None
                if on_grid or run.step == cfg.steps:
                    # a last line off the log_every grid is marked partial and its window kept, so that
                    # resuming past it logs exactly what a straight run would (the partial line is dropped)
                    elapsed = time.monotonic() - t0
                    record = {"step": run.step, **run.flush_window(reset=on_grid), "time": round(elapsed, 3),
                              "steps_per_s": round((run.step - step0) / max(elapsed, 1e-9), 3)}
                    if not on_grid:
                        record["partial"] = True
                    _append_jsonl(log_path, record)
                if cfg.eval_every and run.step % cfg.eval_every == 0:
                    _evaluate_during_training(run)
                if run.step % cfg.checkpoint_every == 0 or run.step == cfg.steps:
                    save_checkpoint(out / "checkpoint.pt", run.state())
                    last_good = run.step
                bar.update(run.step, record)
                if stopping:
                    save_checkpoint(out / "checkpoint.pt", run.state())
                    _write_status(out, run.step, "interrupted")
                    raise RunInterrupted(out, run.step)
        finally:
            bar.close()
    _write_status(out, run.step, "finished")
    return out


def _evaluate_during_training(run: Run) -> None:
    from .evaluate import evaluate_method

    cfg = run.config
    results = evaluate_method(run.method, run.data, run.device, cfg.eval_metrics, cfg.eval_protocol, cfg.seed,
                              progress=False)
    record = {"step": run.step, **results}
    if "tc" in results:
        record["tc_true"] = results["tc"]["score"]
    _append_jsonl(run.out_dir / "metrics.jsonl", record)


def train(config: Config, out_dir: str | Path, *, progress: bool = True) -> Path:
    """Train a new run of ``config`` into ``out_dir`` (which must not hold a run); returns the run folder."""
    return fit(prepare_run(config, out_dir), progress=progress)


def resume(out_dir: str | Path, steps: int | None = None, *, progress: bool = True) -> Path:
    """Continue the run in ``out_dir`` from its checkpoint, optionally to a new total number of steps."""
    return fit(prepare_run(None, out_dir, resume=True, steps=steps), progress=progress)
