"""Sweeps over β or γ and seeds: the paper's evidence (paper §4.1, the β / γ grids with 10 seeds; paper-notes §4, §6).

One run directory per (setting, seed) under the sweep folder, named like ``factorvae-gamma40-s0``, each a
normal run (``config.json``, ``log.jsonl``, ``checkpoint.pt``...) that is trained and then scored into
``eval.json``. ``sweep.json`` describes the grid and records each run's outcome. Running the same sweep
again skips runs that are finished and evaluated, resumes the others from their checkpoints (bit-identical
to a straight run, see train.py), and leaves runs that failed (e.g. a non-finite loss) alone unless
``retry_failed``. A failed run never stops the others.

Where runs execute (local subprocesses, or Ray tasks on a local instance or a cluster) and how many at
once is in :mod:`factorvae.sweep_backends`.

Evaluation: ``metrics`` are scored at the end of every run (and every ``eval_every`` steps into
``metrics.jsonl`` for the metric-vs-iteration curves) with the named ``protocol``; ``eval_settings``
shrinks sample sizes for quick sweeps, e.g. ``{"factorvae": {"num_train": 200}, "tc": {"num_data": 2000}}``,
and every result records the settings it used.
"""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .checkpoint import append_jsonl, atomic_write_text, read_jsonl_lines
from .config import Config, ConfigError, make_config
from .rundir import RunError, is_run_dir, one_line, write_status
from .rundir_lock import DirLock, LockHeld

SWEEP_FILE = "sweep.json"
PARAM = {"factorvae": "gamma", "betavae": "beta"}  # the weight each model's grid varies (paper §4.1)
DEFAULT_METRICS = ("factorvae", "tc")  # what the trade-off table needs: the paper's metric and true TC
# may change between invocations without a new run; the last three are handed to the resumed run
_EXECUTION_ONLY = ("steps", "threads", "device", "tensorboard", "checkpoint_every", "log_every")
_PASSED_ON_RESUME = ("tensorboard", "checkpoint_every", "log_every")
INTERRUPTED = 130  # a worker's exit status when it was asked to stop (as `factorvae train`)


@dataclass(frozen=True)
class RunSpec:
    """One (setting, seed) cell of a grid: a run directory name and the config overrides that make it."""

    name: str
    model: str
    param: str | None
    value: float | None
    seed: int
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EvalPlan:
    """What to score, how, and how often (0: only at the end)."""

    metrics: tuple[str, ...] = DEFAULT_METRICS
    protocol: str = "paper"
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    every: int = 0


def _num(value: float) -> str:
    return f"{value:g}"


def run_name(model: str, param: str | None, value: float | None, seed: int) -> str:
    setting = f"-{param}{_num(value)}" if param and value is not None else ""
    return f"{model}{setting}-s{seed}"


def make_grid(
    model: str, values: Sequence[float] | None, seeds: int | Sequence[int], steps: int | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> list[RunSpec]:
    """Runs of ``model`` for each value of its weight (γ for FactorVAE, β for β-VAE) and each seed.

    ``seeds`` is a count (seeds 0..N-1) or explicit seeds. Runs are ordered seed-major, so a sweep
    stopped early has every setting for the first seeds rather than every seed for the first settings.
    """
    param = PARAM.get(model)
    if values and param is None:
        raise ConfigError(f"model {model} has no β/γ to sweep; sweep one of {', '.join(PARAM)} or give no values")
    if param and not values:
        raise ConfigError(f"give the {param} values to sweep for {model} (e.g. --{param} 10,40)")
    seed_list = list(range(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]
    if not seed_list:
        raise ConfigError("a sweep needs at least one seed")
    base = dict(overrides or {})
    owned = [k for k in ("model", "seed", param) if k and k in base]
    if owned:
        raise ConfigError(f"{', '.join(owned)} set by the sweep grid; remove it from the overrides")
    if "threads" in base:  # a worker's threads are the sweep's choice (workers × threads ≤ cores)
        raise ConfigError("set threads with --threads (sweep(threads=...)), not as a run setting")
    if steps is not None:
        base["steps"] = steps
    specs = []
    for seed in seed_list:
        for value in (values or [None]):
            ov = {**base, "model": model, "seed": seed, **({param: float(value)} if param else {})}
            specs.append(RunSpec(run_name(model, param, value, seed), model, param, value, seed, ov))
    make_config(**specs[0].overrides)  # fail on bad settings before anything starts
    return specs


# ---- one run (runs in a worker: a subprocess or a Ray task) ------------------------------------------------


def _score(method, data, device, plan: EvalPlan, seed: int = 0) -> dict[str, Any]:
    """Scores of a method in memory, with the plan's metric settings (evaluate.py's path)."""
    from .evaluate import evaluate_method

    return evaluate_method(method, data, device, plan.metrics, plan.protocol, seed, progress=False,
                           settings=plan.settings)


def _append_metrics(run, results: dict[str, Any]) -> None:
    # the same record as training's own periodic evaluation (train.py), so plots read both alike
    record = {"step": run.step, **results}
    if "tc" in results:
        record["tc_true"] = results["tc"]["score"]
    append_jsonl(run.out_dir / "metrics.jsonl", record)
    if run.board is not None:
        run.board.evaluation(run.step, results, run.method, run.data, run.device, run.config.seed)


def _curve_steps(run_dir: Path) -> set[int]:
    path = run_dir / "metrics.jsonl"
    return {r["step"] for _, r in read_jsonl_lines(path)} if path.exists() else set()


def _same_settings(wanted: Config, saved: Config, run_dir: Path) -> None:
    a, b = wanted.to_dict(), saved.to_dict()
    diff = [k for k in a if k not in _EXECUTION_ONLY and a[k] != b[k]]
    if diff:
        shown = ", ".join(f"{k}: {b[k]!r} there, {a[k]!r} asked" for k in diff)
        raise RunError(f"{run_dir} holds a run with other settings ({shown}); use another sweep folder")


def execute_run(overrides: Mapping[str, Any], plan: EvalPlan, run_dir: Path, threads: int | None = None) -> None:
    """Train (or resume) one run to its steps, scoring every ``plan.every`` steps, then write eval.json."""
    import torch

    from .train import prepare_run

    if threads:
        torch.set_num_threads(threads)
    config = make_config(**overrides)
    if is_run_dir(run_dir):
        _same_settings(config, Config.load(run_dir / "config.json"), run_dir)
        run = prepare_run(None, run_dir, resume=True, steps=config.steps,
                          settings={k: getattr(config, k) for k in _PASSED_ON_RESUME})
    else:
        run = prepare_run(config, run_dir)
    try:  # the run directory stays locked until its eval.json is written
        _train_and_score(run, plan)
    except BaseException as exc:
        _settle_status(run, exc)
        raise
    finally:
        run.close()


def _settle_status(run, exc: BaseException) -> None:
    """A stop or failure outside fit() (while scoring between segments) still ends status.json's "running"."""
    if (_read_json(run.out_dir / "status.json") or {}).get("state") == "running":
        stopped = isinstance(exc, KeyboardInterrupt)
        write_status(run.out_dir, run.last_good or 0, "interrupted" if stopped else "failed",
                     None if stopped else one_line(exc))


def _train_and_score(run, plan: EvalPlan) -> None:
    from .evaluate import write_eval
    from .train import fit

    run_dir = run.out_dir
    full, every = run.config, plan.every if plan.metrics else 0  # nothing to score: train straight through
    if every and 0 < run.step < full.steps and run.step % every == 0 and run.step not in _curve_steps(run_dir):
        _append_metrics(run, _score(run.method, run.data, run.device, plan))  # stopped while scoring
    while run.step < full.steps:
        # train in segments that end on the evaluation grid; fit() resumes the same in-memory run, so the
        # weights are exactly those of one straight run (only the checkpoint gets written more often)
        target = min(full.steps, (run.step // every + 1) * every) if every else full.steps
        run.config = make_config(full, steps=target)
        fit(run, progress=False)
        if target < full.steps:  # fit() wrote "finished" for the segment; the run itself is not
            write_status(run_dir, run.step, "running")
            _append_metrics(run, _score(run.method, run.data, run.device, plan))
    run.config = full
    if plan.metrics and not _evaluated(run_dir, plan, run.step):
        results = _score(run.method, run.data, run.device, plan)
        write_eval(run_dir, run.step, results)
        if every:
            _append_metrics(run, results)


def _worker_main(argv: list[str]) -> int:
    """Subprocess entry point: ``python -m factorvae.sweep JOB_JSON RUN_DIR`` (threads set through env)."""
    from .orphans import die_with_parent
    from .rundir import RunInterrupted

    # a background driver's children start with SIGINT ignored; make both signals stop the run cleanly
    # (inside fit() train.py checkpoints first; elsewhere, e.g. while scoring, the last checkpoint stands)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    die_with_parent(signal.SIGTERM)  # a killed driver must not leave this run training unseen
    job = json.loads(argv[0])
    try:
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


# ---- the driver ---------------------------------------------------------------------------------------------


def _read_json(path: Path) -> dict | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _evaluated(run_dir: Path, plan: EvalPlan, step: int) -> bool:
    scores = _read_json(run_dir / "eval.json") or {}
    return all(isinstance(scores.get(m), dict) and scores[m].get("step") == step for m in plan.metrics)


def run_state(run_dir: Path, steps: int, plan: EvalPlan) -> str:
    """"done" (finished at ``steps`` and scored), "failed" (kept until retried) or "todo"."""
    status = _read_json(run_dir / "status.json") or {}
    if status.get("state") == "failed":
        return "failed"
    if status.get("state") == "finished" and status.get("step") == steps and _evaluated(run_dir, plan, steps):
        return "done"
    return "todo"


def outcome(run_dir: Path, error: str | None = None) -> dict[str, Any]:
    """What sweep.json records for a run: its state, step, error and headline numbers."""
    status = _read_json(run_dir / "status.json") or {}
    scores = _read_json(run_dir / "eval.json") or {}
    result: dict[str, Any] = {"state": "failed" if error else status.get("state", "missing"),
                              "step": status.get("step"), "error": error or status.get("error")}
    result["scores"] = {k: v.get("score") for k, v in scores.items() if isinstance(v, dict)}
    return result


# ---- sweep.json and the entry points ----------------------------------------------------------------------


def _manifest(out: Path, specs: Sequence[RunSpec], plan: EvalPlan, backend: str) -> dict[str, Any]:
    """sweep.json merged with ``specs``: a folder can hold several grids (e.g. β-VAE and FactorVAE)."""
    doc = _read_json(out / SWEEP_FILE) or {"format": 1, "runs": {}}
    for spec in specs:
        entry = {k: v for k, v in asdict(spec).items() if k != "name"}
        old = doc["runs"].get(spec.name)
        if old:  # compare resolved configs: "8" from --set and 8 from Python are the same setting
            before, now = make_config(**old["overrides"]).to_dict(), make_config(**spec.overrides).to_dict()
            changed = sorted(k for k in now if k not in _EXECUTION_ONLY and before[k] != now[k])
            if changed:
                raise ConfigError(f"{out / spec.name} was swept with other settings ({', '.join(changed)}); "
                                  "use another --out")
            entry["result"] = old.get("result")
        doc["runs"][spec.name] = entry
    doc["grids"] = _grids(doc["runs"])
    doc["eval"] = asdict(plan)
    doc["backend"] = backend
    return doc


def _grids(runs: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    by_model: dict[str, dict[str, Any]] = {}
    for r in runs.values():
        g = by_model.setdefault(r["model"], {"model": r["model"], "param": r["param"], "values": set(), "seeds": set(),
                                             "steps": set()})
        if r["value"] is not None:
            g["values"].add(r["value"])
        g["seeds"].add(r["seed"])
        g["steps"].add(r["overrides"].get("steps", Config.steps))
    return [{**g, **{k: sorted(g[k]) for k in ("values", "seeds", "steps")}} for g in by_model.values()]


def run_sweep(
    specs: Sequence[RunSpec], out: str | Path, *, backend: str = "local", workers: int | None = None,
    threads: int | None = None, address: str | None = None, plan: EvalPlan | None = None,
    retry_failed: bool = False, stream=None,
) -> dict[str, Any]:
    """Train and score every run of ``specs`` under ``out``; returns the summary also kept in sweep.json."""
    from .evaluate import check_metric_names

    plan = plan or EvalPlan()
    if plan.metrics:
        check_metric_names(plan.metrics)
    if plan.protocol not in ("paper", "dlib") or plan.every < 0:
        raise ConfigError(f"bad evaluation plan {plan}: protocol paper or dlib, eval_every >= 0")
    if backend not in ("local", "ray"):
        raise ConfigError(f"unknown backend '{backend}'; use local or ray")
    twice = sorted({s.name for s in specs if sum(t.name == s.name for t in specs) > 1})
    if twice:  # two workers would write one run directory
        raise ConfigError(f"the grid lists {', '.join(twice)} more than once (a repeated value?); give each once")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a sweep folder")
    out.mkdir(parents=True, exist_ok=True)
    try:  # one driver per sweep folder: a second one would start a second writer of every run
        with DirLock(out, "sweep folder"):
            return _run_locked(specs, out, backend, workers, threads, address, plan, retry_failed, stream)
    except LockHeld as exc:
        raise RunError(str(exc)) from None


def _run_locked(specs: Sequence[RunSpec], out: Path, backend: str, workers: int | None, threads: int | None,
                address: str | None, plan: EvalPlan, retry_failed: bool, stream) -> dict[str, Any]:
    from .sweep_backends import Progress, SigtermStops, available_cores, execute_local, execute_ray, plan_workers

    doc = _manifest(out, specs, plan, backend)
    atomic_write_text(out / SWEEP_FILE, json.dumps(doc, indent=1) + "\n")
    progress = Progress(len(specs), stream)
    results: dict[str, dict[str, Any]] = {}
    todo = []
    for spec in specs:
        state = run_state(out / spec.name, make_config(**spec.overrides).steps, plan)
        if state == "todo" or (state == "failed" and retry_failed):
            todo.append(spec)
            continue
        results[spec.name] = outcome(out / spec.name)
        progress.done += 1
        note = "finished and scored" if state == "done" else "failed earlier (rerun with --retry-failed)"
        progress.line(f"skip {spec.name}: {note}")

    def record(spec: RunSpec, result: dict[str, Any], seconds: float) -> None:
        result["seconds"] = round(seconds, 1)
        results[spec.name] = doc["runs"][spec.name]["result"] = result
        atomic_write_text(out / SWEEP_FILE, json.dumps(doc, indent=1) + "\n")
        progress.finish(spec.name, seconds, result)

    if todo:
        cores = available_cores()
        workers, threads = plan_workers(backend, len(todo), workers, threads, address, cores)
        if backend == "local" and workers * threads > cores:
            progress.line(f"note: {workers} workers × {threads} threads > {cores} cores: runs will compete")
        progress.line(f"{len(todo)} run(s) to do on {backend}: {workers or 'cluster'} worker(s) × {threads} "
                      f"thread(s); {len(specs) - len(todo)} skipped")
        with SigtermStops():
            if backend == "local":
                execute_local(todo, out, plan, workers, threads, progress, record)
            else:
                execute_ray(todo, out, plan, workers, threads, address, progress, record)
    failed = sorted(n for n, r in results.items() if r["state"] != "finished")
    progress.line(f"sweep done: {len(results) - len(failed)} finished, {len(failed)} not"
                  + (f" ({', '.join(failed)})" if failed else ""))
    return {"out": str(out), "runs": results, "failed": failed}


def sweep(
    model: str, values: Sequence[float] | None, seeds: int | Sequence[int], out: str | Path, steps: int | None = None,
    overrides: Mapping[str, Any] | None = None, backend: str = "local", workers: int | None = None,
    threads: int | None = None, address: str | None = None, protocol: str = "paper",
    metrics: Iterable[str] = DEFAULT_METRICS, eval_settings: Mapping[str, Mapping[str, Any]] | None = None,
    eval_every: int = 0, retry_failed: bool = False, stream=None,
) -> dict[str, Any]:
    """Sweep ``model`` over ``values`` of its weight (γ or β) and ``seeds``: see the module docstring."""
    plan = EvalPlan(tuple(metrics), protocol, {k: dict(v) for k, v in (eval_settings or {}).items()}, eval_every)
    return run_sweep(make_grid(model, values, seeds, steps, overrides), out, backend=backend, workers=workers,
                     threads=threads, address=address, plan=plan, retry_failed=retry_failed, stream=stream)


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1:]))
