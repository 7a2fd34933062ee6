"""The one training loop, for every method (paper §4, Algorithm 2; docs/paper.md §4).

A run directory holds ``config.json``, ``log.jsonl`` (one line per ``log_every`` steps: window means of
the method's numbers), ``metrics.jsonl`` (periodic evaluation), ``status.json`` and ``checkpoint.pt``.
Every write is atomic. The checkpoint holds the networks, the optimizers, the torch and numpy random
states and the log window's running sums, so stopping at step N and resuming gives bit-identical
weights and the same log as training straight through (on CPU).

The run in memory is :class:`~.state.Run`; opening a directory for it (new or resumed) is prepare.py.
One process writes a run directory at a time (run/lock.py: a flock held from :func:`prepare_run` until
:meth:`Run.close`). Every number a step returns must be finite, and the weights fit to keep
(health.py), before a checkpoint is written; however training ends, status.json ends in a final state
("finished", "interrupted" or "failed" with a one-line reason), except after a kill -9, which leaves
"running" and the last checkpoint (docs/reliability.md).
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import torch

from ..config import Config
from ..files import STOP_SIGNALS, stops_deferred
from ..run.checkpoint import save_checkpoint
from ..run.rundir import RunError, RunInterrupted, failure_message, write_status
from .health import all_finite, non_finite_names, unfit_state
from .prepare import prepare_run
from .state import Run
from .tensorboard import TensorBoardLog


class StopSignals:
    """The handler of SIGINT, SIGTERM and SIGHUP (a closed terminal): a request to stop.

    Inside the loop (``polled``) the first one sets :attr:`requested`, checked between steps so that the
    checkpoint written on the way out is consistent; outside it, it raises KeyboardInterrupt at once. A
    repeat aborts at once (a second Ctrl-C of `factorvae train`), unless ``repeats_abort`` is False: a sweep
    worker's driver sends one stop, and the kernel can send a worker's parent-death signal more than once
    (once per thread of a killed driver that the worker is handed to), which must not cut its checkpoint
    short. Checkpoint writes hold every stop back until they are over (files.stops_deferred).
    """

    def __init__(self, repeats_abort: bool = True) -> None:
        self.requested, self.polled, self.repeats_abort = False, False, repeats_abort

    def __call__(self, signum, frame) -> None:
        if self.requested:
            if self.repeats_abort:
                raise KeyboardInterrupt
            return
        self.requested = True
        if not self.polled:
            raise KeyboardInterrupt

    def install(self) -> StopSignals:
        """Make this the handler of every stop signal (main thread only)."""
        for sig in STOP_SIGNALS:
            signal.signal(sig, self)
        return self


class _StopSignal:
    """Within the loop, stop signals set a flag checked between steps: the process's own
    :class:`StopSignals` when it has one (a sweep worker), else one of its own for the duration."""

    def __init__(self) -> None:
        self.handler = StopSignals()
        self._old = {}

    def __enter__(self) -> StopSignals:
        current = signal.getsignal(signal.SIGINT)
        if isinstance(current, StopSignals):
            self.handler = current
        else:
            for sig in STOP_SIGNALS:
                try:
                    self._old[sig] = signal.signal(sig, self.handler)
                except ValueError:  # not the main thread (e.g. a Ray task): the caller handles stops
                    pass
        self.handler.polled = True
        return self.handler

    def __exit__(self, *exc) -> None:
        self.handler.polled = False
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
    train_step = _step_function(run) if cfg.cuda_graph else run.method.train_step
    with _StopSignal() as stop:
        try:
            while run.step < cfg.steps:
                numbers = train_step(run.next_batch)
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
                    record = write_log_line(run, on_grid, time.monotonic() - t0, run.step - step0)
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


def _step_function(run: Run):
    """``cuda_graph``: the step replayed from a CUDA graph, or the eager step with the reason on stderr.

    The capture warms up on a zero batch and puts weights, Adam state and generators back afterwards, so
    the run's data and noise streams are untouched (training/cuda_graph.py)."""
    from .cuda_graph import capture_step

    example = torch.zeros(run.config.batch_size, *run.data.observation_shape, device=run.device)
    graphed, reason = capture_step(run.method, example)
    print(f"cuda_graph: {reason}" + ("" if graphed else "; training with eager steps"), file=sys.stderr, flush=True)
    return graphed if graphed is not None else run.method.train_step


def write_log_line(run: Run, on_grid: bool, elapsed: float, steps_done: int) -> dict:
    """Append the log window's means to log.jsonl (and TensorBoard); returns the record.

    A last line off the log_every grid is marked partial and its window kept, so that resuming past it
    logs exactly what a straight run would (the partial line is dropped on resume)."""
    record = {"step": run.step, **run.flush_window(reset=on_grid), "time": round(elapsed, 3),
              "steps_per_s": round(steps_done / max(elapsed, 1e-9), 3)}
    if not on_grid:
        record["partial"] = True
    run.append_log("log.jsonl", record)
    if run.board is not None:
        run.board.log_line(record)
    return record


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
    with stops_deferred():  # a stop lands after both, so "the checkpoint of step N stands" names the file's step
        save_checkpoint(run.out_dir / "checkpoint.pt", run.state())
        run.last_good = run.step


def _final_status(run: Run, state: str, msg: str) -> None:
    try:
        write_status(run.out_dir, run.last_good or 0, state, msg)
    except OSError:
        pass  # best effort: the error itself still reaches the user


def _evaluate_during_training(run: Run) -> None:
    from ..evaluate import evaluate_method  # the metrics load only in a run that evaluates

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
    run.append_log("metrics.jsonl", record)
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
