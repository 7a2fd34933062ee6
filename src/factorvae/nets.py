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



class InferenceEncoder:
    """Inference-only copy of an :class:`Encoder` for the metrics (§5): x (n, C, 64, 64) -> (mu, logvar).

    The metrics encode 10^5–10^6 images per evaluation. Eager PyTorch runs this encoder at about 4,800
    images/s on the 2-core CPU (channels_last, any batch size); converting activations between layouts
    around every conv is much of that. Here, on CPU, the activations stay in oneDNN's blocked layout through
    all four convs, the conv weights are reordered into it once, and images go through in chunks of 128
    whose activations stay in cache: about 12,000 images/s (benchmarks/metrics_speed.py,
    docs/performance.md). Same weights and the same sums as the module; oneDNN may order a sum differently,
    so results agree to float rounding. The weights are copied when this object is built (~0.5 ms): build a
    new one after further training. Off the CPU, or without oneDNN, it calls the module itself.
    """

    CHUNK = 128  # images per oneDNN pass: 64–128 measured fastest, 256+ falls out of cache (~7,500/s)

    def __init__(self, encoder: Encoder) -> None:
        self.encoder = encoder
        weight = next(encoder.parameters())
        on_cpu = weight.device.type == "cpu" and weight.dtype == torch.float32
        self.fast = on_cpu and torch.backends.mkldnn.is_available()
        self.layers: list[tuple[torch.Tensor, torch.Tensor, list[int], list[int], list[int], int, bool]] = []
        if not self.fast:
            return
        modules = list(encoder.convs)
        with torch.no_grad():
            for i, conv in enumerate(modules):
                if isinstance(conv, nn.ReLU):
                    continue
                if not isinstance(conv, nn.Conv2d) or not isinstance(conv.padding, tuple):
                    raise TypeError(f"InferenceEncoder supports Conv2d/ReLU stacks, found {type(conv).__name__}")
                args = list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups
                w = torch._C._nn.mkldnn_reorder_conv2d_weight(conv.weight.detach().contiguous().to_mkldnn(), *args)
                relu = i + 1 < len(modules) and isinstance(modules[i + 1], nn.ReLU)
                self.layers.append((w, conv.bias.detach().to_mkldnn(), *args, relu))

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # no_grad rather than inference_mode: the codes stay usable in autograd graphs (e.g. as a D input)
        with torch.no_grad():
            if not self.fast:
                return self.encoder(x)
            x = x.to(torch.float32).contiguous()
            h = torch.cat([self._convs(x[i : i + self.CHUNK]) for i in range(0, len(x), self.CHUNK)])
            mu, logvar = self.encoder.fc(h).chunk(2, dim=1)
            return mu, logvar

    def _convs(self, x: torch.Tensor) -> torch.Tensor:
        h = x.to_mkldnn()
        for w, b, padding, stride, dilation, groups, relu in self.layers:
            h = torch.mkldnn_convolution(h, w, b, padding, stride, dilation, groups)
            if relu:
                h = torch.relu_(h)
        return h.to_dense().flatten(1)  # (n, 1024) in NCHW order, as Encoder.forward flattens

# Where each 4×4 kernel tap of a stride-2, padding-1 transposed conv lands: input row i with tap k
# feeds output row 2i − 1 + k = 2(i + shift) + parity, so tap k -> (parity, shift).
_TAP = {0: (1, -1), 1: (0, 0), 2: (1, 0), 3: (0, 1)}


class _PatchDeconv(torch.autograd.Function):
    """conv_transpose2d(x, weight, bias, stride=2, padding=1) for 4×4 kernels, summed as patches."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        n, c_in, h, w = x.shape
        c_out = weight.shape[1]
        pixels = x.permute(0, 2, 3, 1).reshape(-1, c_in)  # (N·H·W, Cin); a view when x is channels_last
        # every input pixel's 4×4 output patch in one matmul: (Cout·16, N·H·W)
        patches = (weight.reshape(c_in, c_out * 16).t() @ pixels.t()).view(c_out, 4, 4, n, h, w)
        patches = patches.permute(3, 0, 1, 2, 4, 5)  # (N, Cout, 4, 4, H, W)
        out = bias.view(1, c_out, 1, 1, 1, 1).expand(n, c_out, h, 2, w, 2).contiguous()  # rows 2m+a, cols 2n+c
        for k, (a, di) in _TAP.items():
            i0, i1 = max(0, -di), min(h, h - di)  # input rows whose output row stays inside the image
            for t, (c, dj) in _TAP.items():
                j0, j1 = max(0, -dj), min(w, w - dj)
                out[:, :, i0 + di : i1 + di, a, j0 + dj : j1 + dj, c] += patches[:, :, k, t, i0:i1, j0:j1]
        return out.view(n, c_out, 2 * h, 2 * w)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        # torch's own transposed-conv backward (the one nn.ConvTranspose2d uses), which oneDNN runs fast
        return torch.ops.aten.convolution_backward(
            grad_out, x, weight, [weight.shape[1]], [2, 2], [1, 1], [1, 1], True, [0, 0], 1,
            list(ctx.needs_input_grad),
        )


class ImageDeconv(nn.ConvTranspose2d):
    """The decoder's last layer: transposed conv 4×4, stride 2, to the image's C channels (appendix A).

    Same parameters, state-dict keys and sum as ``nn.ConvTranspose2d(in_channels, C, 4, 2, 1)``; only the
    CPU forward differs. oneDNN runs a transposed conv with 1–3 output channels at ~5 GFLOP/s, which made
    this small layer 12 ms of a ~180 ms dSprites training step (docs/performance.md). Here one matmul gives
    every input pixel's 4×4 output patch and 16 shifted adds overlap the patches (≈ 3 ms); the backward
    is torch's. Float rounding differs from the stock layer by the order of the sum only.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(in_channels, out_channels, 4, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu":  # cuDNN's transposed conv has no such weak spot
            return super().forward(x)
        return _PatchDeconv.apply(x, self.weight, self.bias)


def channels_last_on_cpu(module: nn.Module, device: torch.device) -> nn.Module:
    """Move a conv net to ``device``; on CPU also store its conv weights channels_last (NHWC).

    oneDNN's convolutions run in NHWC; with NCHW weights every conv and its backward reorders in and out,
    which made the encoder and decoder ~1.5× slower (docs/performance.md). Activations follow the weights'
    layout. On CUDA fp32 NCHW is cuDNN's home layout, so nothing changes there.
    """
    module = module.to(device)
    return module.to(memory_format=torch.channels_last) if device.type == "cpu" else module


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
            ImageDeconv(32, channels),
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
        # The same layers, run feature-major: h is (features, B), so each layer is W·h + b. At B = 64, MKL
        # splits (1000 × 64) products across threads better than (64 × 1000) ones: ~10% less time in D's
        # forward and backward matmuls on 2 cores (docs/performance.md).
        h = z.t()  # (D, B)
        for layer in self.net:
            h = torch.addmm(layer.bias[:, None], layer.weight, h) if isinstance(layer, nn.Linear) else layer(h)
        return h.t()  # (B, 2)


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
    """InfoWGAN-GP generator G(c, z) (paper §4; paper-notes §7): (c (B, D), z (B, N)) -> images in [0, 1].

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
