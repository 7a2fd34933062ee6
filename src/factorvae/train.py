"""The one training loop, for every method (paper §4, Algorithm 2; paper-notes §4).

A run directory holds ``config.json``, ``log.jsonl`` (one line per ``log_every`` steps: window means of
the method's numbers), ``metrics.jsonl`` (periodic evaluation), ``status.json`` and ``checkpoint.pt``.
Every write is atomic. The checkpoint holds the networks, the optimizers, the torch and numpy random
states and the log window's running sums, so stopping at step N and resuming gives bit-identical
weights and the same log as training straight through (on CPU).

One process writes a run directory at a time (rundir_lock.py: a flock held from :func:`prepare_run` until
:meth:`Run.close`). Every number a step returns must be finite, and the weights fit to keep
(health.py), before a checkpoint is written; however training ends, status.json ends in a final state
("finished", "interrupted" or "failed" with a one-line reason), except after a kill -9, which leaves
"running" and the last checkpoint (docs/reliability.md).
"""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch

from .checkpoint import append_jsonl, atomic_write_text, load_checkpoint, remove_stale_temps, save_checkpoint
from .config import Config, ConfigError, make_config
from .data import load as load_data
from .health import all_finite, non_finite_names, unfit_state
from .methods import build_method
from .rundir import (  # RunError, RunInterrupted, is_run_dir, resolve_device: importable from here as before
    RESUME_SETTINGS,
    WRITER_FILES,
    RunError,
    RunInterrupted,
    check_run_settings,
    failure_message,
    is_run_dir,
    kept_log,
    one_line,
    resolve_device,
    write_status,
)
from .rundir_lock import DirLock, LockHeld
from .runtime import configure_cpu
from .tensorboard_log import TensorBoardLog

STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


def noise_seed(seed: int) -> int:
    """The seed of a run's noise generator: derived from the run's seed, distinct from it."""
    return int(np.random.SeedSequence([seed, 1]).generate_state(1)[0])


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
        self.last_good: int | None = None  # step of the checkpoint on disk
        self.window: dict[str, torch.Tensor] = {}
        self.window_count = 0
        self.lock: DirLock | None = None
        self.board: TensorBoardLog | None = None  # opened by fit() when config.tensorboard

    def close(self) -> None:
        """Let another process write the run directory (the lock also goes when the process ends)."""
        if self.board is not None:
            self.board.close()
            self.board = None
        if self.lock is not None:
            self.lock.release()
            self.lock = None

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


def _lock(out_dir: Path) -> DirLock:
    try:
        return DirLock(out_dir)
    except LockHeld as exc:
        raise RunError(str(exc)) from None


def prepare_run(
    config: Config | None, out_dir: str | Path, resume: bool = False, steps: int | None = None,
    settings: dict | None = None,
) -> Run:
    """Create a new run directory, or reopen one to resume (optionally to a new total ``steps`` and other
    :data:`RESUME_SETTINGS`). The returned run holds the directory's lock until :meth:`Run.close`."""
    out_dir = Path(out_dir)
    if resume:
        return _reopen(out_dir, {**(settings or {}), **({} if steps is None else {"steps": steps})})
    assert config is not None, "a new run needs a config"
    if is_run_dir(out_dir) or (out_dir / "checkpoint.pt").exists():
        raise RunError(f"{out_dir} already holds a run; continue it with --resume {out_dir} or choose another --out")
    if out_dir.exists() and not out_dir.is_dir():
        raise RunError(f"--out {out_dir} is a file, not a folder")
    run = Run(config, out_dir)  # builds data and networks first, so bad settings leave no folder behind
    check_run_settings(config, run.data.has_factors)
    out_dir.mkdir(parents=True, exist_ok=True)
    lock = _lock(out_dir)
    try:
        if is_run_dir(out_dir):  # another process started a run here since the check above
            raise RunError(f"{out_dir} already holds a run; continue it with --resume {out_dir}")
        remove_stale_temps(out_dir, WRITER_FILES)
        config.save(out_dir / "config.json")
        write_status(out_dir, 0, "running")
    except BaseException:
        lock.release()
        raise
    run.lock = lock
    return run


def _reopen(out_dir: Path, changes: dict) -> Run:
    """Resume: every check first (settings, checkpoint, logs), and only then any change on disk."""
    if not is_run_dir(out_dir):
        raise RunError(f"--resume {out_dir}: no run there (config.json missing); start one with --out")
    lock = _lock(out_dir)
    try:
        saved = Config.load(out_dir / "config.json")
        fixed = sorted(set(changes) - set(RESUME_SETTINGS))
        if fixed:
            raise ConfigError(f"a resume may change only {', '.join(RESUME_SETTINGS)}; {', '.join(fixed)} "
                              f"{'is' if len(fixed) == 1 else 'are'} fixed by {out_dir}/config.json")
        config = make_config(saved, **changes) if changes else saved
        run = Run(config, out_dir)
        check_run_settings(config, run.data.has_factors)
        if (out_dir / "checkpoint.pt").exists():
            _restore(run, out_dir / "checkpoint.pt")
            run.last_good = run.step
        if config.steps < run.step:
            raise RunError(f"--steps {config.steps} is below step {run.step}, where {out_dir} stands; a run cannot "
                           "go back (start a new one with --out)")
        try:
            logs = {name: kept_log(out_dir / name, run.step) for name in ("log.jsonl", "metrics.jsonl")}
        except ValueError as exc:
            raise RunError(str(exc)) from None
        remove_stale_temps(out_dir, WRITER_FILES)
        for name, text in logs.items():
            if text is not None:
                atomic_write_text(out_dir / name, text)
        if config != saved:
            config.save(out_dir / "config.json")
        write_status(out_dir, run.step, "running")
    except BaseException:
        lock.release()
        raise
    run.lock = lock
    return run


def _restore(run: Run, path: Path) -> None:
    try:
        run.restore(load_checkpoint(path, map_location=run.device))
    except Exception as exc:  # a corrupt checkpoint must not be silently replaced by a fresh start
        raise RunError(f"cannot read {path} ({one_line(exc)}); it is left as it is") from exc
    problem = unfit_state(run.method.modules, run.method.optimizers)
    if problem:
        raise RunError(f"{path} (step {run.step}) holds weights that are not fit to train from ({problem})")


class _StopSignal:
    """Turns SIGINT/SIGTERM/SIGHUP (a closed terminal) into a flag checked between steps, so the checkpoint
    is consistent."""

    def __init__(self) -> None:
        self.requested = False
        self._old = {}

    def __enter__(self) -> _StopSignal:
        for sig in STOP_SIGNALS:
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
    """Train ``run`` up to ``config.steps``, logging, checkpointing and evaluating as configured.

    However it ends, status.json says so: "finished", "interrupted" (RunInterrupted, a checkpoint written),
    or "failed" with the one-line reason that the RunError raised here also carries.
    """
    if run.config.tensorboard and run.board is None:  # one writer for all of a sweep run's segments
        run.board = TensorBoardLog(run.out_dir, run.step)
    try:
        _loop(run, progress)
    except (RunError, RunInterrupted):
        raise  # status.json already written, with the reason
    except KeyboardInterrupt:  # a second Ctrl-C: abort at once, the last checkpoint stands
        _final_status(run, "interrupted", f"aborted; the checkpoint of step {run.last_good} stands")
        raise
    except Exception as exc:
        msg = failure_message(exc, run.out_dir, run.step, run.last_good)
        _final_status(run, "failed", msg)
        raise RunError(msg) from exc
    write_status(run.out_dir, run.step, "finished")
    return run.out_dir


def _loop(run: Run, progress: bool) -> None:
    cfg, out = run.config, run.out_dir
    bar = _Progress(run.step, cfg.steps, progress)
    t0, step0 = time.monotonic(), run.step
    finite_since, first_unchecked = None, run.step + 1  # numbers not yet read back: all finite?, from which step
    with _StopSignal() as stop:
        try:
            while run.step < cfg.steps:
                numbers = run.method.train_step(run.next_batch)
                run.step += 1
                finite = all_finite(numbers)  # every loss of the method, D's and the critic's included
                finite_since = finite if finite_since is None else finite_since & finite
                on_grid, stopping = run.step % cfg.log_every == 0, stop.requested
                evaluates = bool(cfg.eval_every) and run.step % cfg.eval_every == 0
                saves = run.step % cfg.checkpoint_every == 0 or run.step == cfg.steps or stopping
                writes = on_grid or saves or evaluates
                # reading the numbers back syncs a GPU, so there the check waits for the next step that writes
                if writes or not run.defer_checks:
                    if not bool(finite_since):
                        _fail_non_finite(run, numbers, first_unchecked)
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
                    append_jsonl(out / "log.jsonl", record)
                    if run.board is not None:
                        run.board.log_line(record)
                if evaluates:
                    _evaluate_during_training(run)
                if saves:
                    _save_good(run)
                bar.update(run.step, record)
                if stopping:
                    write_status(out, run.step, "interrupted")
                    raise RunInterrupted(out, run.step)
        finally:
            bar.close()


def _kept(run: Run) -> str:
    return f"step {run.last_good}" if run.last_good is not None else "none written yet"


def _fail_non_finite(run: Run, numbers: dict, first_unchecked: int) -> None:
    names = non_finite_names(numbers) if first_unchecked == run.step else []
    shown = f" ({float(numbers[names[0]].reshape(-1)[0]) if numbers[names[0]].numel() == 1 else 'nan/inf'})" \
        if names else ""
    at = f"at step {run.step}" if first_unchecked == run.step else f"at a step in {first_unchecked}..{run.step}"
    msg = (f"non-finite {', '.join(names) or 'loss'}{shown} {at}; training stopped, last good checkpoint "
           f"kept ({_kept(run)}); lower the learning rate or γ/β and resume or restart")
    write_status(run.out_dir, first_unchecked - 1, "failed", msg)
    raise RunError(msg)


def _save_good(run: Run) -> None:
    """Write the checkpoint, unless the weights diverged: then stop, keeping the previous one."""
    problem = unfit_state(run.method.modules, run.method.optimizers)
    if problem:
        msg = (f"weights diverged by step {run.step} ({problem}); training stopped, last good checkpoint "
               f"kept ({_kept(run)}); lower the learning rates (lr, lr_d, lr_g) and restart")
        write_status(run.out_dir, run.step, "failed", msg)
        raise RunError(msg)
    save_checkpoint(run.out_dir / "checkpoint.pt", run.state())
    run.last_good = run.step


def _final_status(run: Run, state: str, msg: str) -> None:
    try:
        write_status(run.out_dir, run.last_good or 0, state, msg)
    except OSError:
        pass  # best effort: the error itself still reaches the user


def _evaluate_during_training(run: Run) -> None:
    from .evaluate import evaluate_method

    cfg = run.config
    try:
        results = evaluate_method(run.method, run.data, run.device, cfg.eval_metrics, cfg.eval_protocol, cfg.seed,
                                  progress=False)
    except Exception:
        _save_good(run)  # the step itself is complete: keep it rather than lose the steps since the last one
        raise
    record = {"step": run.step, **results}
    if "tc" in results:
        record["tc_true"] = results["tc"]["score"]
    append_jsonl(run.out_dir / "metrics.jsonl", record)
    if run.board is not None:
        run.board.evaluation(run.step, results, run.method, run.data, run.device, cfg.seed)


def train(config: Config, out_dir: str | Path, *, progress: bool = True) -> Path:
    """Train a new run of ``config`` into ``out_dir`` (which must not hold a run); returns the run folder."""
    run = prepare_run(config, out_dir)
    try:
        return fit(run, progress=progress)
    finally:
        run.close()


def resume(out_dir: str | Path, steps: int | None = None, *, progress: bool = True, **settings) -> Path:
    """Continue the run in ``out_dir`` from its checkpoint, optionally to a new total number of steps (and
    other :data:`RESUME_SETTINGS`, e.g. ``eval_every=0``)."""
    run = prepare_run(None, out_dir, resume=True, steps=steps, settings=settings)
    try:
        return fit(run, progress=progress)
    finally:
        run.close()
