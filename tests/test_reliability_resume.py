"""The last gaps of docs/reliability.md: a full disk named as one, a stop that never lands inside a checkpoint
write (a sweep worker may be signalled twice), and logs cut short before the checkpoint refused on resume."""

import os
import shutil
import signal

import pytest
import torch

import factorvae.evaluate
import factorvae.run.checkpoint as checkpoint_module
import factorvae.run.rundir as rundir
from factorvae.config import make_config
from factorvae.files import STOP_SIGNALS
from factorvae.run.checkpoint import load_checkpoint
from factorvae.run.rundir import RunError, RunInterrupted
from factorvae.training.loop import StopSignals, fit, prepare_run, resume, train
from helpers import cli_error_line, disk_full_after
from helpers import logged_steps as _steps
from helpers import run_files as _files
from helpers import run_status as _status

pytestmark = pytest.mark.usefixtures("one_thread")  # in-process training beside other jobs: see conftest



# ---- a full disk --------------------------------------------------------------------------------------------


def test_a_full_disk_names_the_folder_the_size_and_the_kept_step(tmp_path, small, monkeypatch):
    run = train(make_config(steps=4, **small), tmp_path / "r", progress=False)
    size = (run / "checkpoint.pt").stat().st_size
    disk_full_after(monkeypatch, 4096)  # status.json still fits, a checkpoint does not
    with pytest.raises(RunError) as info:
        resume(run, steps=8, progress=False)
    mount = rundir.mount_point(run)
    assert str(info.value) == (f"no space left on {mount} writing {run / 'checkpoint.pt'} ({size / 1e6:.1f} MB "
                               f"needed); the checkpoint of step 4 is intact; free some space and continue with "
                               f"`factorvae train --resume {run}`")
    assert "unexpected pos" not in _status(run)["error"] and _status(run)["state"] == "failed"
    assert load_checkpoint(run / "checkpoint.pt")["step"] == 4 and not list(run.glob(".*.tmp"))


def test_a_resume_on_a_disk_still_full_is_refused_before_training(tmp_path, small, capsys, monkeypatch):
    run = train(make_config(steps=4, **small), tmp_path / "r", progress=False)
    size = (run / "checkpoint.pt").stat().st_size
    before = _files(run)
    real = shutil.disk_usage
    monkeypatch.setattr(rundir.shutil, "disk_usage", lambda p: real(p)._replace(free=size // 2))
    err = cli_error_line(capsys, ["train", "--resume", str(run), "--steps", "8", "--quiet"])
    assert err == (f"factorvae: error: no space left on {rundir.mount_point(run)} for the next checkpoint of {run} "
                   f"({size / 1e6:.1f} MB needed, {size // 2 / 1e6:.1f} MB free); the checkpoint of step 4 is "
                   f"intact; free some space and continue with `factorvae train --resume {run}`")
    assert _files(run) == before


# ---- a stop never lands inside a checkpoint write -----------------------------------------------------------


class _SignalsWhileWriting:
    """The file torch.save writes to; on its first write the process gets ``sig`` twice (a sweep worker's
    parent-death signal, sent once per thread of its killed driver; or a double Ctrl-C)."""

    def __init__(self, f, sig: int) -> None:
        self.f, self.sig, self.sent = f, sig, False

    def write(self, data) -> int:
        if not self.sent:
            self.sent = True
            os.kill(os.getpid(), self.sig)
            os.kill(os.getpid(), self.sig)
        return self.f.write(data)

    def flush(self) -> None:
        self.f.flush()


@pytest.fixture
def signals_during_checkpoints(monkeypatch):
    """Each checkpoint write gets two stop signals in the middle of torch.save; handlers are restored after."""
    real_save = torch.save
    old = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}

    def send(sig: int) -> None:
        def save(obj, f) -> None:
            real_save(obj, _SignalsWhileWriting(f, sig))

        monkeypatch.setattr(checkpoint_module.torch, "save", save)

    yield send
    for sig, handler in old.items():
        signal.signal(sig, handler)


def test_a_sweep_workers_repeated_stop_ends_in_a_clean_checkpoint(tmp_path, small, signals_during_checkpoints):
    StopSignals(repeats_abort=False).install()  # as experiments/worker.py does
    run = prepare_run(make_config(steps=8, **small), tmp_path / "r")
    signals_during_checkpoints(signal.SIGTERM)
    try:
        with pytest.raises(RunInterrupted):  # once: never "failed" with torch's "unexpected pos"
            fit(run, progress=False)
    finally:
        run.close()
    # the stop arrived after the write of step 4 had finished; the loop then stopped at the next step
    assert _status(run.out_dir) == {"step": 5, "state": "interrupted", "error": None}
    assert load_checkpoint(run.out_dir / "checkpoint.pt")["step"] == 5 and not list(run.out_dir.glob(".*.tmp"))


def test_a_second_ctrl_c_during_a_checkpoint_write_aborts_after_it(tmp_path, small, signals_during_checkpoints):
    signals_during_checkpoints(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):  # `factorvae train`: a second Ctrl-C still aborts at once
        train(make_config(steps=8, **small), tmp_path / "r", progress=False)
    run = tmp_path / "r"
    assert _status(run) == {"step": 4, "state": "interrupted", "error": "aborted; the checkpoint of step 4 stands"}
    assert load_checkpoint(run / "checkpoint.pt")["step"] == 4 and not list(run.glob(".*.tmp"))


# ---- logs cut short before the checkpoint ---------------------------------------------------------------------


def _scored(monkeypatch) -> None:
    monkeypatch.setattr(factorvae.evaluate, "evaluate_method", lambda *a, **k: {"mig": {"score": 0.5}})


@pytest.mark.parametrize("name, keep, message", [
    ("log.jsonl", 2, "log.jsonl ends at step 4, but it had a line for step 8 when the checkpoint of step 8"),
    ("log.jsonl", 0, "log.jsonl holds no line, but it had a line for step 8 when the checkpoint of step 8"),
    ("metrics.jsonl", 1, "metrics.jsonl ends at step 3, but it had a line for step 6 when the checkpoint of step 8"),
])
def test_a_log_cut_short_before_the_checkpoint_is_refused(tmp_path, small, capsys, monkeypatch, name, keep, message):
    _scored(monkeypatch)
    run = train(make_config(steps=8, eval_every=3, eval_metrics=("mig",), **small), tmp_path / "r", progress=False)
    lines = (run / name).read_text().splitlines(keepends=True)
    (run / name).write_text("".join(lines[:keep]))  # halved, or emptied
    before = _files(run)
    err = cli_error_line(capsys, ["train", "--resume", str(run), "--steps", "12", "--quiet"])
    assert message in err and "move the file away to continue with a log that starts after the checkpoint" in err
    assert _files(run) == before


def test_a_log_moved_away_continues_after_the_checkpoint(tmp_path, small):
    run = train(make_config(steps=8, **small), tmp_path / "r", progress=False)
    (run / "log.jsonl").rename(tmp_path / "old-log.jsonl")  # the documented way to accept the gap
    resume(run, steps=12, progress=False)
    assert _steps(run / "log.jsonl") == [10, 12]


def test_a_checkpoint_from_before_the_record_is_checked_by_its_log_window(tmp_path, small):
    small["checkpoint_every"] = 5  # resume from step 5, a step into the window after the line of step 4
    run = train(make_config(steps=5, **small), tmp_path / "r", progress=False)
    state = load_checkpoint(run / "checkpoint.pt")
    del state["logged"]  # as written before the checkpoint recorded its logs' last steps
    torch.save(state, run / "checkpoint.pt")
    (run / "log.jsonl").write_text("".join((run / "log.jsonl").read_text().splitlines(keepends=True)[:1]))
    with pytest.raises(RunError, match="ends at step 2, but it had a line for step 4 when the checkpoint of step 5"):
        resume(run, steps=8, progress=False)
