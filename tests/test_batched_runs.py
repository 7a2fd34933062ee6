"""Batched training writes normal run directories: each member equals its run alone,
resumes exactly, fails alone, and a sweep with ``--backend batched`` produces the same run folders."""

import io
import json

import pytest
import torch

from factorvae import load, make_config, train
from factorvae.cli import main
from factorvae.run.checkpoint import load_checkpoint
from factorvae.training.batched import resume_batched, train_batched

SMALL = {"model": "factorvae", "batch_size": 16, "d_hidden": 128, "log_every": 10, "checkpoint_every": 25,
         "eval_every": 0}
TOLERANCE = 1e-4  # max |a - b| / max|b| per tensor after 50 steps; measured below 1e-5 on this CPU


def _max_rel(a: dict, b: dict) -> float:
    worst = 0.0
    for name in a:
        for key, t in a[name].items():
            u = b[name][key]
            worst = max(worst, float((t - u).abs().max() / u.abs().max().clamp_min(1e-12)))
    return worst


def _lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_a_member_equals_its_run_alone_after_50_steps(tmp_path):
    configs = [make_config(**SMALL, steps=50, seed=0, gamma=10.0), make_config(**SMALL, steps=50, seed=1, gamma=40.0)]
    failed = train_batched(configs, [tmp_path / "b0", tmp_path / "b1"], progress=False)
    assert failed == {}
    alone = train(configs[1], tmp_path / "alone", progress=False)
    ours, theirs = load_checkpoint(tmp_path / "b1" / "checkpoint.pt"), load_checkpoint(alone / "checkpoint.pt")
    assert ours["step"] == theirs["step"] == 50
    assert _max_rel(ours["modules"], theirs["modules"]) <= TOLERANCE
    assert set(ours) == set(theirs)  # the same checkpoint format, so resume and load read it
    assert torch.equal(ours["torch_rng"], theirs["torch_rng"])  # the same noise consumed
    assert ours["numpy_rng"] == theirs["numpy_rng"]  # the same minibatches drawn
    a, b = _lines(tmp_path / "b1" / "log.jsonl"), _lines(alone / "log.jsonl")
    assert [r["step"] for r in a] == [r["step"] for r in b] == [10, 20, 30, 40, 50]
    assert a[0]["recon"] == pytest.approx(b[0]["recon"], rel=1e-4)
    for d in ("b0", "b1"):
        assert json.loads((tmp_path / d / "status.json").read_text())["state"] == "finished"
    model = load(tmp_path / "b0")  # a member is a normal run for load / evaluate / traverse
    assert model.step == 50 and model.config.gamma == 10.0


def test_a_batched_job_resumes_exactly(tmp_path):
    configs = [make_config(**SMALL, steps=30, seed=s, gamma=g) for s, g in ((0, 10.0), (1, 40.0))]
    straight = [tmp_path / "s0", tmp_path / "s1"]
    train_batched(configs, straight, progress=False)
    halves = [tmp_path / "h0", tmp_path / "h1"]
    train_batched([make_config(c, steps=15) for c in configs], halves, progress=False)
    assert resume_batched(halves, steps=30, progress=False) == {}
    for s, h in zip(straight, halves, strict=True):
        a, b = load_checkpoint(s / "checkpoint.pt"), load_checkpoint(h / "checkpoint.pt")
        for name in a["modules"]:
            for key, t in a["modules"][name].items():
                assert torch.equal(t, b["modules"][name][key]), (s.name, name, key)
        drop_time = [{k: v for k, v in r.items() if k not in ("time", "steps_per_s")} for r in _lines(s / "log.jsonl")]
        assert drop_time == [{k: v for k, v in r.items() if k not in ("time", "steps_per_s")}
                             for r in _lines(h / "log.jsonl")]


def test_a_diverging_member_fails_alone(tmp_path):
    configs = [make_config(**SMALL, steps=20, seed=0, gamma=10.0), make_config(**SMALL, steps=20, seed=1, gamma=1e38)]
    failed = train_batched(configs, [tmp_path / "ok", tmp_path / "bad"], progress=False)
    assert list(failed) == [str(tmp_path / "bad")] and "non-finite" in failed[str(tmp_path / "bad")]
    bad = json.loads((tmp_path / "bad" / "status.json").read_text())
    assert bad["state"] == "failed" and "non-finite" in bad["error"]
    ok = json.loads((tmp_path / "ok" / "status.json").read_text())
    assert (ok["state"], ok["step"]) == ("finished", 20)


def test_members_must_share_everything_but_seed_and_weight(tmp_path):
    configs = [make_config(**SMALL, steps=5, seed=0), make_config(**{**SMALL, "batch_size": 8}, steps=5, seed=1)]
    with pytest.raises(ValueError, match="batch_size"):
        train_batched(configs, [tmp_path / "a", tmp_path / "b"], progress=False)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()  # refused before any folder


def test_sweep_backend_batched_writes_normal_runs(tmp_path, capsys):
    out = tmp_path / "sw"
    argv = ["sweep", "--model", "factorvae", "--gamma", "10,40", "--seeds", "1", "--steps", "12", "--batch-size",
            "16", "--set", "d_hidden=128", "--set", "log_every=6", "--metrics", "mig", "--eval-set",
            "mig.num_train=500", "--backend", "batched", "--threads", "1", "--out", str(out)]
    assert main(argv) == 0
    doc = json.loads((out / "sweep.json").read_text())
    assert doc["backend"] == "batched"
    for name in ("factorvae-gamma10-s0", "factorvae-gamma40-s0"):
        assert doc["runs"][name]["result"]["state"] == "finished"
        assert json.loads((out / name / "eval.json").read_text())["mig"]["step"] == 12
    assert "batched group" in capsys.readouterr().err
    assert main(argv) == 0  # a second time: everything done, nothing trains


def test_models_per_process_needs_a_batching_backend(tmp_path, capsys):
    code = main(["sweep", "--model", "factorvae", "--gamma", "10", "--seeds", "1", "--steps", "5",
                 "--models-per-process", "2", "--out", str(tmp_path / "x")])
    assert code != 0
    assert "--models-per-process trains runs batched: use it with --backend batched or ray" in capsys.readouterr().err


def test_the_gpu_batch_path_draws_each_members_own_minibatch(tmp_path):
    """On CUDA all members' indices render in one call; here the same path runs through the CPU renderer."""
    from factorvae.training.batched import _Job
    from factorvae.training.prepare import prepare_run

    def runs(prefix):
        return [prepare_run(make_config(**{**SMALL, "batch_size": 8}, steps=5, seed=s), tmp_path / f"{prefix}{s}")
                for s in range(3)]

    batched, alone = runs("b"), runs("a")
    for run in batched:
        run.render = run.data.renderer(run.device)  # what Run does on CUDA
    got = _Job(batched, None).batches()
    assert got.shape == (3, 8, 1, 64, 64)
    assert torch.equal(got, torch.stack([run.next_batch() for run in alone]))
    assert [r.rng.bit_generator.state for r in batched] == [r.rng.bit_generator.state for r in alone]
    for run in batched + alone:
        run.close()


def test_a_member_folder_with_other_settings_fails_alone(tmp_path):
    from factorvae.experiments.sweep import sweep

    out = tmp_path / "sw"
    train(make_config(**{**SMALL, "batch_size": 8}, steps=2, gamma=10.0), out / "factorvae-gamma10-s0",
          progress=False)  # another experiment in the folder the grid wants
    summary = sweep("factorvae", [10, 40], 1, out, steps=4, overrides={k: v for k, v in SMALL.items()
                    if k != "model"}, backend="batched", threads=1, metrics=(), stream=io.StringIO())
    assert summary["failed"] == ["factorvae-gamma10-s0"]
    error = summary["runs"]["factorvae-gamma10-s0"]["error"]
    assert "other settings" in error and "batch_size" in error
    assert summary["runs"]["factorvae-gamma40-s0"]["state"] == "finished"


def test_runs_with_tensorboard_train_alone_and_the_api_refuses_them(tmp_path):
    from factorvae.experiments.grid import batch_groups, make_grid

    specs = make_grid("factorvae", [10, 40], 1, steps=4, overrides={"tensorboard": True})
    assert batch_groups(specs) == [[specs[0]], [specs[1]]]
    assert [len(g) for g in batch_groups(make_grid("factorvae", [10, 40], 2, steps=4))] == [4]
    configs = [make_config(**SMALL, steps=2, seed=s, tensorboard=True) for s in range(2)]
    with pytest.raises(ValueError, match="not supported with batched training yet"):
        train_batched(configs, [tmp_path / "a", tmp_path / "b"], progress=False)
    assert not (tmp_path / "a").exists()


def test_a_member_whose_scoring_fails_fails_alone(tmp_path, monkeypatch):
    import factorvae.evaluate
    from factorvae.experiments.grid import EvalPlan
    from factorvae.experiments.worker import execute_batch

    real = factorvae.evaluate.evaluate_method

    def broken_for_gamma10(method, *args, **kwargs):
        if method.gamma == 10.0:
            raise MemoryError("out of memory while scoring")
        return real(method, *args, **kwargs)

    monkeypatch.setattr(factorvae.evaluate, "evaluate_method", broken_for_gamma10)
    members = [{**SMALL, "steps": 4, "seed": 0, "gamma": 10.0}, {**SMALL, "steps": 4, "seed": 1, "gamma": 40.0}]
    plan = EvalPlan(("mig",), "paper", {"mig": {"num_train": 300}}, 2)
    failed = execute_batch(members, plan, [tmp_path / "a", tmp_path / "b"])
    assert list(failed) == [str(tmp_path / "a")] and "MemoryError" in failed[str(tmp_path / "a")]
    assert json.loads((tmp_path / "a" / "status.json").read_text())["state"] == "failed"
    assert json.loads((tmp_path / "b" / "status.json").read_text())["state"] == "finished"
    assert json.loads((tmp_path / "b" / "eval.json").read_text())["mig"]["step"] == 4
