"""Assertions shared by the test files: parameter snapshots and exact state comparison."""

import torch


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
