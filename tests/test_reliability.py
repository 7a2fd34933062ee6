"""Nothing lost, nothing stuck, nobody else let in: torn logs, divergence, two writers, stuck runs,
a full disk and leftovers. Bad input, reports and metrics are in test_reliability_inputs.py."""

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

import factorvae.files as checkpoint_module
from factorvae.cli import main
from factorvae.config import ConfigError, make_config
from factorvae.files import append_jsonl
from factorvae.run.checkpoint import load_checkpoint
from factorvae.run.lock import DirLock
from factorvae.run.rundir import RunError
from factorvae.training.loop import prepare_run, resume, train
from helpers import cli_error_line, disk_full_after
from helpers import logged_steps as _steps
from helpers import run_files as _files
from helpers import run_status as _status

SRC = Path(__file__).resolve().parents[1] / "src" / "factorvae"
pytestmark = pytest.mark.usefixtures("one_thread")  # in-process training beside other jobs: see conftest



# ---- 1. torn jsonl lines ----------------------------------------------------------------------------------


def test_a_torn_last_log_line_is_dropped_on_resume(tmp_path, small):
    run = train(make_config(steps=4, **small), tmp_path / "r", progress=False)
    (run / "metrics.jsonl").write_text('{"step": 4, "mig": {"score": 0.1}}\n')
    for name in ("log.jsonl", "metrics.jsonl"):
        with open(run / name, "a") as f:
            f.write('{"step": 6, "recon": 12.')  # a kill or a full disk in the middle of an append
    resume(run, steps=6, progress=False)
    assert _steps(run / "log.jsonl") == [2, 4, 6]
    assert _steps(run / "metrics.jsonl") == [4]


def test_a_damaged_earlier_line_is_refused_and_nothing_changes(tmp_path, small, capsys):
    run = train(make_config(steps=4, **small), tmp_path / "r", progress=False)
    lines = (run / "log.jsonl").read_text().splitlines()
    (run / "log.jsonl").write_text(lines[0][:10] + "\n" + lines[1] + "\n")
    before = _files(run)
    err = cli_error_line(capsys, ["train", "--resume", str(run), "--steps", "6", "--quiet"])
    assert "log.jsonl, line 1 of 2 is damaged" in err
    assert _files(run) == before


def test_an_append_is_one_write_and_a_short_one_is_cut_back(tmp_path, monkeypatch):
    path = tmp_path / "log.jsonl"
    append_jsonl(path, {"step": 1})
    real_write, calls = os.write, []

    def half_write(fd, data):  # the disk fills up after half the line
        calls.append(data)
        return real_write(fd, data[: len(data) // 2])

    monkeypatch.setattr(checkpoint_module.os, "write", half_write)
    with pytest.raises(OSError) as info:
        append_jsonl(path, {"step": 2, "recon": 1.5})
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(path)
    assert len(calls) == 1 and calls[0].endswith(b"\n")  # the whole line in one write call
    assert path.read_text() == '{"step": 1}\n'  # the torn half was cut back off


def test_json_logs_never_hold_nan(tmp_path):
    append_jsonl(tmp_path / "m.jsonl", {"step": 1, "tc": {"stderr": float("nan"), "x": [float("inf"), 1.0]}})
    assert json.loads((tmp_path / "m.jsonl").read_text()) == {"step": 1, "tc": {"stderr": None, "x": [None, 1.0]}}


# ---- 2. only finite, sane weights are called good --------------------------------------------------------


def _all_checkpoints_finite(run: Path) -> None:
    if not (run / "checkpoint.pt").exists():
        return
    state = load_checkpoint(run / "checkpoint.pt")
    tensors = [t for m in state["modules"].values() for t in m.values()]
    tensors += [t for o in state["optimizers"].values() for s in o["state"].values() for t in s.values()
                if isinstance(t, torch.Tensor) and t.is_floating_point()]
    assert all(bool(torch.isfinite(t).all()) for t in tensors)
    assert all(float(t.abs().max()) < 1e6 for m in state["modules"].values() for t in m.values() if t.numel())


@pytest.mark.parametrize("setting", [{"lr": 10.0}, {"lr_d": 1e30}])
def test_a_diverging_run_keeps_no_bad_checkpoint(tmp_path, small, setting):
    small["checkpoint_every"] = 1
    with pytest.raises(RunError, match="non-finite|diverged"):
        train(make_config(steps=4, **setting, **small), tmp_path / "r", progress=False)
    _all_checkpoints_finite(tmp_path / "r")
    assert _status(tmp_path / "r")["state"] == "failed"


def test_the_discriminator_loss_is_checked_too(tmp_path, small, monkeypatch):
    from factorvae.methods.factorvae import FactorVAE

    real_step, count = FactorVAE.train_step, {"n": 0}

    def poisoned(self, next_batch):
        numbers = real_step(self, next_batch)
        count["n"] += 1
        if count["n"] == 6:
            numbers["d_loss"] = torch.tensor(float("inf"))
        return numbers

    monkeypatch.setattr(FactorVAE, "train_step", poisoned)
    with pytest.raises(RunError, match=r"non-finite d_loss \(inf\) at step 6.*step 4"):
        train(make_config(steps=10, **small), tmp_path / "r", progress=False)
    assert load_checkpoint(tmp_path / "r" / "checkpoint.pt")["step"] == 4


# ---- 3. one writer per run directory; workers die with their driver ---------------------------------------


def test_a_second_writer_is_refused_naming_the_holder(tmp_path, small, capsys):
    train(make_config(steps=2, **small), tmp_path / "r", progress=False)
    first = prepare_run(None, tmp_path / "r", resume=True, steps=4)
    before = _files(tmp_path / "r")
    with pytest.raises(RunError, match=rf"in use by another process \(pid {os.getpid()} on "):
        prepare_run(None, tmp_path / "r", resume=True, steps=6)
    err = cli_error_line(capsys, ["train", "--resume", str(tmp_path / "r"), "--steps", "6", "--quiet"])
    assert f"pid {os.getpid()}" in err
    assert _files(tmp_path / "r") == before
    first.close()
    assert not (tmp_path / "r" / ".lock").exists()  # a clean release removes the lock file
    resume(tmp_path / "r", steps=4, progress=False)
    assert _steps(tmp_path / "r" / "log.jsonl") == [2, 4]  # no doubled lines


def _python(code: str) -> subprocess.Popen:
    """A python child running ``code`` with factorvae's stdlib-only modules importable (no torch: fast)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(SRC / sub) for sub in ("run", "experiments"))}
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=env, stdout=subprocess.PIPE, text=True)


def test_the_lock_dies_with_its_holder(tmp_path):
    child = _python(f"""
        import time, lock as rundir_lock
        lock = rundir_lock.DirLock({str(tmp_path)!r})
        print("locked", flush=True)
        time.sleep(60)
    """)
    try:
        assert child.stdout.readline().strip() == "locked"
        with pytest.raises(RuntimeError, match=f"pid {child.pid} on "):
            DirLock(tmp_path)
    finally:
        child.kill()  # kill -9: no chance to release anything
        child.wait()
    with DirLock(tmp_path) as lock:  # the kernel released it; the stale file is simply reused
        assert lock.held


def test_a_worker_dies_with_its_killed_driver(tmp_path):
    driver = _python("""
        import subprocess, sys, time
        code = ("import orphans, signal, time; orphans.die_with_parent(signal.SIGTERM); print('ok', flush=True); "
                "time.sleep(60)")
        worker = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                                  start_new_session=True)  # as the sweep starts its workers
        assert worker.stdout.readline().strip() == "ok"
        print(worker.pid, flush=True)
        time.sleep(60)
    """)
    worker = int(driver.stdout.readline())
    driver.kill()  # kill -9 of the driver: the worker gets SIGTERM from the kernel
    driver.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and Path(f"/proc/{worker}").exists() and _state(worker) != "Z":
        time.sleep(0.05)
    alive = Path(f"/proc/{worker}").exists() and _state(worker) != "Z"
    if alive:  # our own grandchild: do not leave it behind
        os.kill(worker, signal.SIGKILL)
    assert not alive


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def test_sighup_stops_training_and_the_sweep_driver_cleanly():
    from factorvae.experiments.backends import SigtermStops
    from factorvae.training.loop import _StopSignal

    with _StopSignal() as stop:
        os.kill(os.getpid(), signal.SIGHUP)  # the terminal closed
        assert stop.requested  # a flag: the loop checkpoints and exits with "interrupted"
    with pytest.raises(KeyboardInterrupt), SigtermStops():
        os.kill(os.getpid(), signal.SIGHUP)  # the driver forwards a stop to every worker


def test_a_sweep_refuses_repeated_values_and_a_busy_folder(tmp_path, capsys):
    out = tmp_path / "sw"
    err = cli_error_line(capsys, ["sweep", "--model", "factorvae", "--gamma", "10,10", "--out", str(out)])
    assert "factorvae-gamma10-s0 more than once" in err
    out.mkdir()
    with DirLock(out, "sweep folder"):
        err = cli_error_line(capsys, ["sweep", "--model", "factorvae", "--gamma", "10", "--out", str(out)])
    assert f"sweep folder {out} is in use by another process (pid {os.getpid()}" in err
    assert sorted(p.name for p in out.iterdir()) == []


# ---- 4. runs that would get stuck ------------------------------------------------------------------------


def _chairs(root: Path) -> Path:
    root.mkdir()
    for i in range(3):
        Image.new("RGB", (64, 64), (80 * i, 40, 200)).save(root / f"{i}.png")
    return root


def test_settings_that_fail_at_the_first_evaluation_are_refused_before_step_1(tmp_path, small, monkeypatch):
    monkeypatch.setenv("FACTORVAE_CACHE", str(tmp_path / "cache"))
    chairs = _chairs(tmp_path / "chairs")
    with pytest.raises(ConfigError, match="no ground-truth factors.*--eval-every 0"):
        prepare_run(make_config(dataset="chairs", data_path=str(chairs), eval_every=2, **small), tmp_path / "r")
    assert not (tmp_path / "r").exists()
    with pytest.raises(ConfigError, match="eval_metrics is empty"):
        make_config(eval_every=2, eval_metrics=())
    # a run an older version accepted: resume refuses it as it stands, and may turn the evaluation off
    run = train(make_config(dataset="chairs", data_path=str(chairs), steps=2, **small), tmp_path / "r", progress=False)
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "eval_every": 2}))
    with pytest.raises(ConfigError, match="--eval-every 0"):
        resume(run, steps=4, progress=False)
    assert main(["train", "--resume", str(run), "--steps", "4", "--set", "eval_every=0", "--quiet"]) == 0
    assert json.loads((run / "config.json").read_text())["eval_every"] == 0 and _status(run)["step"] == 4


def test_a_failed_evaluation_keeps_its_step_and_ends_the_status(tmp_path, small, monkeypatch):
    import factorvae.evaluate

    def broken(*args, **kwargs):
        raise MemoryError("out of memory while scoring")

    monkeypatch.setattr(factorvae.evaluate, "evaluate_method", broken)
    small["checkpoint_every"] = 100
    with pytest.raises(RunError, match="MemoryError: out of memory while scoring at step 2"):
        train(make_config(steps=6, eval_every=2, eval_metrics=("mig",), **small), tmp_path / "r", progress=False)
    assert load_checkpoint(tmp_path / "r" / "checkpoint.pt")["step"] == 2  # not lost: saved before failing
    status = _status(tmp_path / "r")
    assert status["state"] == "failed" and "out of memory" in status["error"]


# ---- 8. a full disk ---------------------------------------------------------------------------------------


def test_a_full_disk_is_one_line_and_a_failed_status(tmp_path, small, capsys, monkeypatch):
    run = tmp_path / "r"
    assert main(["train", "--steps", "4", "--out", str(run), "--batch-size", "8", "--set", "d_hidden=64",
                 "--set", "log_every=2", "--set", "checkpoint_every=4", "--quiet"]) == 0
    capsys.readouterr()
    size = (run / "checkpoint.pt").stat().st_size
    disk_full_after(monkeypatch, 100_000)  # a tenth of a checkpoint fits, then the disk is full
    err = cli_error_line(capsys, ["train", "--resume", str(run), "--steps", "8", "--quiet"])
    assert f"no space left on {checkpoint_module.mount_point(run)} writing {run / 'checkpoint.pt'}" in err
    assert f"({size / 1e6:.1f} MB needed)" in err
    assert "the checkpoint of step 4 is intact" in err
    assert load_checkpoint(run / "checkpoint.pt")["step"] == 4
    assert _status(run)["state"] == "failed" and "no space left" in _status(run)["error"]
    assert not list(run.glob(".*.tmp"))


# ---- 9. leftovers -----------------------------------------------------------------------------------------


def test_stale_checkpoint_temp_files_are_removed_at_start(tmp_path, small):
    run = train(make_config(steps=2, **small), tmp_path / "r", progress=False)
    stale = run / ".checkpoint.pt.k3j2h1.tmp"
    stale.write_bytes(b"\0" * 100_000)  # what a kill -9 during a checkpoint write leaves
    (run / ".eval.json.x1.tmp").write_bytes(b"{")  # not ours to remove: `evaluate` may be writing it
    resume(run, steps=4, progress=False)
    assert not stale.exists() and (run / ".eval.json.x1.tmp").exists()


def test_resume_refuses_to_go_back_and_a_failed_resume_changes_nothing(tmp_path, small, capsys):
    run = train(make_config(steps=4, **small), tmp_path / "r", progress=False)
    before = _files(run)
    err = cli_error_line(capsys, ["train", "--resume", str(run), "--steps", "2", "--quiet"])
    assert "--steps 2 is below step 4" in err
    torch.save({"not": "a checkpoint"}, run / "checkpoint.pt")
    before = _files(run)
    err = cli_error_line(capsys, ["train", "--resume", str(run), "--steps", "6", "--quiet"])
    assert "cannot read" in err and "checkpoint.pt" in err
    assert _files(run) == before  # config.json (steps 4) not rewritten to 6
    (run / "config.json").write_bytes(b"\xff\xfe{")
    err = cli_error_line(capsys, ["train", "--resume", str(run), "--quiet"])
    assert "cannot read config" in err


def test_unwritable_run_files_are_one_line(tmp_path, small, capsys, monkeypatch):
    run = train(make_config(steps=2, **small), tmp_path / "r", progress=False)
    before = _files(run)

    def denied(*args, **kwargs):  # a read-only folder (chmod does not stop root, who runs these tests here)
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(checkpoint_module.tempfile, "mkstemp", denied)
    err = cli_error_line(capsys, ["train", "--resume", str(run), "--steps", "4", "--quiet"])
    assert "Permission denied" in err and str(run) in err
    assert _files(run) == before

