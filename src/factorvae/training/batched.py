"""K runs of a grid trained in lockstep as one batched model (paper §4.1's β / γ grids).

Each member is a normal :class:`~.state.Run`, opened by :func:`~.prepare.prepare_run` as a run alone would
be: its run directory, lock, config.json and status.json; its weights initialised from its own seed; its
numpy sampler and noise generator. Only the training step is shared. :class:`~..methods.batched.BatchedVAE`
stacks the members' networks and Adam states and runs Algorithm 2 for all of them at once, each member
drawing its own minibatches and noise. A member's files (log.jsonl, metrics.jsonl, checkpoint.pt,
status.json) come from the loop's own functions. Before each write, the member's state is copied back
into its run's single method, so the files are those a run alone writes, in the same format. ``evaluate``,
``traverse``, ``report`` and ``--resume`` read them unchanged. A resume of a batched job rebuilds the batched
model from the members' checkpoints exactly.

A member whose numbers turn non-finite, or whose weights diverge, is stopped and recorded as failed,
exactly as a run alone would be. The batched model is rebuilt without it and the others go on.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..config import Config, ConfigError
from ..methods.batched import BatchedVAE, check_members
from ..run.rundir import RunError, RunInterrupted, failure_message, is_run_dir, write_status
from .loop import (
    StopSignals,
    _evaluate_during_training,
    _fail_non_finite,
    _final_status,
    _Progress,
    _save_good,
    _StopSignal,
    write_log_line,
)
from .prepare import prepare_run
from .state import Run


def _state(run: Run) -> dict[str, dict]:
    return {"modules": {n: m.state_dict() for n, m in run.method.modules.items()},
            "optimizers": {n: o.state_dict() for n, o in run.method.optimizers.items()}}


def _sync(model: BatchedVAE, runs: Sequence[Run]) -> None:
    """Copy each member's weights and Adam state into its run's single method (what checkpoints save)."""
    for k, run in enumerate(runs):
        state = model.member_state(k)
        for name, module in run.method.modules.items():
            module.load_state_dict(state["modules"][name])
        for name, opt in run.method.optimizers.items():
            opt.load_state_dict(state["optimizers"][name])


def _member_finite(numbers: dict[str, torch.Tensor]) -> torch.Tensor:
    """(K,) bool: every number of member k finite (no host sync)."""
    per_name = [torch.isfinite(v.reshape(v.shape[0], -1)).all(1) for v in numbers.values()]
    return torch.stack(per_name).all(0)


def check_configs(configs: Sequence[Config]) -> None:
    """Settings that can train as one batched model: one model and data set, differing only in seed and
    γ or β, and nothing batched training does not do yet (TensorBoard files, CUDA graphs)."""
    try:
        check_members(configs)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if any(c.tensorboard or c.cuda_graph for c in configs):
        raise ConfigError("--tensorboard and cuda_graph are not supported with batched training yet; train those "
                          "runs alone")


def check_batch(runs: Sequence[Run]) -> None:
    """Runs that can train as one batched model: :func:`check_configs`, and all at the same step."""
    check_configs([run.config for run in runs])
    if len({run.step for run in runs}) > 1:
        steps = ", ".join(f"{run.out_dir.name} at {run.step}" for run in runs)
        raise ConfigError(f"batched runs must stand at the same step ({steps}); resume them separately first")


class _Job:
    """The members still training, their batched model, and what happened to the others."""

    def __init__(self, runs: Sequence[Run], mode: str | None) -> None:
        check_batch(runs)
        self.runs = list(runs)
        first = self.runs[0]
        self.model = BatchedVAE([r.config for r in self.runs], first.data.observation_shape[0],
                                [r.generator for r in self.runs], first.device,
                                states=[_state(r) for r in self.runs], mode=mode)
        self.failed: dict[str, str] = {}
        self.finite_since: torch.Tensor | None = None  # (K,) numbers not yet read back: all finite?
        self.first_unchecked = first.step + 1

    def batches(self) -> torch.Tensor:
        """(K, B, C, H, W): member k's next minibatch from member k's own sampler."""
        first = self.runs[0]
        if first.render is None:
            return torch.stack([run.next_batch() for run in self.runs])
        # on a GPU, all members' indices cross the bus in one copy and render in one call: the same
        # images and sampler states as each member's next_batch(), 2 launches instead of 2K
        n = first.config.batch_size
        indices = np.stack([run.data.sample_indices(n, run.rng) for run in self.runs])  # (K, B)
        images = first.render(first.to_device(torch.from_numpy(indices.reshape(-1))))  # (K·B, C, H, W)
        return images.view(len(self.runs), n, *images.shape[1:])

    def each(self, runs: Sequence[Run], action) -> None:
        """``action(run)`` for each of ``runs``; a member whose action fails is stopped, the others go on."""
        for run in list(runs):
            try:
                action(run)
            except RunError as exc:  # status.json already says why (non-finite numbers, diverged weights)
                self._drop(run, str(exc))
            except Exception as exc:  # noqa: BLE001 - one member's failure must not stop the others
                msg = failure_message(exc, run.out_dir, run.step, run.last_good)
                _final_status(run, "failed", msg)
                self._drop(run, msg)

    def _drop(self, run: Run, msg: str) -> None:
        k = self.runs.index(run)
        self.runs.pop(k)
        self.failed[str(run.out_dir)] = msg
        run.close()
        if self.runs:
            self.model.drop(k)


def _step(job: _Job, stop: StopSignals, t0: float, step0: int) -> dict | None:
    """One batched step and every member's bookkeeping; returns the first member's log record, if any."""
    numbers = job.model.train_step(job.batches)
    members = [(run, {n: v[k] for n, v in numbers.items()}) for k, run in enumerate(job.runs)]
    for run, _ in members:
        run.step += 1
    cfg, step = job.runs[0].config, job.runs[0].step
    finite = _member_finite(numbers)
    job.finite_since = finite if job.finite_since is None else job.finite_since & finite
    on_grid, stopping = step % cfg.log_every == 0, stop.requested
    evaluates = bool(cfg.eval_every) and step % cfg.eval_every == 0
    saves = step % cfg.checkpoint_every == 0 or step == cfg.steps or stopping
    if on_grid or saves or evaluates or not job.runs[0].defer_checks:  # reading back syncs a GPU
        bad = [(run, nums) for (run, nums), ok in zip(members, job.finite_since.tolist(), strict=True) if not ok]
        for run, nums in bad:
            job.each([run], lambda r, nums=nums: _fail_non_finite(r, nums, job.first_unchecked))
        job.finite_since, job.first_unchecked = None, step + 1
        members = [(run, nums) for run, nums in members if run in job.runs]
    record = None
    for run, nums in members:
        run.accumulate(nums)
        if on_grid or step == cfg.steps:
            line = write_log_line(run, on_grid, time.monotonic() - t0, step - step0)
            record = record or line
    if evaluates or saves:
        _sync(job.model, job.runs)
    if evaluates:
        job.each(job.runs, _evaluate_during_training)
    if saves:
        job.each(job.runs, _save_good)
    if stopping:
        for run in job.runs:
            write_status(run.out_dir, run.step, "interrupted")
        raise RunInterrupted(job.runs[0].out_dir if job.runs else Path(), step)
    return record


def fit_batched(runs: Sequence[Run], progress: bool = True, mode: str | None = None) -> dict[str, str]:
    """Train ``runs`` together up to their ``config.steps``; returns {run directory: error} of the members
    that failed (the others are "finished", and their methods hold the final weights, as after ``fit``).

    However it ends, each member's status.json says so, as ``fit`` writes it for a run alone.
    """
    job = _Job(runs, mode)
    first = job.runs[0]
    bar = _Progress(first.step, first.config.steps, progress)
    t0, step0 = time.monotonic(), first.step
    try:
        with _StopSignal() as stop:
            while job.runs and job.runs[0].step < job.runs[0].config.steps:
                record = _step(job, stop, t0, step0)
                bar.update(job.runs[0].step if job.runs else first.config.steps, record)
    except RunInterrupted:
        raise
    except KeyboardInterrupt:  # a second Ctrl-C: abort at once, the last checkpoints stand
        for run in job.runs:
            _final_status(run, "interrupted", f"aborted; the checkpoint of step {run.last_good} stands")
        raise
    except Exception as exc:
        for run in job.runs:
            _final_status(run, "failed", failure_message(exc, run.out_dir, run.step, run.last_good))
        raise RunError(failure_message(exc, first.out_dir, first.step, first.last_good)) from exc
    finally:
        bar.close()
    _sync(job.model, job.runs)
    for run in job.runs:
        write_status(run.out_dir, run.step, "finished")
    return job.failed


def train_batched(configs: Sequence[Config], out_dirs: Sequence[str | Path], *, progress: bool = True,
                  mode: str | None = None) -> dict[str, str]:
    """Train new runs of ``configs`` (one model, differing in seed and γ or β) into ``out_dirs`` as one
    batched model; returns {run directory: error} of members that failed. Each directory is a normal run."""
    return _open_and_fit([(c, d) for c, d in zip(configs, out_dirs, strict=True)], False, None, progress, mode)


def resume_batched(out_dirs: Sequence[str | Path], steps: int | None = None, *, progress: bool = True,
                   mode: str | None = None) -> dict[str, str]:
    """Continue the runs in ``out_dirs`` together from their checkpoints (to a new total ``steps``)."""
    return _open_and_fit([(None, d) for d in out_dirs], True, steps, progress, mode)


def _open_and_fit(items, resume: bool, steps: int | None, progress: bool, mode: str | None) -> dict[str, str]:
    missing = [str(d) for c, d in items if c is None and not is_run_dir(Path(d))]
    if missing:
        raise RunError(f"no run in {', '.join(missing)} (config.json missing); start those with train_batched")
    configs = [c if c is not None else Config.load(Path(d) / "config.json") for c, d in items]
    check_configs(configs)  # refused before any folder is made or changed; members then share one data set
    runs: list[Run] = []
    data = None
    try:
        for config, out_dir in items:
            run = prepare_run(config, out_dir, resume=resume, steps=steps, data=data)
            data = run.data  # one data set for all members
            runs.append(run)
        return fit_batched(runs, progress, mode)
    finally:
        for run in runs:
            run.close()
