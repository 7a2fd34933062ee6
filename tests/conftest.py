"""Shared fixtures: small but real training settings, so train-loop tests stay fast on two CPU cores."""

import pytest
import torch

torch.set_num_threads(2)

# paper networks with a narrower discriminator; everything else as in the paper
SMALL = {"batch_size": 8, "d_hidden": 64, "log_every": 2, "checkpoint_every": 4}


@pytest.fixture
def small():
    return dict(SMALL)
