"""Where a sweep's runs execute, and how many at once (paper §4.1 sweeps; issue 8, many runs per machine).

- ``local``: at most ``workers`` subprocesses of ``python -m factorvae.sweep`` at a time, each with
  ``threads`` torch threads set through OMP_NUM_THREADS / MKL_NUM_THREADS before torch is imported, so that
  workers × threads ≤ cores. A subprocess per run also isolates crashes (an out-of-memory kill loses one
  run, not the sweep), and Ctrl-C / SIGTERM reach each run once so that it checkpoints before stopping.
- ``ray``: one Ray task per run with ``num_cpus=threads``. The task trains in a temporary folder on
  whichever node runs it and returns the run directory's files as bytes; the driver writes them into the
  sweep folder (atomically, ``status.json`` last). This needs no shared file system, so it works on any
  cluster; an unfinished run's files travel with its task, so it resumes where it stopped.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .config import ConfigError
from .sweep import INTERRUPTED, EvalPlan, RunSpec, execute_run, outcome

Record = Callable[[RunSpec, dict, float], None]  # (run, its outcome, seconds): the driver's bookkeeping


def default_workers(n_runs: int, threads: int | None, cores: int) -> tuple[int, int]:
    """(workers, threads) with workers × threads ≤ cores.

    One thread per worker unless asked otherwise: the paper's small convnets use a second core far less
    well than a second independent run does (measured in benchmarks/sweep_throughput.py).
    """
    threads = max(1, threads or 1)
    return max(1, min(n_runs, cores // threads)), threads


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class Progress:
    """One line per run start and finish, with elapsed times, safe from several threads."""

    def __init__(self, total: int, stream=None) -> None:
        self.total, self.stream, self.started, self.done = total, stream or sys.stderr, time.monotonic(), 0
        self.lock = threading.Lock()

    def line(self, text: str) -> None:
        with self.lock:
            print(f"[{time.strftime('%H:%M:%S')} +{_dur(time.monotonic() - self.started)}] {text}",
                  file=self.stream, flush=True)

    def finish(self, name: str, seconds: float, result: dict) -> None:
        with self.lock:
            self.done += 1
        shown = " ".join(f"{k}={v:.3f}" for k, v in result["scores"].items() if isinstance(v, float))
        what = {"finished": shown or "finished", "interrupted": f"interrupted at step {result['step']}"}.get(
            result["state"], f"FAILED: {result['error']}")
        self.line(f"done {name} ({self.done}/{self.total}) in {_dur(seconds)}: {what}")


def _dur(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m // 60}h{m % 60:02d}m" if m >= 60 else f"{m}m{s:02d}s"


def _last_error(log: Path) -> str | None:
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return None
    errors = [line[len("error: "):] for line in lines if line.startswith("error: ")]
    return errors[-1] if errors else None


class _Local:
    """The local backend: one subprocess per run, its output in ``OUT/logs/NAME.log``."""

    def __init__(self, out: Path, threads: int) -> None:
        self.out, self.threads = out, threads
        self.children: set[subprocess.Popen] = set()
        self.lock, self.stopping = threading.Lock(), False
        package_root = str(Path(__file__).resolve().parents[1])  # the workers import this very copy
        self.env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
                    "PYTHONPATH": os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)}

    def run(self, spec: RunSpec, plan: EvalPlan, progress: Progress) -> dict[str, Any] | None:
        run_dir, log = self.out / spec.name, self.out / "logs" / f"{spec.name}.log"
        log.parent.mkdir(exist_ok=True)
        job = json.dumps({"overrides": spec.overrides, "plan": asdict(plan), "threads": self.threads})
        with self.lock:
            if self.stopping:
                return None
            with open(log, "a") as f:
                f.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} start, {self.threads} thread(s)\n")
                f.flush()
                # a session of its own: a terminal's Ctrl-C reaches only the driver, which forwards one SIGINT
                # so every run checkpoints once instead of aborting on a second signal
                proc = subprocess.Popen([sys.executable, "-m", "factorvae.sweep", job, str(run_dir)], stdout=f,
                                        stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
            self.children.add(proc)
        progress.line(f"start {spec.name}")
        rc = proc.wait()
        with self.lock:
            self.children.discard(proc)
        if rc == 0:
            return outcome(run_dir)
        if rc == INTERRUPTED:  # asked to stop; possibly between two segments, so status.json may say finished
            return {**outcome(run_dir), "state": "interrupted"}
        return outcome(run_dir, _last_error(log) or f"worker exited with status {rc}; see {log}")

    def stop(self) -> None:
        with self.lock:
            self.stopping = True
            for proc in self.children:
                proc.send_signal(signal.SIGINT)


def execute_local(todo: list[RunSpec], out: Path, plan: EvalPlan, workers: int, threads: int,
                   progress: Progress, record: Record) -> None:
    backend = _Local(out, threads)
    started: dict[str, float] = {}

    def task(spec: RunSpec) -> dict[str, Any] | None:
        started[spec.name] = time.monotonic()
        return backend.run(spec, plan, progress)

    def settle(spec: RunSpec, fut: Future) -> None:
        if fut.done() and not fut.cancelled() and fut.exception() is None and fut.result() is not None:
            record(spec, fut.result(), time.monotonic() - started[spec.name])

    with ThreadPoolExecutor(workers) as pool:
        futures = {pool.submit(task, spec): spec for spec in todo}
        pending = set(futures)
        try:
            for fut in as_completed(futures):
                pending.discard(fut)
                settle(futures[fut], fut)
        except KeyboardInterrupt:
            progress.line("interrupted: asking running runs to checkpoint and stop")
            backend.stop()
            for fut in pending:
                fut.cancel()
            while True:  # the runs stop within one step; a second signal must not orphan them
                try:
                    pool.shutdown(wait=True)
                    break
                except KeyboardInterrupt:
                    progress.line("still waiting for the runs to write their checkpoints")
            for fut in pending:
                settle(futures[fut], fut)
            raise


def _ray_task(overrides: dict, plan: dict, name: str, files: dict[str, bytes], threads: int) -> dict[str, Any]:
    """One run on a Ray node: rebuild its folder from ``files`` in a temp dir, run, return every file."""
    import socket

    with tempfile.TemporaryDirectory(prefix="factorvae-sweep-") as tmp:
        run_dir = Path(tmp) / name
        run_dir.mkdir()
        for fname, data in files.items():
            (run_dir / fname).write_bytes(data)
        error = None
        try:
            execute_run(overrides, EvalPlan(**plan), run_dir, threads)
        except Exception as exc:  # noqa: BLE001 - returned to the driver as this run's error
            error = f"{type(exc).__name__}: {exc}"
        back = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file() and not p.name.startswith(".")}
    return {"files": back, "error": error, "node": socket.gethostname()}


def _store_files(run_dir: Path, files: Mapping[str, bytes]) -> None:
    """Write a run's returned files atomically; status.json last, so a reader never sees a finished run with
    older weights."""
    from .checkpoint import atomic_write_bytes

    for fname in sorted(files, key=lambda f: f == "status.json"):
        atomic_write_bytes(run_dir / fname, files[fname])


def execute_ray(todo: list[RunSpec], out: Path, plan: EvalPlan, workers: int, threads: int, address: str | None,
                progress: Progress, record: Record) -> None:
    try:
        import ray
    except ImportError as exc:
        raise ConfigError("the ray backend needs Ray: pip install 'factorvae[ray]'") from exc
    owned = not ray.is_initialized()
    if owned:
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=workers * threads, include_dashboard=False, log_to_driver=False)
    cpus = ray.cluster_resources().get("CPU", 1)
    progress.line(f"ray: {cpus:g} CPUs, {threads} per run")
    task = ray.remote(num_cpus=threads)(_ray_task)
    # a few more tasks than can run at once are in flight: enough to keep every node busy, while the run
    # folders sent with them (≈ 60 MB each when resuming) stay bounded in Ray's object store
    limit, queue, pending = max(2, 2 * int(cpus // threads)), list(todo), {}

    def submit() -> None:
        while queue and len(pending) < limit:
            spec = queue.pop(0)
            run_dir = out / spec.name
            files = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file() and not p.name.startswith(".")
                     } if run_dir.is_dir() else {}
            pending[task.remote(spec.overrides, asdict(plan), spec.name, files, threads)] = (spec, time.monotonic())
            progress.line(f"submit {spec.name}")

    submit()
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            spec, started = pending.pop(done[0])
            run_dir = out / spec.name
            try:
                back = ray.get(done[0])
                _store_files(run_dir, back["files"])
                result = outcome(run_dir, back["error"])
                result["node"] = back["node"]
            except Exception as exc:  # noqa: BLE001 - a lost node or worker fails this run only
                result = outcome(run_dir, f"{type(exc).__name__}: {exc}")
            record(spec, result, time.monotonic() - started)
            submit()
    finally:
        for ref in pending:
            ray.cancel(ref)
        if owned:
            ray.shutdown()


def plan_workers(backend: str, n: int, workers: int | None, threads: int | None, address: str | None,
                 cores: int) -> tuple[int, int]:
    if backend == "ray" and address:
        return workers or 0, threads or 1  # the cluster decides how many run at once
    if workers and not threads:
        threads = max(1, cores // workers)
    return (workers, threads or 1) if workers else default_workers(n, threads, cores)


class SigtermStops:
    """SIGTERM (e.g. `kill` of a nohup'd sweep) stops runs as cleanly as Ctrl-C does."""

    def __enter__(self) -> None:
        self.old = None
        if threading.current_thread() is threading.main_thread():
            self.old = signal.signal(signal.SIGTERM, signal.default_int_handler)

    def __exit__(self, *exc: object) -> None:
        if self.old is not None:
            signal.signal(signal.SIGTERM, self.old)
