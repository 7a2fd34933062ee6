"""FactorVAE (paper §3, Algorithm 2): the VAE ELBO minus γ·TC(z), TC estimated by a discriminator.

One iteration, in the paper's order:
1. minibatch B1 -> z ~ q(z|x); VAE loss = recon + KL + γ·mean(logit_0(z) − logit_1(z)); step encoder and
   decoder. The TC term's gradient flows through D into the encoder, but D's weights are not updated
   here: ``backward(inputs=...)`` restricts the gradient to the VAE parameters, so D gets no stale grads.
2. an independent minibatch B2, encoded by the encoder just updated -> z' (no gradient), z̃ =
   permute_dims(z'); D loss = 0.5·[CE(D(z), 0) + CE(D(z̃), 1)] on z of step 1; step D. The encoder
   receives nothing from this loss: its backward is restricted to D's parameters.
``same_batch=True`` is disentanglement_lib's variant: z̃ = permute_dims(z) of B1, no second minibatch.
:func:`algorithm2` is the one copy of the iteration: it trains one run here and K runs in methods/batched.py.

D(z) in the D loss is the forward already run in step 1: D's weights do not change between the two
steps, so a second forward would give the same logits (docs/performance.md). B1 and B2 are not sent
through the encoder in one call, because Algorithm 2 encodes B2 with the updated encoder.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..config import Config
from ..losses import (
    bernoulli_nll,
    discriminator_accuracy,
    discriminator_loss,
    kl_per_dim,
    tc_from_logits,
)
from ..nets import Decoder, Discriminator, Encoder
from .networks import Networks


def algorithm2(nets, next_batch: Callable[[], torch.Tensor], gamma: float | torch.Tensor,
               same_batch: bool) -> dict[str, torch.Tensor]:
    """One FactorVAE iteration of one run, or of K runs at once: ``nets`` is a :class:`.networks.Networks`
    or a :class:`.batched.BatchedVAE`, ``gamma`` a number or one per member (K,). Shapes are one run's; K
    runs put a member axis in front of each, and every loss below is then (K,)."""
    # 1. VAE update on B1
    x = next_batch()  # (B, C, H, W)
    mu, logvar = nets.encode(x)
    z = nets.sample(mu, logvar)  # (B, D)
    recon = nets.each(bernoulli_nll, nets.decode_logits(z), x)
    kl_dims = nets.each(kl_per_dim, mu, logvar)  # (D,)
    kl = kl_dims.sum(-1)
    logits_q = nets.discriminate(z)  # (B, 2)
    tc = nets.each(tc_from_logits, logits_q)
    vae_loss = recon + kl + gamma * tc
    nets.zero_grad("vae")
    # the VAE parameters only: the TC term's gradient flows through D into the encoder, D's weights get
    # none; retain_graph keeps D's activations on z for the D loss below
    vae_loss.sum().backward(inputs=nets.params("vae"), retain_graph=True)
    nets.step("vae")

    # 2. discriminator update on z against permuted codes of an independent B2, encoded by the new encoder
    with torch.no_grad():
        z_other = z.detach() if same_batch else nets.sample(*nets.encode(next_batch()))
        z_perm = nets.permute(z_other)
    logits_perm = nets.discriminate(z_perm)
    d_loss = nets.each(discriminator_loss, logits_q, logits_perm)
    nets.zero_grad("discriminator")
    d_loss.sum().backward(inputs=nets.params("discriminator"))  # D only: the encoder gets nothing from it
    nets.step("discriminator")
    return {
        "loss": vae_loss.detach(),
        "recon": recon.detach(),
        "kl": kl.detach(),
        "kl_per_dim": kl_dims.detach(),
        "tc": tc.detach(),
        "d_loss": d_loss.detach(),
        "d_acc": nets.each(discriminator_accuracy, logits_q.detach(), logits_perm.detach()),
    }


class FactorVAE:
    kind = "vae"

    def __init__(self, config: Config, channels: int, generator: torch.Generator, device: torch.device) -> None:
        self.gamma = config.gamma
        self.same_batch = config.same_batch
        self.generator = generator
        self.encoder = Encoder(channels, config.latent_dim, config.width).to(device)
        self.decoder = Decoder(channels, config.latent_dim, config.width).to(device)
        self.discriminator = Discriminator(config.latent_dim, config.d_hidden, config.d_layers, config.d_slope).to(
            device
        )
        self.opt_vae = torch.optim.Adam([*self.encoder.parameters(), *self.decoder.parameters()], lr=config.lr,
                                        betas=config.adam_betas)
        self.opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=config.discriminator_lr,
                                      betas=config.adam_betas_d)
        self.modules = {"encoder": self.encoder, "decoder": self.decoder, "discriminator": self.discriminator}
        self.optimizers = {"vae": self.opt_vae, "discriminator": self.opt_d}
        self.nets = Networks(self.modules, self.optimizers, generator)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, logvar) of q(z|x); the representation the metrics score is mu."""
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Bernoulli means (B, C, H, W) in [0, 1]."""
        return torch.sigmoid(self.decoder(z))

    def train_step(self, next_batch: Callable[[], torch.Tensor]) -> dict[str, torch.Tensor]:
        return algorithm2(self.nets, next_batch, self.gamma, self.same_batch)
