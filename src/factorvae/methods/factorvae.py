"""FactorVAE (paper §3, Algorithm 2): the VAE ELBO minus γ·TC(z), TC estimated by a discriminator.

One iteration, in the paper's order:
1. minibatch B1 -> z ~ q(z|x); VAE loss = recon + KL + γ·mean(logit_0(z) − logit_1(z)); step encoder and
   decoder. The TC term's gradient flows through D into the encoder, but D's weights are not updated
   here: ``backward(inputs=...)`` restricts the gradient to the VAE parameters, so D gets no stale grads.
2. an independent minibatch B2, encoded by the encoder just updated -> z' (no gradient), z̃ =
   permute_dims(z'); D loss = 0.5·[CE(D(z), 0) + CE(D(z̃), 1)] on z of step 1; step D. The encoder
   receives nothing from this loss: its backward is restricted to D's parameters.
``same_batch=True`` is disentanglement_lib's variant: z̃ = permute_dims(z) of B1, no second minibatch.

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
    kl_normal,
    permute_dims,
    reparameterize,
    tc_from_logits,
)
from ..nets import Decoder, Discriminator, Encoder


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
        self.vae_params = [*self.encoder.parameters(), *self.decoder.parameters()]
        self.d_params = list(self.discriminator.parameters())
        self.opt_vae = torch.optim.Adam(self.vae_params, lr=config.lr, betas=config.adam_betas)
        self.opt_d = torch.optim.Adam(self.d_params, lr=config.discriminator_lr, betas=config.adam_betas_d)
        self.modules = {"encoder": self.encoder, "decoder": self.decoder, "discriminator": self.discriminator}
        self.optimizers = {"vae": self.opt_vae, "discriminator": self.opt_d}

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, logvar) of q(z|x); the representation the metrics score is mu."""
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Bernoulli means (B, C, H, W) in [0, 1]."""
        return torch.sigmoid(self.decoder(z))

    def train_step(self, next_batch: Callable[[], torch.Tensor]) -> dict[str, torch.Tensor]:
        # 1. VAE update on B1
        x = next_batch()  # (B, C, H, W)
        mu, logvar = self.encoder(x)
        z = reparameterize(mu, logvar, self.generator)  # (B, D)
        recon = bernoulli_nll(self.decoder(z), x)
        kl_dims = kl_normal(mu, logvar).mean(0)  # (D,)
        kl = kl_dims.sum()
        logits_q = self.discriminator(z)  # (B, 2)
        tc = tc_from_logits(logits_q)
        vae_loss = recon + kl + self.gamma * tc
        self.opt_vae.zero_grad(set_to_none=True)
        # retain_graph keeps D's activations on z for the D loss below
        vae_loss.backward(inputs=self.vae_params, retain_graph=True)
        self.opt_vae.step()

        # 2. discriminator update on z against permuted codes of an independent B2
        with torch.no_grad():
            if self.same_batch:
                z_other = z.detach()
            else:
                mu2, logvar2 = self.encoder(next_batch())
                z_other = reparameterize(mu2, logvar2, self.generator)
            z_perm = permute_dims(z_other, self.generator)
        logits_perm = self.discriminator(z_perm)
        d_loss = discriminator_loss(logits_q, logits_perm)
        self.opt_d.zero_grad(set_to_none=True)
        d_loss.backward(inputs=self.d_params)  # D's weights only: the encoder gets nothing from this loss
        self.opt_d.step()
        return {
            "loss": vae_loss.detach(),
            "recon": recon.detach(),
            "kl": kl.detach(),
            "kl_per_dim": kl_dims.detach(),
            "tc": tc.detach(),
            "d_loss": d_loss.detach(),
            "d_acc": discriminator_accuracy(logits_q.detach(), logits_perm.detach()),
        }
