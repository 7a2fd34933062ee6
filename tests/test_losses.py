"""Losses against closed forms and torch.distributions (docs/paper.md §1)."""

import math

import pytest
import torch
from torch.distributions import Bernoulli, Normal, kl_divergence

from factorvae.losses import (
    bernoulli_nll,
    discriminator_accuracy,
    discriminator_loss,
    kl_normal,
    permute_dims,
    reparameterize,
    tc_from_logits,
)


def test_kl_normal_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mu, logvar = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    expected = kl_divergence(Normal(mu, (0.5 * logvar).exp()), Normal(0.0, 1.0))
    torch.testing.assert_close(kl_normal(mu, logvar), expected)


def test_kl_normal_is_zero_at_the_prior():
    assert torch.equal(kl_normal(torch.zeros(3, 2), torch.zeros(3, 2)), torch.zeros(3, 2))


def test_bernoulli_nll_sums_pixels_and_averages_batch():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(4, 1, 8, 8, generator=g)
    x = (torch.rand(4, 1, 8, 8, generator=g) > 0.5).float()
    expected = -Bernoulli(logits=logits).log_prob(x).sum() / 4
    torch.testing.assert_close(bernoulli_nll(logits, x), expected)
    # a logit of 0 costs log 2 nats per pixel whatever the target
    torch.testing.assert_close(bernoulli_nll(torch.zeros(2, 1, 8, 8), x[:2]), torch.tensor(64 * math.log(2)))


def test_reparameterize_uses_generator_and_moments():
    mu, logvar = torch.full((20000, 2), 3.0), torch.full((20000, 2), math.log(4.0))
    a = reparameterize(mu, logvar, torch.Generator().manual_seed(5))
    b = reparameterize(mu, logvar, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    assert abs(a.mean().item() - 3.0) < 0.05 and abs(a.std().item() - 2.0) < 0.05


def test_permute_dims_permutes_each_column_independently():
    z = torch.arange(200.0).view(100, 2)
    out = permute_dims(z, torch.Generator().manual_seed(0))
    for j in range(2):
        assert torch.equal(out[:, j].sort().values, z[:, j])  # each column is a permutation of itself
    assert not torch.equal(out, z)
    # independent: the row pairing of the columns is broken
    rows_kept = ((out[:, 1] - out[:, 0]) == 1).sum().item()
    assert rows_kept < 10


def test_tc_from_logits_is_log_density_ratio():
    logits = torch.tensor([[2.0, 0.5], [0.0, 1.0]])
    d = torch.softmax(logits, 1)[:, 0]
    torch.testing.assert_close(tc_from_logits(logits), torch.log(d / (1 - d)).mean())


def test_discriminator_loss_and_accuracy():
    q, p = torch.tensor([[3.0, 0.0]]), torch.tensor([[0.0, 3.0]])
    expected = -math.log(math.exp(3) / (math.exp(3) + 1))
    torch.testing.assert_close(discriminator_loss(q, p), torch.tensor(expected))
    assert discriminator_accuracy(q, p).item() == 1.0
    assert discriminator_accuracy(p, q).item() == 0.0
    assert discriminator_loss(torch.zeros(4, 2), torch.zeros(4, 2)).item() == pytest.approx(math.log(2))
