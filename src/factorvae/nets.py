"""Networks of the paper's appendix A (paper-notes §3): conv encoder, deconv decoder, TC discriminator.

The encoder and decoder are the same for every data set up to the number of image channels and the FC
width (128 on dSprites, 256 elsewhere). The discriminator is an MLP of ``layers`` hidden layers of
``hidden`` units with leaky ReLU and 2 output logits (class 0: "from q(z)", class 1: "from q̄(z)").
"""

from __future__ import annotations

import torch
from torch import nn


class Encoder(nn.Module):
    """x (B, C, 64, 64) -> (mu, logvar), each (B, D). Four 4×4 stride-2 convs: 64 -> 32 -> 16 -> 8 -> 4."""

    def __init__(self, channels: int = 1, latent_dim: int = 10, width: int = 128) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.convs = nn.Sequential(
            nn.Conv2d(channels, 32, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(32, 32, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(32, 64, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(64, 64, 4, 2, 1), nn.ReLU(),
        )
        self.fc = nn.Sequential(nn.Linear(64 * 4 * 4, width), nn.ReLU(), nn.Linear(width, 2 * latent_dim))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.convs(x).flatten(1)  # (B, 1024)
        mu, logvar = self.fc(h).chunk(2, dim=1)  # (B, D) each
        return mu, logvar


class Decoder(nn.Module):
    """z (B, D) -> Bernoulli logits (B, C, 64, 64). Mirror of the encoder with transposed convs."""

    def __init__(self, channels: int = 1, latent_dim: int = 10, width: int = 128) -> None:
        super().__init__()
        self.fc = nn.Sequential(
            nn.Linear(latent_dim, width), nn.ReLU(), nn.Linear(width, 64 * 4 * 4), nn.ReLU()
        )
        self.deconvs = nn.Sequential(
            nn.ConvTranspose2d(64, 64, 4, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(64, 32, 4, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(32, 32, 4, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(32, channels, 4, 2, 1),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.fc(z).view(-1, 64, 4, 4)  # (B, 64, 4, 4)
        return self.deconvs(h)  # (B, C, 64, 64) logits


class Discriminator(nn.Module):
    """z (B, D) -> 2 logits (B, 2). TC ≈ mean(logit_0 − logit_1) by the density-ratio trick (paper §3)."""

    def __init__(self, latent_dim: int = 10, hidden: int = 1000, layers: int = 6, slope: float = 0.2) -> None:
        super().__init__()
        mods: list[nn.Module] = []
        width_in = latent_dim
        for _ in range(layers):
            mods += [nn.Linear(width_in, hidden), nn.LeakyReLU(slope)]
            width_in = hidden
        mods.append(nn.Linear(width_in, 2))
        self.net = nn.Sequential(*mods)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)
