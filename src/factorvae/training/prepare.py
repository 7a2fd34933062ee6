"""Opening a run directory for training: a new run, or a resume from its checkpoint (docs/reliability.md).

:func:`prepare_run` makes every check (settings, checkpoint, logs) before anything on disk changes, takes
the directory's lock (run/lock.py) and returns a :class:`~.state.Run` ready for :func:`~.loop.fit`. A resume
cuts ``log.jsonl`` and ``metrics.jsonl`` back to the checkpoint's step, so the log reads as one straight run.
"""

from __future__ import annotations

from pathlib import Path

from ..config import Config, ConfigError, make_config
from ..data import GroundTruthData
from ..files import atomic_write_text, remove_stale_temps
from ..run.checkpoint import load_checkpoint
from ..run.lock import DirLock, LockHeld
from ..run.rundir import (
    RESUME_SETTINGS,
    WRITER_FILES,
    RunError,
    check_room,
    check_run_settings,
    is_run_dir,
    kept_log,
    one_line,
    write_status,
)
from .health import unfit_state
from .state import Run, data_signature


def _lock(out_dir: Path) -> DirLock:
    try:
        return DirLock(out_dir)
    except LockHeld as exc:
        raise RunError(str(exc)) from None


def prepare_run(
    config: Config | None, out_dir: str | Path, resume: bool = False, steps: int | None = None,
    settings: dict | None = None, data: GroundTruthData | None = None,
) -> Run:
    """Create a new run directory, or reopen one to resume (optionally to a new total ``steps`` and other
    :data:`RESUME_SETTINGS`). The returned run holds the directory's lock until :meth:`Run.close`.
    ``data``: the run's data set, when the caller has loaded it already (a batched job shares one)."""
    out_dir = Path(out_dir)
    if resume:
        return _reopen(out_dir, {**(settings or {}), **({} if steps is None else {"steps": steps})}, data)
    assert config is not None, "a new run needs a config"
    if is_run_dir(out_dir) or (out_dir / "checkpoint.pt").exists():
        raise RunError(f"{out_dir} already holds a run; continue it with --resume {out_dir} or choose another --out")
    if out_dir.exists() and not out_dir.is_dir():
        raise RunError(f"--out {out_dir} is a file, not a folder")
    run = Run(config, out_dir, data)  # builds data and networks first, so bad settings leave no folder behind
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


def _reopen(out_dir: Path, changes: dict, data: GroundTruthData | None = None) -> Run:
    """Resume: every check first (settings, checkpoint, data, logs, room), and only then any change on disk."""
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
        run = Run(config, out_dir, data)
        check_run_settings(config, run.data.has_factors)
        if (out_dir / "checkpoint.pt").exists():
            moved = config.data_path if config.data_path != saved.data_path else None
            _restore(run, out_dir / "checkpoint.pt", moved)
            run.last_good = run.step
        if config.steps < run.step:
            raise RunError(f"--steps {config.steps} is below step {run.step}, where {out_dir} stands; a run cannot "
                           "go back (start a new one with --out)")
        logs = _kept_logs(run)
        check_room(out_dir, run.last_good)
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


def _kept_logs(run: Run) -> dict[str, str | None]:
    """Each log cut back to the checkpoint's step; RunError for one damaged or cut short before it."""
    try:
        return {name: kept_log(run.out_dir / name, run.step, run.logged.get(name))
                for name in ("log.jsonl", "metrics.jsonl")}
    except ValueError as exc:
        raise RunError(str(exc)) from None


def _check_same_data(run: Run, trained_on: dict | None, data_path: str | None) -> None:
    """A resume reading the data from a new place: it must be the data set the checkpoint was trained on
    (a checkpoint written before this record was kept is checked only by its networks' input shape)."""
    here = data_signature(run.data)
    differ = [key for key, value in (trained_on or {}).items() if here.get(key) != value]
    if differ:
        key = differ[0]
        raise RunError(f"--data-path {data_path} is not the data set {run.out_dir} was trained on: its "
                       f"{key.replace('_', ' ')} {_shown(here.get(key))}, the run's {_shown(trained_on[key])}; "
                       "give the run's own data set (moved or copied)")


def _shown(value):
    return tuple(value) if isinstance(value, list) else value


def _restore(run: Run, path: Path, moved_data: str | None) -> None:
    """Load the checkpoint into ``run``; ``moved_data``: the new data path, checked against the checkpoint's."""
    try:
        state = load_checkpoint(path, map_location=run.device)
    except Exception as exc:  # a corrupt checkpoint must not be silently replaced by a fresh start
        raise RunError(f"cannot read {path} ({one_line(exc)}); it is left as it is") from exc
    if moved_data is not None:
        _check_same_data(run, state.get("data") if isinstance(state, dict) else None, moved_data)
    try:
        run.restore(state)
    except Exception as exc:
        raise RunError(f"cannot read {path} ({one_line(exc)}); it is left as it is") from exc
    problem = unfit_state(run.method.modules, run.method.optimizers)
    if problem:
        raise RunError(f"{path} (step {run.step}) holds weights that are not fit to train from ({problem})")
