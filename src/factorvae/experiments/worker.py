"""One run of a sweep, in a worker (a subprocess or a Ray task): train or resume it, score it, record it.

A worker trains its run directory to the grid's steps in segments that end on the evaluation grid, so
the metric-vs-iteration curves (paper Fig. 4) come from the same in-memory run a straight training would
give, then writes ``eval.json``. :func:`run_state` and :func:`outcome` read a run directory back for the
driver. Entry point of a local worker: ``python -m factorvae.experiments.worker JOB_JSON RUN_DIR``.
"""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..config import Config, make_config
from ..files import read_jsonl_lines
from ..run.rundir import RunError, RunInterrupted, is_run_dir, one_line, write_status
from .grid import EvalPlan
from .orphans import die_with_parent

# may change between invocations without a new run; the last three are handed to the resumed run
EXECUTION_ONLY = ("steps", "threads", "device", "tensorboard", "checkpoint_every", "log_every", "cuda_graph")
_PASSED_ON_RESUME = ("tensorboard", "checkpoint_every", "log_every", "cuda_graph")
INTERRUPTED = 130  # a worker's exit status when it was asked to stop (as `factorvae train`)


def _score(method, data, device, plan: EvalPlan, seed: int = 0) -> dict[str, Any]:
    """Scores of a method in memory, with the plan's metric settings (as training's periodic evaluation)."""
    from ..evaluate import evaluate_method  # torch and the models load in the worker only, not in the driver

    return evaluate_method(method, data, device, plan.metrics, plan.protocol, seed, progress=False,
                           settings=plan.settings)


def _append_metrics(run, results: dict[str, Any]) -> None:
    # the same record as training's own periodic evaluation (training/loop.py), so plots read both alike
    record = {"step": run.step, **results}
    if "tc" in results:
        record["tc_true"] = results["tc"]["score"]
    run.append_log("metrics.jsonl", record)
    if run.board is not None:
        run.board.evaluation(run.step, results, run.method, run.data, run.device, run.config.seed)


def _curve_steps(run_dir: Path) -> set[int]:
    path = run_dir / "metrics.jsonl"
    return {r["step"] for _, r in read_jsonl_lines(path)} if path.exists() else set()


def _same_settings(wanted: Config, saved: Config, run_dir: Path) -> None:
    a, b = wanted.to_dict(), saved.to_dict()
    diff = [k for k in a if k not in EXECUTION_ONLY and a[k] != b[k]]
    if diff:
        shown = ", ".join(f"{k}: {b[k]!r} there, {a[k]!r} asked" for k in diff)
        raise RunError(f"{run_dir} holds a run with other settings ({shown}); use another sweep folder")


def _open(config: Config, run_dir: Path, data=None):
    """A new run in ``run_dir``, or the one there resumed to ``config.steps`` (refused if its settings differ)."""
    from ..training.prepare import prepare_run

    if is_run_dir(run_dir):
        _same_settings(config, Config.load(run_dir / "config.json"), run_dir)
        return prepare_run(None, run_dir, resume=True, steps=config.steps,
                           settings={k: getattr(config, k) for k in _PASSED_ON_RESUME}, data=data)
    return prepare_run(config, run_dir, data=data)


def execute_run(overrides: Mapping[str, Any], plan: EvalPlan, run_dir: Path, threads: int | None = None) -> None:
    """Train (or resume) one run to its steps, scoring every ``plan.every`` steps, then write eval.json."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    run = _open(make_config(**overrides), run_dir)
    try:  # the run directory stays locked until its eval.json is written
        _train_and_score(run, plan)
    except BaseException as exc:
        _settle_status(run, exc)
        raise
    finally:
        run.close()


def execute_batch(members: Sequence[Mapping[str, Any]], plan: EvalPlan, run_dirs: Sequence[Path],
                  threads: int | None = None) -> dict[str, str]:
    """Train (or resume) several runs of one model as one batched model (training/batched.py), scoring
    each as :func:`execute_run` does; returns {run directory: error} of the members that failed."""
    import torch

    from ..training.batched import check_configs

    if threads:
        torch.set_num_threads(threads)
    configs = [make_config(**overrides) for overrides in members]
    check_configs(configs)  # one model and data set: safe to share the data between members
    runs: list = []
    failed: dict[str, str] = {}
    try:
        for config, run_dir in zip(configs, run_dirs, strict=True):
            try:  # a folder that cannot be opened (other settings, a held lock) fails alone, as it would alone
                runs.append(_open(config, Path(run_dir), runs[0].data if runs else None))
            except RunError as exc:
                failed[str(run_dir)] = str(exc)
        for step in sorted({run.step for run in runs}):  # only runs at one step can train together
            failed.update(_train_and_score_batch([run for run in runs if run.step == step], plan))
        return failed
    except BaseException as exc:
        for run in runs:
            _settle_status(run, exc)
        raise
    finally:
        for run in runs:
            run.close()


def _settle_status(run, exc: BaseException) -> None:
    """A stop or failure outside fit() (while scoring between segments) still ends status.json's "running"."""
    if (read_json(run.out_dir / "status.json") or {}).get("state") == "running":
        stopped = isinstance(exc, KeyboardInterrupt)
        write_status(run.out_dir, run.last_good or 0, "interrupted" if stopped else "failed",
                     None if stopped else one_line(exc))


def _score_if_stopped_while_scoring(run, plan: EvalPlan) -> None:
    every = plan.every if plan.metrics else 0
    if every and 0 < run.step < run.config.steps and run.step % every == 0 and run.step not in _curve_steps(
            run.out_dir):
        _append_metrics(run, _score(run.method, run.data, run.device, plan))


def _segment_end(step: int, steps: int, plan: EvalPlan) -> int:
    """Where the next training segment ends: the next step on the evaluation grid, or the last step."""
    every = plan.every if plan.metrics else 0  # nothing to score: train straight through
    return min(steps, (step // every + 1) * every) if every else steps


def _final_score(run, plan: EvalPlan) -> None:
    from ..evaluate import write_eval

    if plan.metrics and not evaluated(run.out_dir, plan, run.step):
        results = _score(run.method, run.data, run.device, plan)
        write_eval(run.out_dir, run.step, results)
        if plan.every:
            _append_metrics(run, results)


def _train_and_score(run, plan: EvalPlan) -> None:
    from ..training.loop import fit

    full = run.config
    _score_if_stopped_while_scoring(run, plan)
    while run.step < full.steps:
        # train in segments that end on the evaluation grid; fit() resumes the same in-memory run, so the
        # weights are exactly those of one straight run (only the checkpoint gets written more often)
        target = _segment_end(run.step, full.steps, plan)
        run.config = make_config(full, steps=target)
        fit(run, progress=False)
        if target < full.steps:  # fit() wrote "finished" for the segment; the run itself is not
            write_status(run.out_dir, run.step, "running")
            _append_metrics(run, _score(run.method, run.data, run.device, plan))
    run.config = full
    _final_score(run, plan)


def _train_and_score_batch(runs: list, plan: EvalPlan) -> dict[str, str]:
    """:func:`_train_and_score` for runs at one step, trained together segment by segment."""
    from ..training.batched import fit_batched

    fulls = {id(run): run.config for run in runs}
    for run in runs:
        _score_if_stopped_while_scoring(run, plan)
    failed: dict[str, str] = {}
    steps = runs[0].config.steps if runs else 0  # the same for every member (check_members)

    def score_each(action) -> None:  # a member whose scoring fails is stopped alone, the others go on
        for run in list(runs):
            try:
                action(run)
            except Exception as exc:  # noqa: BLE001 - recorded as this member's error
                write_status(run.out_dir, run.last_good or 0, "failed", one_line(exc))
                failed[str(run.out_dir)] = one_line(exc)
                runs.remove(run)
                run.close()

    while runs and runs[0].step < steps:
        target = _segment_end(runs[0].step, steps, plan)
        for run in runs:
            run.config = make_config(fulls[id(run)], steps=target)
        failed.update(fit_batched(runs, progress=False))
        runs = [run for run in runs if str(run.out_dir) not in failed]
        if target < steps:
            for run in runs:
                write_status(run.out_dir, run.step, "running")
            score_each(lambda run: _append_metrics(run, _score(run.method, run.data, run.device, plan)))
    for run in runs:
        run.config = fulls[id(run)]
    score_each(lambda run: _final_score(run, plan))
    return failed


def _worker_main(argv: list[str]) -> int:
    """Subprocess entry point: ``python -m factorvae.experiments.worker JOB_JSON RUN_DIR [RUN_DIR...]`` (threads
    set through env). A job with ``members`` (a list of overrides, one per RUN_DIR) trains them batched."""
    from ..training.loop import StopSignals

    # a background driver's children start with SIGINT ignored; make every stop signal stop the run cleanly
    # (inside fit() the loop checkpoints first; elsewhere, e.g. while scoring, the last checkpoint stands).
    # Only the first counts: a killed driver's parent-death signal can come more than once (loop.StopSignals)
    StopSignals(repeats_abort=False).install()
    die_with_parent(signal.SIGTERM)  # a killed driver must not leave this run training unseen
    job = json.loads(argv[0])
    try:
        if "members" in job:
            failed = execute_batch(job["members"], EvalPlan(**job["plan"]), [Path(a) for a in argv[1:]],
                                   job.get("threads"))
            for run_dir, error in failed.items():  # each failed member's status.json holds its error too
                print(f"member {run_dir} failed: {error}", file=sys.stderr, flush=True)
        else:
            execute_run(job["overrides"], EvalPlan(**job["plan"]), Path(argv[1]), job.get("threads"))
    except (RunInterrupted, KeyboardInterrupt):  # stopped by the driver: the last checkpoint is the resume point
        print("interrupted", file=sys.stderr, flush=True)
        return INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - any failure is recorded as this run's error, never raised further
        import traceback

        traceback.print_exc()
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


def read_json(path: Path) -> dict | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def evaluated(run_dir: Path, plan: EvalPlan, step: int) -> bool:
    scores = read_json(run_dir / "eval.json") or {}
    return all(isinstance(scores.get(m), dict) and scores[m].get("step") == step for m in plan.metrics)


def run_state(run_dir: Path, steps: int, plan: EvalPlan) -> str:
    """"done" (finished at ``steps`` and scored), "failed" (kept until retried) or "todo"."""
    status = read_json(run_dir / "status.json") or {}
    if status.get("state") == "failed":
        return "failed"
    if status.get("state") == "finished" and status.get("step") == steps and evaluated(run_dir, plan, steps):
        return "done"
    return "todo"


def outcome(run_dir: Path, error: str | None = None) -> dict[str, Any]:
    """What sweep.json records for a run: its state, step, error and headline numbers."""
    status = read_json(run_dir / "status.json") or {}
    scores = read_json(run_dir / "eval.json") or {}
    result: dict[str, Any] = {"state": "failed" if error else status.get("state", "missing"),
                              "step": status.get("step"), "error": error or status.get("error")}
    result["scores"] = {k: v.get("score") for k, v in scores.items() if isinstance(v, dict)}
    return result



if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1:]))
