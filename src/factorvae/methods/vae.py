"""VAE and β-VAE (Higgins et al. 2017; paper §2): maximise E_q[log p(x|z)] − β·KL(q(z|x) ‖ p(z)).

Model "vae" is β = 1; "betavae" uses ``config.beta``. One Adam optimizer over encoder and decoder.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..config import Config
from ..losses import bernoulli_nll, kl_normal, reparameterize
from ..nets import Decoder, Encoder


class BetaVAE:
    kind = "vae"

    def __init__(self, config: Config, channels: int, generator: torch.Generator, device: torch.device) -> None:
        self.beta = 1.0 if config.model == "vae" else config.beta
        self.generator = generator
        self.encoder = Encoder(channels, config.latent_dim, config.width).to(device)
        self.decoder = Decoder(channels, config.latent_dim, config.width).to(device)
        self.vae_params = [*self.encoder.parameters(), *self.decoder.parameters()]
        self.opt_vae = torch.optim.Adam(self.vae_params, lr=config.lr, betas=config.adam_betas)
        self.modules = {"encoder": self.encoder, "decoder": self.decoder}
        self.optimizers = {"vae": self.opt_vae}

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, logvar) of q(z|x); the representation the metrics score is mu."""
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Bernoulli means (B, C, H, W) in [0, 1]."""
        return torch.sigmoid(self.decoder(z))

    def train_step(self, next_batch: Callable[[], torch.Tensor]) -> dict[str, torch.Tensor]:
        x = next_batch()  # (B, C, H, W) in [0, 1]
        mu, logvar = self.encoder(x)
        z = reparameterize(mu, logvar, self.generator)
        recon = bernoulli_nll(self.decoder(z), x)
        kl_dims = kl_normal(mu, logvar).mean(0)  # (D,) batch mean per dimension
        kl = kl_dims.sum()
        loss = recon + self.beta * kl
        self.opt_vae.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_vae.step()
        return {"loss": loss.detach(), "recon": recon.detach(), "kl": kl.detach(), "kl_per_dim": kl_dims.detach()}
