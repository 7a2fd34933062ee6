"""Networks of the paper's appendix A (docs/paper.md §3): conv encoder, deconv decoder, TC discriminator.

The encoder and decoder are the same for every data set up to the number of image channels and the FC
width (128 on dSprites, 256 elsewhere). The discriminator is an MLP of ``layers`` hidden layers of
``hidden`` units with leaky ReLU and 2 output logits (class 0: "from q(z)", class 1: "from q̄(z)").
Stock PyTorch layers only. The fast paths that compute the same sums (memory layouts, the decoder's last
transposed conv, bf16 compute, the metrics' inference encoder) are chosen by ``kernels.for_device``,
which these classes do not see.
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
        return self.net(z)  # (B, 2)


def glorot_init(module: nn.Module) -> None:
    """Glorot-uniform weights and zero biases for every conv and linear layer of ``module``, in place.

    TensorFlow's layers (so the paper's code and disentanglement_lib) start this way; torch's own layer
    defaults (Kaiming-uniform with a = √5) give smaller weights. ``Config.init`` picks one (docs/config.md).
    """
    for layer in module.modules():
        if isinstance(layer, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.xavier_uniform_(layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


class Generator(nn.Module):
    """InfoWGAN-GP generator G(c, z) (paper §4; docs/paper.md §7): (c (B, D), z (B, N)) -> images in [0, 1].

    The VAE decoder's layout on the input concat(c, z), with a sigmoid so that samples live where the
    data does (pixels in [0, 1]) and can be compared with real images by the critic.
    """

    def __init__(self, channels: int = 1, latent_dim: int = 10, noise_dim: int = 64, width: int = 128) -> None:
        super().__init__()
        self.latent_dim, self.noise_dim = latent_dim, noise_dim
        self.body = Decoder(channels, latent_dim + noise_dim, width)  # same layers, wider input

    def forward(self, c: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.body(torch.cat([c, z], dim=1)))  # (B, C, 64, 64)


class Critic(nn.Module):
    """InfoWGAN-GP critic with its Q head: x (B, C, 64, 64) -> (score (B,), Q's mean of c (B, D)).

    The encoder's conv body and FC layer, without normalisation (a batch-wise layer would break the
    per-example gradient penalty of WGAN-GP). Two heads share that body: the Wasserstein critic score and
    the mean of Q(c|x), a factored Gaussian. Q's log-std is one number per code dimension: a learned
    parameter when ``q_std`` is None, else the constant log(q_std) kept as a buffer.
    """

    def __init__(
        self, channels: int = 1, latent_dim: int = 10, width: int = 128, q_std: float | None = None
    ) -> None:
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv2d(channels, 32, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(32, 32, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(32, 64, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(64, 64, 4, 2, 1), nn.ReLU(),
        )
        self.fc = nn.Sequential(nn.Linear(64 * 4 * 4, width), nn.ReLU())
        self.score_head = nn.Linear(width, 1)
        self.q_head = nn.Linear(width, latent_dim)
        if q_std is None:
            self.q_log_std = nn.Parameter(torch.zeros(latent_dim))  # starts at std 1
        else:
            self.register_buffer("q_log_std", torch.full((latent_dim,), float(q_std)).log())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.fc(self.convs(x).flatten(1))  # (B, width)
        return self.score_head(h).squeeze(1), self.q_head(h)  # (B,), (B, D)
