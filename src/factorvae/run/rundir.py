"""A run directory's bookkeeping around training (training/): its errors, the device, status.json, the logs
cut back on resume, the settings checked before step 1 and the one-line message a failed run ends with
(docs/reliability.md). Everything above the training loop (load, evaluate, sweeps) takes these from here.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from ..config import Config, ConfigError
from ..files import atomic_write_text, is_disk_full, mount_point, read_jsonl_lines


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
    try:
        return torch.device(name)
    except (RuntimeError, TypeError):
        raise ConfigError(f"unknown device '{name}'; use auto, cpu or cuda") from None


def is_run_dir(path: Path) -> bool:
    return (path / "config.json").is_file()


# settings that change how a run executes, not the weights it computes: a resume may change them
# (data_path too: the data moved, checked to be the same data set by training/prepare.py)
RESUME_SETTINGS = ("steps", "eval_every", "eval_metrics", "eval_protocol", "threads", "device", "log_every",
                   "checkpoint_every", "tensorboard", "cuda_graph", "data_path")
# the files only the directory's writer writes: their leftover temp files are removed when it starts
WRITER_FILES = ("checkpoint.pt", "config.json", "status.json", "log.jsonl", "metrics.jsonl")


def write_status(out_dir: Path, step: int, state: str, error: str | None = None) -> None:
    """status.json: {"step", "state" (running | finished | interrupted | failed), "error"}."""
    text = json.dumps({"step": step, "state": state, "error": error}) + "\n"
    try:
        atomic_write_text(out_dir / "status.json", text)
    except OSError as exc:
        if not is_disk_full(exc):
            raise
        # no room for a temporary copy: rewrite in place (truncating first frees the old file's block)
        with open(out_dir / "status.json", "w") as f:
            f.write(text)


def kept_log(path: Path, last_step: int, logged_to: int | None = None) -> str | None:
    """The log without the lines written after the checkpoint we resume from, partial lines and a torn last
    line, so that it matches a straight run; None when there is no log. ValueError for a damaged one, or
    for one cut short: its last whole line comes before ``logged_to``, the step of the last line the
    checkpoint knows was written."""
    if not path.exists():
        return None  # moved away on purpose: the log continues after the checkpoint (docs/reliability.md)
    try:
        lines = read_jsonl_lines(path)
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    kept = [(line, r) for line, r in lines if r["step"] <= last_step and not r.get("partial")]
    end = kept[-1][1]["step"] if kept else None
    if logged_to is not None and (end is None or end < logged_to):
        held = "holds no line" if end is None else f"ends at step {end}"
        raise ValueError(f"{path} {held}, but it had a line for step {logged_to} when the checkpoint of step "
                         f"{last_step} was written: it was cut short. Put the missing lines back, or move the file "
                         "away to continue with a log that starts after the checkpoint")
    return "".join(line + "\n" for line, _ in kept)


def check_room(out_dir: Path, step: int | None) -> None:
    """Refuse a resume that could not write its next checkpoint: the atomic write needs room for one more
    copy of ``checkpoint.pt`` beside the one kept."""
    path = out_dir / "checkpoint.pt"
    if not path.exists():
        return
    needed, free = path.stat().st_size, shutil.disk_usage(out_dir).free
    if free < needed:
        raise RunError(f"no space left on {mount_point(out_dir)} for the next checkpoint of {out_dir} "
                       f"({megabytes(needed)} needed, {megabytes(free)} free); the checkpoint of step {step} is "
                       f"intact; free some space and continue with `factorvae train --resume {out_dir}`")


def require_tensorboard() -> None:
    """Fail before training starts when the package is missing."""
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        raise ConfigError("--tensorboard needs the tensorboard package: pip install 'factorvae[tensorboard]'") from None


def check_run_settings(config: Config, has_factors: bool) -> None:
    """Settings that would fail only later (at the first evaluation, or when TensorBoard is first written to):
    refused before step 1 and before any file changes."""
    if config.tensorboard:
        require_tensorboard()
    if config.eval_every and not has_factors:
        raise ConfigError(f"eval_every: data set '{config.dataset}' has no ground-truth factors, so there is "
                          "nothing to score during training; use --eval-every 0 (a resume may change it)")


def failure_message(exc: Exception, out_dir: Path, step: int, last_good: int | None) -> str:
    """The one line a failed run ends with: what happened, what is kept, how to continue."""
    kept = "none written yet" if last_good is None else f"step {last_good}"
    if is_disk_full(exc):
        where = Path(exc.filename) if getattr(exc, "filename", None) else out_dir
        intact = (f"the checkpoint of step {last_good} is intact" if last_good is not None
                  else "no checkpoint was written yet")
        needed = getattr(exc, "needed", None)  # a checkpoint's size (run/checkpoint.py)
        size = f" ({megabytes(needed)} needed)" if needed else ""
        return (f"no space left on {mount_point(where)} writing {where}{size}; {intact}; free some space and "
                f"continue with `factorvae train --resume {out_dir}`")
    return f"{one_line(exc)} at step {step}; training stopped, last checkpoint kept ({kept})"


def megabytes(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def one_line(exc: BaseException) -> str:
    """``Type: first line of the message``: torch's and h5py's errors can run over many lines."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__
