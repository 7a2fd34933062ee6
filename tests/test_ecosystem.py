"""Fitting the ecosystem: TensorBoard curves, safetensors export, the sweep's run options."""

import json
import sys

import numpy as np
import pytest
import torch

import factorvae
from factorvae.cli import main
from factorvae.config import ConfigError, make_config
from factorvae.run.rundir import RunError
from factorvae.training.loop import resume, train

SMALL_CLI = ["--batch-size", "8", "--set", "d_hidden=64", "--set", "log_every=2", "--quiet"]


def _events(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


def _log(run_dir):
    return [json.loads(x) for x in (run_dir / "log.jsonl").read_text().splitlines()]


def test_tensorboard_curves_equal_the_logs_and_resume_adds_no_duplicates(tmp_path, small, one_thread):
    cfg = make_config(steps=8, tensorboard=True, eval_every=4, eval_metrics=("mig",), **small)
    run_dir = train(cfg, tmp_path / "r", progress=False)
    # a process killed after its checkpoint at step 8 may have written events beyond it: simulate that
    from torch.utils.tensorboard import SummaryWriter

    stale = SummaryWriter(str(run_dir / "tensorboard"))
    stale.add_scalar("train/recon", -1.0, 10)
    stale.close()
    resume(run_dir, steps=12, progress=False)
    acc = _events(run_dir)
    log = _log(run_dir)
    recon = {e.step: e.value for e in acc.Scalars("train/recon")}
    assert sorted(recon) == [r["step"] for r in log] == [2, 4, 6, 8, 10, 12]  # one value per step, stale one gone
    assert all(recon[r["step"]] == pytest.approx(r["recon"], rel=1e-6) for r in log)
    kl3 = {e.step: e.value for e in acc.Scalars("kl_per_dim/3")}
    assert all(kl3[r["step"]] == pytest.approx(r["kl_per_dim"][3], rel=1e-6) for r in log)
    assert {"train/kl", "train/tc", "train/d_loss", "train/d_acc", "train/steps_per_s"} <= set(acc.Tags()["scalars"])
    metrics = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    mig = {e.step: e.value for e in acc.Scalars("metric/mig")}
    assert mig == {m["step"]: pytest.approx(m["mig"]["score"], rel=1e-6) for m in metrics} and sorted(mig) == [4, 8, 12]
    images = acc.Images("traversal")
    assert [i.step for i in images] == [4, 8, 12] and images[0].width == 10 * 64 + 9 * 2  # 10 steps, 2 px gaps


def test_tensorboard_without_the_package_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # `import tensorboard` now raises ImportError
    code = main(["train", "--steps", "2", "--tensorboard", "--out", str(tmp_path / "r"), *SMALL_CLI])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == ("factorvae: error: --tensorboard needs the tensorboard package: "
                                 "pip install 'factorvae[tensorboard]'")
    assert not (tmp_path / "r").exists()


def test_export_is_small_safe_and_loads_to_the_same_model(tmp_path, small, capsys):
    run_dir = train(make_config(steps=4, **small), tmp_path / "r", progress=False)
    assert main(["export", str(run_dir), str(tmp_path / "m.safetensors")]) == 0
    size = (tmp_path / "m.safetensors").stat().st_size
    assert size < 3e6 < (run_dir / "checkpoint.pt").stat().st_size  # no discriminator, no optimizer moments
    a, b = factorvae.load(run_dir), factorvae.load(tmp_path / "m.safetensors")
    assert b.step == a.step == 4 and b.config == a.config and b.data is not None
    x = a.data.sample_observations(16, np.random.default_rng(0))
    for u, v in zip(a.encode(x), b.encode(x), strict=True):
        np.testing.assert_array_equal(u, v)
    z = np.random.default_rng(1).normal(size=(5, 10)).astype(np.float32)
    np.testing.assert_array_equal(a.decode(z), b.decode(z))
    np.testing.assert_array_equal(a.represent(x), b.represent(x))
    from safetensors import safe_open

    with safe_open(str(tmp_path / "m.safetensors"), framework="pt") as f:
        assert json.loads(f.metadata()["config"])["gamma"] == 40.0 and f.metadata()["step"] == "4"
        assert not any(k.startswith("discriminator.") for k in f.keys())  # noqa: SIM118


def test_export_that_does_not_fit_its_config_is_refused(tmp_path, small):
    from safetensors.torch import load_file, save_file

    run_dir = train(make_config(steps=2, **small), tmp_path / "r", progress=False)
    factorvae.cli.main(["export", str(run_dir), str(tmp_path / "m.safetensors")])
    from safetensors import safe_open

    with safe_open(str(tmp_path / "m.safetensors"), framework="pt") as f:
        meta = f.metadata()
    tensors = load_file(tmp_path / "m.safetensors")
    tensors["encoder.fc.2.weight"] = torch.zeros(20, 7)  # the wrong shape for latent_dim 10, fc 128
    save_file(tensors, tmp_path / "bad.safetensors", metadata=meta)
    with pytest.raises(RunError, match=r"bad.safetensors: the encoder tensors do not fit the config's networks"):
        factorvae.load(tmp_path / "bad.safetensors")
    del tensors["encoder.fc.2.weight"]
    save_file(tensors, tmp_path / "missing.safetensors", metadata=meta)
    with pytest.raises(RunError, match="do not fit"):
        factorvae.load(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(RunError, match="is not a readable safetensors file"):
        factorvae.load(tmp_path / "junk.safetensors")
    save_file(tensors, tmp_path / "foreign.safetensors", metadata={"format": "other"})
    with pytest.raises(RunError, match="is not a factorvae export"):
        factorvae.load(tmp_path / "foreign.safetensors")


def test_export_errors_on_the_command_line(tmp_path, capsys):
    assert main(["export", str(tmp_path), str(tmp_path / "m.safetensors")]) == 2
    assert "has no checkpoint.pt to export" in capsys.readouterr().err


def test_sweep_takes_the_run_options_train_takes(tmp_path, capsys, one_thread):
    out = tmp_path / "sw"
    argv = ["sweep", "--model", "betavae", "--beta", "1", "--steps", "2", "--batch-size", "8", "--device", "cpu",
            "--metrics", "none", "--workers", "1", "--threads", "1", "--out", str(out), "--set", "log_every=1"]
    assert main(argv) == 0
    (run_dir,) = [p for p in out.iterdir() if (p / "config.json").is_file()]
    config = json.loads((run_dir / "config.json").read_text())
    assert (config["batch_size"], config["device"], config["steps"]) == (8, "cpu", 2)
    code = main([*argv[:-2], "--set", "batch_size=16"])
    assert code == 2 and "batch_size is given twice" in capsys.readouterr().err


def test_tensorboard_is_a_resume_setting(tmp_path, small):
    run_dir = train(make_config(steps=2, **small), tmp_path / "r", progress=False)
    resume(run_dir, steps=4, progress=False, tensorboard=True)
    assert json.loads((run_dir / "config.json").read_text())["tensorboard"] is True
    assert any((run_dir / "tensorboard").iterdir())
    with pytest.raises(ConfigError, match="tensorboard must be true or false"):
        make_config(tensorboard="maybe")
