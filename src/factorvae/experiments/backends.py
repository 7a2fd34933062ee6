"""Where a sweep's runs execute, and how many at once (paper §4.1 sweeps).

- ``local``: at most ``workers`` subprocesses of ``python -m factorvae.experiments.worker`` at a time, each with
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

from ..config import ConfigError
from ..run.lock import DirLock, LockHeld
from .grid import EvalPlan, RunSpec
from .worker import INTERRUPTED, execute_batch, execute_run, outcome

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
            try:
                print(f"[{time.strftime('%H:%M:%S')} +{_dur(time.monotonic() - self.started)}] {text}",
                      file=self.stream, flush=True)
            except (OSError, ValueError):  # the terminal went away (SIGHUP): stopping the runs matters more
                pass

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

    def run(self, group: list[RunSpec], plan: EvalPlan, progress: Progress) -> dict[str, dict[str, Any]] | None:
        """Train one run, or a group of runs batched in one process; {name: outcome}, None if stopping."""
        name = group[0].name if len(group) == 1 else f"batch-{group[0].name}+{len(group) - 1}"
        run_dirs, log = [self.out / spec.name for spec in group], self.out / "logs" / f"{name}.log"
        log.parent.mkdir(exist_ok=True)
        job = {"plan": asdict(plan), "threads": self.threads}
        job.update({"members": [spec.overrides for spec in group]} if len(group) > 1
                   else {"overrides": group[0].overrides})
        with self.lock:
            if self.stopping:
                return None
            with open(log, "a") as f:
                f.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} start, {self.threads} thread(s)\n")
                f.flush()
                # a session of its own: a terminal's Ctrl-C reaches only the driver, which forwards one SIGINT
                # so every run checkpoints once instead of aborting on a second signal. The worker asks for
                # SIGTERM when this thread ends (orphans.py); the thread lives until the worker exits (wait below)
                proc = subprocess.Popen([sys.executable, "-m", "factorvae.experiments.worker", json.dumps(job),
                                         *map(str, run_dirs)],
                                        stdout=f, stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
            self.children.add(proc)
        progress.line(f"start {', '.join(spec.name for spec in group)}" + (" (batched)" if len(group) > 1 else ""))
        rc = proc.wait()
        with self.lock:
            self.children.discard(proc)
        errors = _member_errors(log) if len(group) > 1 else {}
        return {spec.name: _outcome(run_dir, rc, log, errors.get(str(run_dir)))
                for spec, run_dir in zip(group, run_dirs, strict=True)}

    def stop(self) -> None:
        with self.lock:
            self.stopping = True
            for proc in self.children:
                proc.send_signal(signal.SIGINT)


def _member_errors(log: Path) -> dict[str, str]:
    """{run directory: error} of the members a batched worker reported as failed (its last session)."""
    try:
        lines = log.read_text(errors="replace").split("\n--- ")[-1].splitlines()
    except OSError:
        return {}
    found = (line[len("member "):].split(" failed: ", 1) for line in lines if line.startswith("member "))
    return {parts[0]: parts[1] for parts in found if len(parts) == 2}


def _outcome(run_dir: Path, rc: int, log: Path, error: str | None = None) -> dict[str, Any]:
    if error:  # a batched member that failed while the others went on
        return outcome(run_dir, error)
    if rc == 0:
        return outcome(run_dir)
    if rc == INTERRUPTED:  # asked to stop; possibly between two segments, so status.json may say finished
        found = outcome(run_dir)  # a batched member that failed before the stop stays failed
        return found if found["state"] == "failed" else {**found, "state": "interrupted"}
    return outcome(run_dir, _last_error(log) or f"worker exited with status {rc}; see {log}")


def execute_local(todo: list[list[RunSpec]], out: Path, plan: EvalPlan, workers: int, threads: int,
                  progress: Progress, record: Record) -> None:
    """Run each group of ``todo`` (one run, or runs trained batched) in a subprocess, ``workers`` at a time."""
    backend = _Local(out, threads)
    started: dict[str, float] = {}

    def task(group: list[RunSpec]) -> dict[str, dict[str, Any]] | None:
        started[group[0].name] = time.monotonic()
        return backend.run(group, plan, progress)

    def settle(group: list[RunSpec], fut: Future) -> None:
        if fut.done() and not fut.cancelled() and fut.exception() is None and fut.result() is not None:
            for spec in group:
                record(spec, fut.result()[spec.name], time.monotonic() - started[group[0].name])

    with ThreadPoolExecutor(workers) as pool:
        futures = {pool.submit(task, group): group for group in todo}
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


def _ray_task(members: list[dict], plan: dict, names: list[str], files: list[dict[str, bytes]],
              threads: int) -> dict[str, Any]:
    """One run, or a group trained batched, on a Ray node: rebuild the folders from ``files`` in a temp dir,
    run, return every file of each folder."""
    import socket

    with tempfile.TemporaryDirectory(prefix="factorvae-sweep-") as tmp:
        run_dirs = [Path(tmp) / name for name in names]
        for run_dir, run_files in zip(run_dirs, files, strict=True):
            run_dir.mkdir()
            for fname, data in run_files.items():
                (run_dir / fname).write_bytes(data)
        error, errors = None, [None] * len(run_dirs)
        try:
            if len(members) == 1:
                execute_run(members[0], EvalPlan(**plan), run_dirs[0], threads)
            else:  # members that failed while the others went on
                failed = execute_batch(members, EvalPlan(**plan), run_dirs, threads)
                errors = [failed.get(str(d)) for d in run_dirs]
        except Exception as exc:  # noqa: BLE001 - returned to the driver as these runs' error
            error = f"{type(exc).__name__}: {exc}"
        back = [{p.name: p.read_bytes() for p in d.iterdir() if p.is_file() and not p.name.startswith(".")}
                for d in run_dirs]
    return {"files": back, "error": error, "errors": errors, "node": socket.gethostname()}


def _store_files(run_dir: Path, files: Mapping[str, bytes]) -> None:
    """Write a run's returned files atomically; status.json last, so a reader never sees a finished run with
    older weights."""
    from ..files import atomic_write_bytes

    for fname in sorted(files, key=lambda f: f == "status.json"):
        atomic_write_bytes(run_dir / fname, files[fname])


LOOPBACK = "127.0.0.1"
_RAY_CLUSTER_FLAG = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # Ray's own switch: may this node join a cluster?


def init_local_ray(ray, cpus: int) -> None:
    """Start a local Ray instance whose servers (GCS, raylet, workers, agents) listen on 127.0.0.1 only.

    Ray binds to the node's address, and on Linux it replaces a loopback address by the machine's
    network one, because such a node may join a cluster; with its cluster switch off it keeps 127.0.0.1.
    The switch is read from the environment by every process Ray starts, and once, at import, by this
    one (hence the module constant too). Checked after the start: anything else is refused.
    """
    before = os.environ.get(_RAY_CLUSTER_FLAG)
    os.environ[_RAY_CLUSTER_FLAG] = "0"
    constants = sys.modules.get("ray._private.ray_constants")
    saved = getattr(constants, "ENABLE_RAY_CLUSTER", None)
    if constants is not None:
        constants.ENABLE_RAY_CLUSTER = False
    try:
        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, _node_ip_address=LOOPBACK)
    finally:
        if before is None:
            os.environ.pop(_RAY_CLUSTER_FLAG, None)
        else:
            os.environ[_RAY_CLUSTER_FLAG] = before
        if constants is not None:
            constants.ENABLE_RAY_CLUSTER = saved
    addresses = {node.get("NodeManagerAddress") for node in ray.nodes()}
    if addresses != {LOOPBACK}:
        ray.shutdown()
        raise ConfigError(f"the local Ray instance came up on {sorted(map(str, addresses))}, not {LOOPBACK} only; "
                          "refusing to run it open to the network (use --backend local)")


def execute_ray(todo: list[list[RunSpec]], out: Path, plan: EvalPlan, workers: int, threads: int, address: str | None,
                progress: Progress, record: Record) -> None:
    try:
        import ray
    except ImportError as exc:
        raise ConfigError("the ray backend needs Ray: pip install 'factorvae[ray]'") from exc
    owned = not ray.is_initialized()
    if owned:
        if address:  # the user's explicit choice, with what it exposes: docs/sweeps.md
            ray.init(address=address, log_to_driver=False)
        else:
            init_local_ray(ray, workers * threads)
    cpus = ray.cluster_resources().get("CPU", 1)
    progress.line(f"ray: {cpus:g} CPUs, {threads} per run")
    task = ray.remote(num_cpus=threads)(_ray_task)
    # a few more tasks than can run at once are in flight: enough to keep every node busy, while the run
    # folders sent with them (≈ 60 MB each when resuming) stay bounded in Ray's object store
    limit, queue, pending = max(2, 2 * int(cpus // threads)), list(todo), {}
    locks: dict[str, DirLock] = {}  # the driver writes each run directory: it holds its lock while a task runs

    def submit() -> None:
        while queue and len(pending) < limit:
            group = [spec for spec in queue.pop(0) if _lock_for_ray(spec, out, locks, record)]
            if not group:
                continue
            files = [{p.name: p.read_bytes() for p in (out / spec.name).iterdir()
                      if p.is_file() and not p.name.startswith(".")} for spec in group]
            ref = task.remote([s.overrides for s in group], asdict(plan), [s.name for s in group], files, threads)
            pending[ref] = (group, time.monotonic())
            progress.line(f"submit {', '.join(spec.name for spec in group)}")

    submit()
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            group, started = pending.pop(done[0])
            try:
                back = ray.get(done[0])
            except Exception as exc:  # noqa: BLE001 - a lost node or worker fails these runs only
                back = {"files": None, "error": f"{type(exc).__name__}: {exc}", "node": None}
            for k, spec in enumerate(group):
                run_dir = out / spec.name
                if back["files"] is not None:
                    _store_files(run_dir, back["files"][k])
                result = outcome(run_dir, back["error"] or back.get("errors", [None] * len(group))[k])
                if back["node"]:
                    result["node"] = back["node"]
                locks.pop(spec.name).release()
                record(spec, result, time.monotonic() - started)
            submit()
    finally:
        for ref in pending:
            ray.cancel(ref)
        for lock in locks.values():
            lock.release()
        if owned:
            ray.shutdown()


def _lock_for_ray(spec: RunSpec, out: Path, locks: dict[str, DirLock], record: Record) -> bool:
    run_dir = out / spec.name
    run_dir.mkdir(exist_ok=True)
    try:
        locks[spec.name] = DirLock(run_dir)
    except LockHeld as exc:
        record(spec, outcome(run_dir, str(exc)), 0.0)
        return False
    return True


def plan_workers(backend: str, n: int, workers: int | None, threads: int | None, address: str | None,
                 cores: int) -> tuple[int, int]:
    if backend == "ray" and address:
        return workers or 0, threads or 1  # the cluster decides how many run at once
    if backend == "batched" and not threads:  # one process trains a whole group: give it the cores
        workers = workers or min(n, cores)
    if workers and not threads:
        threads = max(1, cores // workers)
    return (workers, threads or 1) if workers else default_workers(n, threads, cores)


class SigtermStops:
    """SIGTERM (e.g. `kill` of a nohup'd sweep) and SIGHUP (its terminal closed) stop runs as cleanly as
    Ctrl-C does: every worker checkpoints, then the driver exits."""

    SIGNALS = tuple(getattr(signal, n) for n in ("SIGTERM", "SIGHUP") if hasattr(signal, n))

    def __enter__(self) -> None:
        self.old = {}
        if threading.current_thread() is threading.main_thread():
            self.old = {sig: signal.signal(sig, signal.default_int_handler) for sig in self.SIGNALS}

    def __exit__(self, *exc: object) -> None:
        for sig, old in self.old.items():
            signal.signal(sig, old)
