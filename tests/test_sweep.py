"""Sweeps: grid, local and Ray backends, skip/resume on restart, failures recorded, CLI, presets."""

import io
import json
import signal
import subprocess
import sys
import time

import pytest
import torch

from factorvae.cli import main
from factorvae.config import ConfigError, make_config
from factorvae.experiments.backends import default_workers
from factorvae.experiments.grid import EvalPlan, make_grid
from factorvae.experiments.presets import EXPERIMENTS, get, runs
from factorvae.experiments.sweep import sweep
from factorvae.experiments.worker import execute_run, run_state
from factorvae.run.checkpoint import load_checkpoint
from factorvae.training.loop import train

TINY = {"batch_size": 8, "d_hidden": 64, "log_every": 2, "checkpoint_every": 4}
# metric samples small enough for a test; every result records them
TINY_EVAL = {"factorvae": {"num_train": 20, "num_eval": 20, "vote_size": 10, "num_variance": 500},
             "tc": {"num_data": 300}}
PLAN = EvalPlan(("factorvae", "tc"), "paper", TINY_EVAL, 0)


# in-process training beside other jobs: see conftest.one_thread
pytestmark = pytest.mark.usefixtures("one_thread")


def _json(path):
    return json.loads(path.read_text())


def test_grid_names_order_and_owned_settings():
    specs = make_grid("factorvae", [10, 40], 2, steps=5, overrides=TINY)
    assert [s.name for s in specs] == ["factorvae-gamma10-s0", "factorvae-gamma40-s0",
                                       "factorvae-gamma10-s1", "factorvae-gamma40-s1"]  # seed-major
    assert specs[1].overrides == {**TINY, "steps": 5, "model": "factorvae", "seed": 0, "gamma": 40.0}
    assert make_grid("betavae", [0.5], [3])[0].name == "betavae-beta0.5-s3"
    with pytest.raises(ConfigError, match="gamma"):
        make_grid("factorvae", [10], 1, overrides={"gamma": 3})
    with pytest.raises(ConfigError, match="β/γ"):
        make_grid("vae", [1], 1)
    with pytest.raises(ConfigError, match="unknown setting"):
        make_grid("betavae", [1], 1, overrides={"nope": 1})
    assert default_workers(4, None, 2) == (2, 1)  # 2 cores: 2 runs of 1 thread
    assert default_workers(1, None, 8) == (1, 1)
    assert default_workers(9, 2, 8) == (4, 2)


def test_segmented_training_equals_a_straight_run(tmp_path):
    # the sweep scores every `every` steps by training in segments; the weights must not change
    overrides = {**TINY, "model": "factorvae", "steps": 6}
    execute_run(overrides, EvalPlan(("tc",), "paper", {"tc": {"num_data": 200}}, every=3), tmp_path / "seg")
    train(make_config(**overrides), tmp_path / "straight", progress=False)
    a = load_checkpoint(tmp_path / "seg" / "checkpoint.pt")["modules"]
    b = load_checkpoint(tmp_path / "straight" / "checkpoint.pt")["modules"]
    for net in a:
        for k in a[net]:
            assert torch.equal(a[net][k], b[net][k]), (net, k)
    curve = [json.loads(x) for x in (tmp_path / "seg" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in curve] == [3, 6]
    assert curve[-1]["tc_true"] == _json(tmp_path / "seg" / "eval.json")["tc"]["score"]  # the end is scored once


def test_cli_sweep_then_restart_skips_and_resumes(tmp_path, capsys):
    out = tmp_path / "sw"
    eval_set = ["--eval-set", "factorvae.num_train=20", "--eval-set", "factorvae.num_eval=20",
                "--eval-set", "factorvae.vote_size=10", "--eval-set", "factorvae.num_variance=500",
                "--eval-set", "tc.num_data=300"]
    sets = [x for k, v in TINY.items() for x in ("--set", f"{k}={v}")]
    argv = ["sweep", "--model", "betavae", "--beta", "1,4", "--seeds", "1", "--steps", "4", "--out", str(out),
            "--workers", "2", "--eval-every", "2", *sets, *eval_set]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "start betavae-beta1-s0" in err and "done betavae-beta4-s0" in err
    doc = _json(out / "sweep.json")
    assert doc["grids"] == [{"model": "betavae", "param": "beta", "values": [1.0, 4.0], "seeds": [0], "steps": [4]}]
    for name in ("betavae-beta1-s0", "betavae-beta4-s0"):
        assert doc["runs"][name]["result"]["state"] == "finished"
        scores = _json(out / name / "eval.json")
        assert scores["factorvae"]["settings"]["num_train"] == 20 and scores["tc"]["step"] == 4
        assert [json.loads(x)["step"] for x in (out / name / "metrics.jsonl").read_text().splitlines()] == [2, 4]
    assert _json(out / "betavae-beta4-s0" / "config.json")["beta"] == 4.0

    assert main(argv) == 0  # the same command again: nothing to do
    assert capsys.readouterr().err.count("skip betavae") == 2

    argv[argv.index("--steps") + 1] = "6"  # more steps: both runs resume from their checkpoints
    assert main(argv) == 0
    assert _json(out / "betavae-beta1-s0" / "status.json") == {"step": 6, "state": "finished", "error": None}
    log = [json.loads(x)["step"] for x in (out / "betavae-beta1-s0" / "log.jsonl").read_text().splitlines()]
    assert log == [2, 4, 6]


def test_a_failed_run_is_recorded_and_the_others_finish(tmp_path):
    out = tmp_path / "sw"
    # a run folder that holds another experiment: the sweep must refuse to resume it, and go on
    train(make_config(**{**TINY, "batch_size": 4}, steps=2, gamma=10.0), out / "factorvae-gamma10-s0", progress=False)
    stream = io.StringIO()
    summary = sweep("factorvae", [10, 40], 1, out, steps=2, overrides=TINY, metrics=("tc",),
                    eval_settings={"tc": {"num_data": 200}}, workers=2, stream=stream)
    assert summary["failed"] == ["factorvae-gamma10-s0"]
    result = _json(out / "sweep.json")["runs"]["factorvae-gamma10-s0"]["result"]
    assert result["state"] == "failed" and "other settings" in result["error"] and "batch_size" in result["error"]
    assert summary["runs"]["factorvae-gamma40-s0"]["state"] == "finished"
    assert "FAILED" in stream.getvalue()
    assert run_state(out / "factorvae-gamma40-s0", 2, EvalPlan(("tc",))) == "done"


def test_ray_sweep_on_a_local_instance(tmp_path):
    pytest.importorskip("ray")
    out = tmp_path / "sw"
    stream = io.StringIO()
    summary = sweep("factorvae", [10, 40], 1, out, steps=3, overrides=TINY, backend="ray", workers=2, threads=1,
                    metrics=("factorvae", "tc"), eval_settings=TINY_EVAL, stream=stream)
    assert summary["failed"] == [], stream.getvalue()
    for name in ("factorvae-gamma10-s0", "factorvae-gamma40-s0"):
        # the task trained in a temp folder on its node; the files came back to the sweep folder
        assert {"config.json", "checkpoint.pt", "log.jsonl", "status.json", "eval.json"} <= {
            p.name for p in (out / name).iterdir()}
        assert summary["runs"][name]["node"] and summary["runs"][name]["scores"]["tc"] is not None
    again = sweep("factorvae", [10, 40], 1, out, steps=3, overrides=TINY, backend="ray", metrics=("factorvae", "tc"),
                  eval_settings=TINY_EVAL, stream=io.StringIO())
    assert again["runs"] == {k: {kk: vv for kk, vv in v.items() if kk not in ("seconds", "node")}
                             for k, v in summary["runs"].items()}


def test_ray_tasks_train_groups_batched(tmp_path):
    """--backend ray --models-per-process 2: one task trains both runs as one batched model."""
    pytest.importorskip("ray")
    out = tmp_path / "sw"
    stream = io.StringIO()
    summary = sweep("factorvae", [10, 40], 1, out, steps=3, overrides=TINY, backend="ray", workers=1, threads=1,
                    metrics=("tc",), eval_settings=TINY_EVAL, stream=stream, models_per_process=2)
    assert summary["failed"] == [], stream.getvalue()
    assert "2 run(s) in 1 batched group(s)" in stream.getvalue()
    assert "submit factorvae-gamma10-s0, factorvae-gamma40-s0" in stream.getvalue()  # one task for both
    for name in ("factorvae-gamma10-s0", "factorvae-gamma40-s0"):
        assert _json(out / name / "status.json")["state"] == "finished"
        assert _json(out / name / "eval.json")["tc"]["step"] == 3


def test_presets_scale_rule_and_cli_errors(tmp_path, capsys):
    full = get("dsprites-tradeoff").scaled(1.0)
    assert (full.steps, full.seeds, full.eval_every) == (300_000, 10, 30_000)
    assert len(runs(full)) == 120
    small = get("dsprites-tradeoff").scaled(0.01)
    assert (small.steps, small.seeds, small.eval_every) == (3000, 1, 300)
    specs = runs(get("dsprites-tradeoff").scaled(0.01, seeds=2))
    assert len(specs) == 24 and {s.seed for s in specs[:12]} == {0} and specs[0].overrides["dataset"] == "dsprites"
    assert "paper §4.1" in EXPERIMENTS["dsprites-tradeoff"].source
    with pytest.raises(ConfigError):
        get("dsprites-tradeoff").scaled(2.0)
    assert main(["sweep", "--model", "factorvae", "--beta", "4", "--out", str(tmp_path / "x")]) == 2
    assert main(["sweep", "--model", "betavae", "--beta", "1,x", "--out", str(tmp_path / "x")]) == 2
    assert main(["reproduce", "dsprites-tradeoff", "--scale", "3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("factorvae: error:") for line in err)


def test_sigterm_checkpoints_every_running_run(tmp_path):
    out = tmp_path / "sw"
    sets = [x for k, v in TINY.items() for x in ("--set", f"{k}={v}")]
    driver = subprocess.Popen([sys.executable, "-m", "factorvae", "sweep", "--model", "factorvae", "--gamma", "10,40",
                               "--steps", "2000", "--metrics", "none", "--out", str(out), "--workers", "2", *sets],
                              stderr=subprocess.PIPE, text=True)
    logs = [out / name / "log.jsonl" for name in ("factorvae-gamma10-s0", "factorvae-gamma40-s0")]
    deadline = time.monotonic() + 120
    while not all(p.exists() and p.stat().st_size for p in logs) and time.monotonic() < deadline:
        time.sleep(0.2)
    driver.send_signal(signal.SIGTERM)  # as `kill` of a nohup'd sweep
    _, err = driver.communicate(timeout=120)
    assert driver.returncode == 130, err
    for name in ("factorvae-gamma10-s0", "factorvae-gamma40-s0"):
        status = _json(out / name / "status.json")
        assert status["state"] == "interrupted" and 0 < status["step"] < 2000
        assert load_checkpoint(out / name / "checkpoint.pt")["step"] == status["step"]
        assert _json(out / "sweep.json")["runs"][name]["result"]["state"] == "interrupted"
    assert "interrupted at step" in err


def test_extending_a_sweep_may_change_how_runs_checkpoint_and_log(tmp_path, capsys):
    out = tmp_path / "sw"
    sets = [x for k, v in TINY.items() for x in ("--set", f"{k}={v}")]
    argv = ["sweep", "--model", "betavae", "--beta", "1", "--steps", "2", "--out", str(out), "--workers", "1",
            "--metrics", "none", *sets]
    assert main(argv) == 0
    argv[argv.index("--steps") + 1] = "4"
    assert main([*argv, "--set", "checkpoint_every=1", "--set", "log_every=1"]) == 0
    config = _json(out / "betavae-beta1-s0" / "config.json")
    assert (config["steps"], config["checkpoint_every"], config["log_every"]) == (4, 1, 1)
    assert main([*argv, "--set", "lr=0.5"]) == 2  # a training setting is not an execution setting
    assert "was swept with other settings (lr)" in capsys.readouterr().err
