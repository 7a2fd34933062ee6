"""Shared fixtures: small but real training settings, so train-loop tests stay fast on two CPU cores."""

import pytest
import torch

torch.set_num_threads(2)

# paper networks with a narrower discriminator; everything else as in the paper
SMALL = {"batch_size": 8, "d_hidden": 64, "log_every": 2, "checkpoint_every": 4}


@pytest.fixture
def small():
    return dict(SMALL)


@pytest.fixture
def one_thread():
    """One intra-op thread for the test, restored after: on a busy 2-core machine two OpenMP threads spin
    waiting for a descheduled peer, measured 10-40x slower than one for the sweep and GP tests."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
