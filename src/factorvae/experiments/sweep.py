"""Sweeps over β or γ and seeds: the paper's evidence (paper §4.1, the β / γ grids with 10 seeds; docs/paper.md §4, §6).

One run directory per (setting, seed) under the sweep folder, named like ``factorvae-gamma40-s0``, each a
normal run (``config.json``, ``log.jsonl``, ``checkpoint.pt``...) that is trained and then scored into
``eval.json``. ``sweep.json`` describes the grid and records each run's outcome. Running the same sweep
again skips runs that are finished and evaluated, resumes the others from their checkpoints (bit-identical
to a straight run, see training/loop.py), and leaves runs that failed (e.g. a non-finite loss) alone unless
``retry_failed``. A failed run never stops the others.

Where runs execute (local subprocesses, or Ray tasks on a local instance or a cluster) and how many at
once is in :mod:`.backends`; the grid's cells are in :mod:`.grid`, one run's work in :mod:`.worker`.

Evaluation: ``metrics`` are scored at the end of every run (and every ``eval_every`` steps into
``metrics.jsonl`` for the metric-vs-iteration curves) with the named ``protocol``; ``eval_settings``
shrinks sample sizes for quick sweeps, e.g. ``{"factorvae": {"num_train": 200}, "tc": {"num_data": 2000}}``,
and every result records the settings it used.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..config import Config, ConfigError, make_config
from ..evaluate import check_metric_names
from ..files import atomic_write_text
from ..run.lock import DirLock, LockHeld
from ..run.rundir import RunError, is_run_dir
from .backends import Progress, SigtermStops, available_cores, execute_local, execute_ray, plan_workers
from .grid import DEFAULT_METRICS, EvalPlan, RunSpec, batch_groups, make_grid
from .worker import EXECUTION_ONLY, outcome, read_json, run_state

SWEEP_FILE = "sweep.json"
BACKENDS = ("local", "batched", "ray")


def _manifest(out: Path, specs: Sequence[RunSpec], plan: EvalPlan, backend: str) -> dict[str, Any]:
    """sweep.json merged with ``specs``: a folder can hold several grids (e.g. β-VAE and FactorVAE)."""
    doc = read_json(out / SWEEP_FILE) or {"format": 1, "runs": {}}
    for spec in specs:
        entry = {k: v for k, v in asdict(spec).items() if k != "name"}
        old = doc["runs"].get(spec.name)
        if old:  # compare resolved configs: "8" from --set and 8 from Python are the same setting
            before, now = make_config(**old["overrides"]).to_dict(), make_config(**spec.overrides).to_dict()
            changed = sorted(k for k in now if k not in EXECUTION_ONLY and before[k] != now[k])
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
    retry_failed: bool = False, stream=None, models_per_process: int | None = None,
) -> dict[str, Any]:
    """Train and score every run of ``specs`` under ``out``; returns the summary also kept in sweep.json.

    ``backend``: "local" (a subprocess per run), "batched" (a subprocess per group of runs of one model,
    trained as one batched model, at most ``models_per_process`` each; default the whole group) or "ray"
    (a task per run, or per group of ``models_per_process`` runs trained batched)."""
    plan = plan or EvalPlan()
    if plan.metrics:
        check_metric_names(plan.metrics)
    if plan.protocol not in ("paper", "dlib") or plan.every < 0:
        raise ConfigError(f"bad evaluation plan {plan}: protocol paper or dlib, eval_every >= 0")
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend '{backend}'; use one of {', '.join(BACKENDS)}")
    if models_per_process is not None and backend == "local":
        raise ConfigError("--models-per-process trains runs batched: use it with --backend batched or ray")
    batch_groups(specs, models_per_process)  # a bad group size fails before anything starts
    twice = sorted({s.name for s in specs if sum(t.name == s.name for t in specs) > 1})
    if twice:  # two workers would write one run directory
        raise ConfigError(f"the grid lists {', '.join(twice)} more than once (a repeated value?); give each once")
    for flag, value in (("workers", workers), ("threads", threads)):  # 0 would silently mean "the default"
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ConfigError(f"--{flag} must be a positive integer, got {value!r}; leave it out for the default")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a sweep folder")
    if is_run_dir(out):  # its runs would be written inside another run's directory
        raise ConfigError(f"--out {out} holds a run (config.json), not a sweep; give the sweep a folder of its own")
    out.mkdir(parents=True, exist_ok=True)
    try:  # one driver per sweep folder: a second one would start a second writer of every run
        with DirLock(out, "sweep folder"):
            return _run_locked(specs, out, backend, workers, threads, address, plan, retry_failed, stream,
                               models_per_process)
    except LockHeld as exc:
        raise RunError(str(exc)) from None


def _run_locked(specs: Sequence[RunSpec], out: Path, backend: str, workers: int | None, threads: int | None,
                address: str | None, plan: EvalPlan, retry_failed: bool, stream,
                per_process: int | None) -> dict[str, Any]:
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
        batched = backend == "batched" or (backend == "ray" and per_process is not None)
        groups = batch_groups(todo, per_process) if batched else [[spec] for spec in todo]
        workers, threads = plan_workers(backend, len(groups), workers, threads, address, cores)
        if backend != "ray" and workers * threads > cores:
            progress.line(f"note: {workers} workers × {threads} threads > {cores} cores: runs will compete")
        shown = f" in {len(groups)} batched group(s)" if batched else ""
        progress.line(f"{len(todo)} run(s){shown} to do on {backend}: {workers or 'cluster'} worker(s) × {threads} "
                      f"thread(s); {len(specs) - len(todo)} skipped")
        with SigtermStops():
            if backend == "ray":
                execute_ray(groups, out, plan, workers, threads, address, progress, record)
            else:
                execute_local(groups, out, plan, workers, threads, progress, record)
    failed = sorted(n for n, r in results.items() if r["state"] != "finished")
    progress.line(f"sweep done: {len(results) - len(failed)} finished, {len(failed)} not"
                  + (f" ({', '.join(failed)})" if failed else ""))
    return {"out": str(out), "runs": results, "failed": failed}


def sweep(
    model: str, values: Sequence[float] | None, seeds: int | Sequence[int], out: str | Path, steps: int | None = None,
    overrides: Mapping[str, Any] | None = None, backend: str = "local", workers: int | None = None,
    threads: int | None = None, address: str | None = None, protocol: str = "paper",
    metrics: Iterable[str] = DEFAULT_METRICS, eval_settings: Mapping[str, Mapping[str, Any]] | None = None,
    eval_every: int = 0, retry_failed: bool = False, stream=None, models_per_process: int | None = None,
) -> dict[str, Any]:
    """Sweep ``model`` over ``values`` of its weight (γ or β) and ``seeds``: see the module docstring and
    :func:`run_sweep` for the backends."""
    plan = EvalPlan(tuple(metrics), protocol, {k: dict(v) for k, v in (eval_settings or {}).items()}, eval_every)
    return run_sweep(make_grid(model, values, seeds, steps, overrides), out, backend=backend, workers=workers,
                     threads=threads, address=address, plan=plan, retry_failed=retry_failed, stream=stream,
                     models_per_process=models_per_process)

