"""The training loop: run directory, logs, exact resume, interruption and failure handling."""

import fractions
import json
import signal
import subprocess
import sys
import time

import pytest
import torch

import factorvae
from factorvae.config import make_config
from factorvae.run.checkpoint import load_checkpoint, save_checkpoint
from factorvae.run.rundir import RunError
from factorvae.training.loop import prepare_run, resume, train
from helpers import assert_state_equal as _assert_state_equal
from helpers import poison_train_step


def _log(run_dir, drop=("time", "steps_per_s")):
    lines = [json.loads(x) for x in (run_dir / "log.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in drop} for r in lines]


def _weights(run_dir):
    state = load_checkpoint(run_dir / "checkpoint.pt")
    return state["modules"], state["optimizers"]


@pytest.mark.parametrize("model", ["factorvae", "betavae"])
def test_resume_is_bit_identical_to_a_straight_run(tmp_path, small, model):
    small["checkpoint_every"] = 3  # not a divisor of the resume point: the log window is mid-way
    straight = train(make_config(model=model, steps=10, **small), tmp_path / "a", progress=False)
    train(make_config(model=model, steps=5, **small), tmp_path / "b", progress=False)
    resumed = resume(tmp_path / "b", steps=10, progress=False)
    _assert_state_equal(_weights(straight), _weights(resumed))
    assert _log(straight) == _log(resumed)
    assert [r["step"] for r in _log(resumed)] == [2, 4, 6, 8, 10]


def test_resume_from_moments_in_another_layout_is_exact(tmp_path, small):
    """A checkpoint written on CUDA holds NCHW Adam moments; on CPU the conv weights are channels_last, and
    fused Adam walks memory order: the moments must take their weights' layout on restore."""
    straight = train(make_config(steps=8, **small), tmp_path / "a", progress=False)
    train(make_config(steps=4, **small), tmp_path / "b", progress=False)
    state = load_checkpoint(tmp_path / "b" / "checkpoint.pt")
    relaid = 0
    for opt in state["optimizers"].values():
        for moments in opt["state"].values():
            for key, value in moments.items():
                if value.dim() == 4 and not value.is_contiguous():
                    moments[key] = value.contiguous()  # as a CUDA run saves them
                    relaid += 1
    assert relaid > 0  # the CPU run's moments were channels_last: the case is real
    save_checkpoint(tmp_path / "b" / "checkpoint.pt", state)
    resumed = resume(tmp_path / "b", steps=8, progress=False)
    _assert_state_equal(_weights(straight), _weights(resumed))


def test_run_directory_contents_and_log_fields(tmp_path, small):
    out = train(make_config(steps=4, **small), tmp_path / "r", progress=False)
    assert {p.name for p in out.iterdir()} == {"config.json", "log.jsonl", "status.json", "checkpoint.pt"}
    rec = _log(out, drop=())[-1]
    assert {"step", "loss", "recon", "kl", "kl_per_dim", "tc", "d_loss", "d_acc", "time", "steps_per_s"} <= set(rec)
    assert len(rec["kl_per_dim"]) == 10
    assert json.loads((out / "status.json").read_text()) == {"step": 4, "state": "finished", "error": None}
    assert json.loads((out / "config.json").read_text())["d_hidden"] == 64
    model = factorvae.load(out)
    mu, logvar = model.encode(torch.zeros(3, 1, 64, 64))
    assert mu.shape == (3, 10) and logvar.shape == (3, 10) and model.step == 4


def test_existing_run_is_not_overwritten(tmp_path, small):
    out = train(make_config(steps=2, **small), tmp_path / "r", progress=False)
    before = (out / "checkpoint.pt").read_bytes()
    with pytest.raises(RunError, match="already holds a run; continue it with --resume"):
        train(make_config(steps=2, **small), out, progress=False)
    assert (out / "checkpoint.pt").read_bytes() == before


def test_resume_without_a_run_fails_clearly(tmp_path):
    with pytest.raises(RunError, match="no run there"):
        resume(tmp_path, progress=False)


def test_bad_settings_leave_no_folder(tmp_path):
    with pytest.raises(Exception, match="not found"):
        prepare_run(make_config(data_path=str(tmp_path / "none.npz")), tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, small, monkeypatch):
    poison_train_step(monkeypatch, at_call=6, value=float("nan"))
    with pytest.raises(RunError, match=r"non-finite loss \(nan\) at step 6.*step 4"):
        train(make_config(steps=10, **small), tmp_path / "r", progress=False)
    assert load_checkpoint(tmp_path / "r" / "checkpoint.pt")["step"] == 4
    status = json.loads((tmp_path / "r" / "status.json").read_text())
    assert status["state"] == "failed" and "step 6" in status["error"]


def test_interrupted_checkpoint_write_keeps_the_previous_one(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"step": 1})

    class Boom:
        def __reduce__(self):
            raise RuntimeError("crash mid-write")

    with pytest.raises(RuntimeError):
        save_checkpoint(path, {"step": 2, "x": Boom()})
    assert load_checkpoint(path) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temp file left behind


def test_checkpoint_refuses_arbitrary_objects(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"obj": fractions.Fraction(1, 3)}, path)  # an arbitrary class instance
    with pytest.raises(Exception, match="Weights only load failed"):
        load_checkpoint(path)


def test_sigterm_saves_a_checkpoint_and_resume_finishes(tmp_path):
    out = tmp_path / "r"
    cmd = [sys.executable, "-m", "factorvae", "train", "--steps", "100000", "--batch-size", "8", "--out", str(out),
           "--set", "d_hidden=64", "--set", "checkpoint_every=100000", "--set", "log_every=1"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    log = out / "log.jsonl"
    while time.time() < deadline and not (log.exists() and log.read_text().count("\n") >= 3):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "checkpoint saved; continue with `factorvae train --resume" in err
    step = load_checkpoint(out / "checkpoint.pt")["step"]
    assert step >= 3 and json.loads((out / "status.json").read_text())["state"] == "interrupted"
    resume(out, steps=step + 2, progress=False)
    assert load_checkpoint(out / "checkpoint.pt")["step"] == step + 2
    assert _log(out)[-1]["step"] == step + 2


def test_noise_stream_is_not_the_initialisation_stream(tmp_path, small):
    from factorvae.training.state import Run, noise_seed

    # on CPU a generator seeded like the global RNG would replay the numbers that drew the initial weights
    assert noise_seed(0) != 0 and noise_seed(0) != noise_seed(1) and noise_seed(3) == noise_seed(3)
    run = Run(make_config(steps=1, seed=0, **small), tmp_path / "r")
    torch.manual_seed(0)
    init_draws = torch.randn(1000)
    noise_draws = torch.randn(1000, generator=run.generator)
    assert not torch.equal(init_draws, noise_draws)
    assert torch.equal(noise_draws, torch.randn(1000, generator=torch.Generator().manual_seed(noise_seed(0))))
