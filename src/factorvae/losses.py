"""The objective's pieces as pure tensor functions (paper §2–3, Algorithm 2; docs/paper.md §1–2, §7).

Reductions follow the convention that makes β and γ mean what the paper says: reconstruction NLL summed
over pixels, KL summed over latent dimensions, both averaged over the batch; the TC estimate averaged
over the batch.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """z = mu + sigma * eps with eps ~ N(0, I) drawn from ``generator`` (so runs resume exactly)."""
    eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
    return mu + torch.exp(0.5 * logvar) * eps


def kl_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, 1)) per example and dimension: (B, D)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1.0)


def kl_per_dim(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(q(z|x) || p(z)) per latent dimension, averaged over the batch: (D,). Summed, the β-VAE's KL term."""
    return kl_normal(mu, logvar).mean(0)


def bernoulli_nll(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """−log p(x|z) of a Bernoulli decoder, summed over pixels and averaged over the batch (nats)."""
    return F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / x.shape[0]


def permute_dims(z: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Samples of q̄(z) = Π_j q(z_j): shuffle every column of z across the batch independently.

    One argsort of a (B, D) uniform matrix gives D independent uniform permutations in one call.
    """
    keys = torch.rand(z.shape, generator=generator, device=z.device)
    perm = keys.argsort(dim=0)  # (B, D): column j is a permutation of 0..B-1
    return z.gather(0, perm)


def tc_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Density-ratio TC estimate: mean over the batch of log(D/(1−D)) = logit_0 − logit_1."""
    return (logits[:, 0] - logits[:, 1]).mean()


def discriminator_loss(logits_q: torch.Tensor, logits_perm: torch.Tensor) -> torch.Tensor:
    """0.5·[CE(D(z), class 0) + CE(D(permute_dims(z')), class 1)] (Algorithm 2, discriminator update)."""
    zeros = torch.zeros(len(logits_q), dtype=torch.long, device=logits_q.device)
    ones = torch.ones(len(logits_perm), dtype=torch.long, device=logits_perm.device)
    return 0.5 * (F.cross_entropy(logits_q, zeros) + F.cross_entropy(logits_perm, ones))


def discriminator_accuracy(logits_q: torch.Tensor, logits_perm: torch.Tensor) -> torch.Tensor:
    """Fraction of q(z) and q̄(z) samples the discriminator labels correctly (0.5 = chance)."""
    right = (logits_q.argmax(1) == 0).float().sum() + (logits_perm.argmax(1) == 1).float().sum()
    return right / (len(logits_q) + len(logits_perm))


def gradient_penalty(
    critic_fn: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor, fake: torch.Tensor, eps: torch.Tensor
) -> torch.Tensor:
    """WGAN-GP's penalty (Gulrajani et al. 2017; docs/paper.md §7): mean over the batch of (‖∇D(x̂)‖₂ − 1)².

    x̂ = eps·real + (1 − eps)·fake with one eps (B,) per example. x̂ is detached and made a leaf, so the
    penalty's gradient reaches the critic's weights (``create_graph=True``) but neither real nor fake.
    """
    eps = eps.view(-1, *([1] * (real.dim() - 1)))  # (B, 1, 1, 1): one mixing weight per example
    x_hat = (eps * real + (1.0 - eps) * fake).detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(critic_fn(x_hat).sum(), x_hat, create_graph=True)
    return (grad.flatten(1).norm(2, dim=1) - 1.0).pow(2).mean()


_LOG_2PI = 1.8378770664093453  # log(2π), the Gaussian's normalising constant


def gaussian_log_density(x: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """log N(x; mean, exp(log_std)²) elementwise: (B, D). InfoGAN's Q(c|x) for continuous codes."""
    z = (x - mean) * torch.exp(-log_std)  # standardised error
    return -0.5 * z.pow(2) - log_std - 0.5 * _LOG_2PI
