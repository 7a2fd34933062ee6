"""CPU fast paths of the paper's networks (appendix A; docs/performance.md), each equal to a plain layer.

- :class:`InferenceEncoder` equals ``nets.Encoder.forward`` (inference only, for the metrics of §5),
  tested in tests/test_speed_equivalence.py against the module;
- :class:`ImageDeconv` equals ``nn.ConvTranspose2d(in, C, 4, 2, 1)`` (the decoder's last layer), forward
  and backward, tested there too;
- :func:`channels_last_on_cpu` stores conv weights NHWC on CPU, which changes layout only.
Each agrees with its plain layer to float rounding (the order of a sum); off the CPU each is the plain layer.
"""

from __future__ import annotations

import torch
from torch import nn


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

    def __init__(self, encoder: nn.Module) -> None:  # a nets.Encoder: .convs (Conv2d/ReLU), .fc
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
