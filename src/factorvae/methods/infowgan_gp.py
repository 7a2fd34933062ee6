"""InfoWGAN-GP, the GAN baseline of the paper's experiments (paper §4, comparison with InfoGAN; docs/paper.md §7).

InfoGAN (Chen et al. 2016) trained with the Wasserstein loss and gradient penalty (Gulrajani et al. 2017).
The generator G(c, z) maps D continuous codes c ~ U[−1, 1]^D and noise z ~ N(0, I) to images; a critic
scores images, and a Q head on the critic's body predicts c with a factored Gaussian Q(c|x). λ·E[log Q(c |
G(c, z))] is a lower bound on I(c; G(c, z)) − H(c), so maximising it makes the codes recoverable from
the images; the representation the metrics score is Q's mean of c (``encode``). Only the idea is from the
paper: the settings are the usual WGAN-GP/InfoGAN ones, see docs/infowgan.md.

One ``train_step`` is one generator iteration:
1. ``n_critic`` critic steps, each on a fresh real minibatch and fresh (c, z); fakes are made without a
   graph, so G gets no gradient. Loss = E[D(fake)] − E[D(real)] + gp_weight·GP − λ·E[log Q(c|fake)]:
   the critic's optimizer trains the critic, Q's head and Q's log-std (they share the body), so Q learns
   from every fake the critic sees.
2. one generator step on fresh (c, z): loss = −E[D(G(c, z))] − λ·E[log Q(c|G(c, z))]. Only G's weights
   are updated (``backward(inputs=...)``), so critic and Q are untouched: G and Q both maximise the MI
   term, each in its own step.
All randomness (c, z, the interpolation weights) is drawn from the run's ``generator`` so runs resume exactly.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..config import Config, ConfigError
from ..losses import gaussian_log_density, gradient_penalty
from ..nets import Critic, Generator


class InfoWGANGP:
    kind = "gan"

    def __init__(self, config: Config, channels: int, generator: torch.Generator, device: torch.device) -> None:
        if config.q_std is not None and not config.q_std > 0:
            raise ConfigError(f"q_std must be > 0 or None (learned), got {config.q_std}")
        self.latent_dim, self.noise_dim = config.latent_dim, config.noise_dim
        self.n_critic, self.gp_weight, self.lambda_mi = config.n_critic, config.gp_weight, config.lambda_mi
        self.batch_size = config.batch_size
        self.generator = generator  # torch.Generator: every random draw of the method
        self.device = device
        self.gen = Generator(channels, config.latent_dim, config.noise_dim, config.width).to(device)
        self.critic = Critic(channels, config.latent_dim, config.width, config.q_std).to(device)
        self.g_params = list(self.gen.parameters())
        self.opt_g = torch.optim.Adam(self.g_params, lr=config.lr_g, betas=config.adam_betas_g)
        # critic body, both heads and Q's learned log-std: everything Q and the critic need, in one step
        self.opt_critic = torch.optim.Adam(self.critic.parameters(), lr=config.lr_g, betas=config.adam_betas_g)
        self.modules = {"generator": self.gen, "critic": self.critic}
        self.optimizers = {"generator": self.opt_g, "critic": self.opt_critic}

    def sample_latents(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Codes c ~ U[−1, 1]^D (n, D) and noise z ~ N(0, I) (n, noise_dim), from the run's generator."""
        c = 2.0 * torch.rand((n, self.latent_dim), generator=self.generator, device=self.device) - 1.0
        z = torch.randn((n, self.noise_dim), generator=self.generator, device=self.device)
        return c, z

    def log_q(self, c: torch.Tensor, q_mean: torch.Tensor) -> torch.Tensor:
        """E[log Q(c|x)]: the Gaussian log-density summed over code dimensions, averaged over the batch.

        Adding H(c) = D·log 2 (uniform codes on [−1, 1]) gives the InfoGAN lower bound on I(c; G(c, z)).
        """
        return gaussian_log_density(c, q_mean, self.critic.q_log_std).sum(1).mean()

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        """(Q's mean of c, None): a GAN has no posterior variance; the metrics score the mean."""
        return self.critic(x)[1], None

    def decode(self, c: torch.Tensor) -> torch.Tensor:
        """G(c, z = 0) in [0, 1]: the noise is fixed at its mean so a traversal varies only the codes."""
        z = torch.zeros((len(c), self.noise_dim), device=c.device, dtype=c.dtype)
        return self.gen(c, z)

    def train_step(self, next_batch: Callable[[], torch.Tensor]) -> dict[str, torch.Tensor]:
        sums = {k: torch.zeros((), device=self.device) for k in ("critic_loss", "gp", "wasserstein")}
        for _ in range(self.n_critic):
            real = next_batch()  # (B, C, H, W)
            n = len(real)
            c, z = self.sample_latents(n)
            with torch.no_grad():
                fake = self.gen(c, z)  # no graph: the critic step cannot reach G
            eps = torch.rand((n,), generator=self.generator, device=self.device)
            score_real, _ = self.critic(real)
            score_fake, q_mean = self.critic(fake)
            wasserstein = score_real.mean() - score_fake.mean()
            gp = gradient_penalty(lambda x: self.critic(x)[0], real, fake, eps)
            critic_loss = -wasserstein + self.gp_weight * gp - self.lambda_mi * self.log_q(c, q_mean)
            self.opt_critic.zero_grad(set_to_none=True)
            critic_loss.backward()
            self.opt_critic.step()
            for k, v in (("critic_loss", critic_loss), ("gp", gp), ("wasserstein", wasserstein)):
                sums[k] += v.detach()

        c, z = self.sample_latents(self.batch_size)
        score_fake, q_mean = self.critic(self.gen(c, z))
        mi = self.log_q(c, q_mean)
        g_loss = -score_fake.mean() - self.lambda_mi * mi
        self.opt_g.zero_grad(set_to_none=True)
        g_loss.backward(inputs=self.g_params)  # the critic and Q keep their weights and get no gradient
        self.opt_g.step()
        return {
            "loss": g_loss.detach(),
            **{k: v / self.n_critic for k, v in sums.items()},
            "mi": mi.detach(),
        }
