"""The CUDA path's pieces, checked on CPU: the torch dSprites renderer, batches drawn through it,
and non-finite loss checks deferred to the steps that write (as a GPU run does to avoid a sync per step)."""

import json
import platform

import numpy as np
import pytest
import torch

from factorvae.config import make_config
from factorvae.data.dsprites import DSprites
from factorvae.data.factors import to_float
from factorvae.run.rundir import RunError
from factorvae.training.loop import fit, prepare_run
from factorvae.training.runtime import keep_freed_memory
from helpers import poison_train_step


@pytest.fixture(scope="module")
def dsprites():
    return DSprites()


def test_device_renderer_gives_the_numpy_images(dsprites):
    rng = np.random.default_rng(0)
    corners = np.array([0, 31, 32, 1023, 1024, dsprites.num_examples - 1])  # posY/posX/sprite boundaries
    indices = np.concatenate([corners, rng.integers(0, dsprites.num_examples, 4000)])
    ours = dsprites.renderer(torch.device("cpu"))(torch.from_numpy(indices))
    assert ours.dtype == torch.float32 and ours.shape == (len(indices), 1, 64, 64)
    assert torch.equal(ours, torch.from_numpy(to_float(dsprites.images(indices))))


def test_batches_through_the_renderer_match_the_numpy_sampler(tmp_path, small):
    runs = [prepare_run(make_config(steps=1, device="cpu", **small), tmp_path / name) for name in "ab"]
    runs[1].render = runs[1].data.renderer(runs[1].device)  # what a CUDA run uses, here on CPU tensors
    for _ in range(3):
        assert torch.equal(runs[0].next_batch(), runs[1].next_batch())
    assert runs[0].rng.bit_generator.state == runs[1].rng.bit_generator.state  # same draws: resume unchanged


def test_deferred_non_finite_check_names_the_step_range(tmp_path, small, monkeypatch):
    poison_train_step(monkeypatch, at_call=5, value=float("inf"))
    run = prepare_run(make_config(steps=10, **small), tmp_path / "r")  # logs every 2 steps, checkpoints every 4
    run.defer_checks = True  # as on CUDA: the loss is read back only at steps that log or save
    with pytest.raises(RunError, match=r"non-finite loss at a step in 5\.\.6.*step 4"):
        fit(run, progress=False)
    status = json.loads((tmp_path / "r" / "status.json").read_text())
    assert status["state"] == "failed" and status["step"] == 4
    assert [json.loads(line)["step"] for line in (tmp_path / "r" / "log.jsonl").read_text().splitlines()] == [2, 4]


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="a glibc allocator setting")
def test_allocator_setting_is_accepted():
    assert keep_freed_memory()
