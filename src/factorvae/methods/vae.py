"""VAE and β-VAE (Higgins et al. 2017; paper §2): maximise E_q[log p(x|z)] − β·KL(q(z|x) ‖ p(z)).

Model "vae" is β = 1; "betavae" uses ``config.beta``. One Adam optimizer over encoder and decoder.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..config import Config
from ..losses import bernoulli_nll, kl_per_dim
from ..nets import Decoder, Encoder
from .networks import Networks


def betavae_step(nets, next_batch: Callable[[], torch.Tensor], beta: float | torch.Tensor) -> dict[str, torch.Tensor]:
    """One β-VAE iteration of one run, or of K runs at once (as :func:`.factorvae.algorithm2`): ``beta`` a
    number or one per member (K,). Shapes are one run's."""
    x = next_batch()  # (B, C, H, W) in [0, 1]
    mu, logvar = nets.encode(x)
    z = nets.sample(mu, logvar)
    recon = nets.each(bernoulli_nll, nets.decode_logits(z), x)
    kl_dims = nets.each(kl_per_dim, mu, logvar)  # (D,) batch mean per dimension
    kl = kl_dims.sum(-1)
    loss = recon + beta * kl
    nets.zero_grad("vae")
    loss.sum().backward(inputs=nets.params("vae"))  # summed over members: each member's gradient is its own
    nets.step("vae")
    return {"loss": loss.detach(), "recon": recon.detach(), "kl": kl.detach(), "kl_per_dim": kl_dims.detach()}


class BetaVAE:
    kind = "vae"

    def __init__(self, config: Config, channels: int, generator: torch.Generator, device: torch.device) -> None:
        self.beta = 1.0 if config.model == "vae" else config.beta
        self.generator = generator
        self.encoder = Encoder(channels, config.latent_dim, config.width).to(device)
        self.decoder = Decoder(channels, config.latent_dim, config.width).to(device)
        self.opt_vae = torch.optim.Adam([*self.encoder.parameters(), *self.decoder.parameters()], lr=config.lr,
                                        betas=config.adam_betas)
        self.modules = {"encoder": self.encoder, "decoder": self.decoder}
        self.optimizers = {"vae": self.opt_vae}
        self.nets = Networks(self.modules, self.optimizers, generator)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, logvar) of q(z|x); the representation the metrics score is mu."""
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Bernoulli means (B, C, H, W) in [0, 1]."""
        return torch.sigmoid(self.decoder(z))

    def train_step(self, next_batch: Callable[[], torch.Tensor]) -> dict[str, torch.Tensor]:
        return betavae_step(self.nets, next_batch, self.beta)
