"""Shared by the test files: parameter snapshots, exact state comparison, a factor grid whose observations are
its factors, and a training step that returns a non-finite loss on a chosen call."""

import errno
import json
import os
from collections.abc import Sequence

import numpy as np
import torch

from factorvae.data import GroundTruthData


def params(module: torch.nn.Module) -> list[torch.Tensor]:
    """A detached copy of every parameter, to compare before and after a step."""
    return [p.detach().clone() for p in module.parameters()]


def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def assert_state_equal(a, b) -> None:
    """Nested dicts/lists of tensors and plain values are exactly equal (checkpoints, optimizer states)."""
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            assert_state_equal(a[k], b[k])
    elif isinstance(a, list | tuple):
        for x, y in zip(a, b, strict=True):
            assert_state_equal(x, y)
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    else:
        assert a == b


class FactorGrid(GroundTruthData):
    """A full factor grid whose observations are the factor values themselves: float32 (n, K).

    Metrics must not assume images, so their known answers are checked on this."""

    name = "toy"

    def __init__(self, sizes: Sequence[int], names: Sequence[str] | None = None) -> None:
        self.factor_sizes = tuple(sizes)
        self.factor_names = tuple(names) if names else tuple("abcdefgh"[: len(sizes)])
        self.observation_shape = (len(sizes),)
        self.num_examples = int(np.prod(sizes))

    def observations(self, factors: np.ndarray) -> np.ndarray:
        return np.asarray(factors, dtype=np.float32)


def poison_train_step(monkeypatch, at_call: int, value: float) -> None:
    """FactorVAE.train_step reports ``value`` as its loss on call number ``at_call`` (1-based)."""
    from factorvae.methods.factorvae import FactorVAE

    real_step, count = FactorVAE.train_step, {"n": 0}

    def poisoned(self, next_batch):
        numbers = real_step(self, next_batch)
        count["n"] += 1
        if count["n"] == at_call:
            numbers["loss"] = torch.tensor(value)
        return numbers

    monkeypatch.setattr(FactorVAE, "train_step", poisoned)


def cli_error_line(capsys, argv) -> str:
    """Run the CLI on ``argv``; it must exit 2 with exactly one ``factorvae: error: ...`` line and no traceback."""
    from factorvae.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    errors = [line for line in err.splitlines() if line.startswith("factorvae:")]
    assert len(errors) == 1 and err.endswith(errors[0]) and "Traceback" not in err, err
    assert errors[0].startswith("factorvae: error: ")
    return errors[0]


class _FillsUp:
    """A file that takes ``room`` bytes and then fails as a write to a full disk does (OSError ENOSPC)."""

    def __init__(self, f, room: int) -> None:
        self.f, self.room = f, room

    def write(self, data) -> int:
        data = memoryview(data).cast("B")
        n = min(len(data), self.room)
        self.f.write(data[:n])
        self.room -= n
        if n < len(data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return n

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.f.close()


def disk_full_after(monkeypatch, room: int) -> None:
    """Every file that factorvae writes atomically (files.atomic_write_with) fits only ``room`` bytes."""
    import factorvae.files

    real = os.fdopen
    monkeypatch.setattr(factorvae.files.os, "fdopen", lambda fd, *args, **kwargs: _FillsUp(real(fd, *args, **kwargs),
                                                                                              room))


def run_files(run) -> dict[str, bytes]:
    """Every file of a run directory and its bytes: to show that a refused command changed nothing."""
    return {p.name: p.read_bytes() for p in sorted(run.iterdir()) if p.is_file()}


def logged_steps(path) -> list[int]:
    """The steps of a JSON-lines log, in file order."""
    return [json.loads(x)["step"] for x in path.read_text().splitlines()]


def run_status(run) -> dict:
    return json.loads((run / "status.json").read_text())
