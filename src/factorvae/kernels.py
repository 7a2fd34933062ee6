"""Fast paths of the paper's networks (appendix A; docs/performance.md), chosen in one place.

:func:`for_device` is the one function that makes a method fast on its device: ``methods.build_method``
calls it on every method it builds, and nets.py and the methods (their ``train_step`` included) are
written in stock PyTorch without knowing it. What it does, each equal to the plain computation up to
float rounding (tests/test_speed_equivalence.py compares each with the layer or step it replaces):

- on CPU, the decoder's stride-2 transposed convs to 1–3 channels become :class:`ImageDeconv` (the same
  parameters, a patch-sum forward);
- on CPU, conv weights are stored channels_last (NHWC), which changes layout only;
- every Adam is fused (one kernel over each tensor);
- ``precision="bf16"``: a training step computes the networks in bfloat16 (:func:`precision_scope`),
  with float32 weights, Adam states, network outputs, losses and logged numbers.
:class:`InferenceEncoder` is the metrics' fast encoder (``methods.inference_encode`` builds it).
"""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}  # config.PRECISIONS: None computes in the weights' float32


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
    """conv_transpose2d(x, weight, bias, stride=2, padding=1) for 4×4 kernels, summed as patches.

    The matmul runs in x's dtype (bf16 under ``precision="bf16"``), the overlap-add and the output in at
    least float32: the output is the decoder's logits, which the loss reads in float32 anyway."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        weight = weight.to(x.dtype)
        ctx.save_for_backward(x, weight)
        n, c_in, h, w = x.shape
        c_out = weight.shape[1]
        pixels = x.permute(0, 2, 3, 1).reshape(-1, c_in)  # (N·H·W, Cin); a view when x is channels_last
        # every input pixel's 4×4 output patch in one matmul: (Cout·16, N·H·W)
        patches = (weight.reshape(c_in, c_out * 16).t() @ pixels.t()).view(c_out, 4, 4, n, h, w)
        # (N, Cout, 4, 4, H, W), in float32: adds of bf16 into float32 convert at each of the 16 (slower)
        acc = torch.promote_types(x.dtype, torch.float32)
        patches = patches.permute(3, 0, 1, 2, 4, 5).to(acc)
        out = bias.to(acc).view(1, c_out, 1, 1, 1, 1).expand(n, c_out, h, 2, w, 2).contiguous()  # rows 2m+a, cols 2n+c
        for k, (a, di) in _TAP.items():
            i0, i1 = max(0, -di), min(h, h - di)  # input rows whose output row stays inside the image
            for t, (c, dj) in _TAP.items():
                j0, j1 = max(0, -dj), min(w, w - dj)
                out[:, :, i0 + di : i1 + di, a, j0 + dj : j1 + dj, c] += patches[:, :, k, t, i0:i1, j0:j1]
        return out.view(n, c_out, 2 * h, 2 * w)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        needs_x, needs_w, needs_b = ctx.needs_input_grad
        # torch's own transposed-conv backward (the one nn.ConvTranspose2d uses), which oneDNN runs fast, in
        # x's dtype (autograd casts the weight's gradient back to float32). The bias gradient is a sum of
        # grad_out, taken here in float32: asked of oneDNN too, it made the call ~1 ms slower in bf16.
        grad_x, grad_w, _ = torch.ops.aten.convolution_backward(
            grad_out.to(x.dtype), x, weight, [weight.shape[1]], [2, 2], [1, 1], [1, 1], True, [0, 0], 1,
            [needs_x, needs_w, False],
        )
        return grad_x, grad_w, grad_out.sum((0, 2, 3)) if needs_b else None


class ImageDeconv(nn.ConvTranspose2d):
    """A transposed conv 4×4, stride 2, padding 1 to 1–3 channels (the decoder's last layer, appendix A).

    Same parameters, state-dict keys and sum as ``nn.ConvTranspose2d(in_channels, C, 4, 2, 1)``; only the
    CPU forward differs. oneDNN runs a transposed conv with 1–3 output channels at ~5 GFLOP/s, which made
    this small layer 12 ms of a ~180 ms dSprites training step (docs/performance.md). Here one matmul gives
    every input pixel's 4×4 output patch and 16 shifted adds overlap the patches (≈ 3 ms); the backward
    is torch's. Float rounding differs from the stock layer by the order of the sum only.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(in_channels, out_channels, 4, 2, 1)

    @classmethod
    def replacing(cls, layer: nn.ConvTranspose2d) -> ImageDeconv:
        """The fast layer holding ``layer``'s own Parameter objects (an optimizer built on them still steps them)."""
        fast = cls(layer.in_channels, layer.out_channels)
        fast.weight, fast.bias = layer.weight, layer.bias
        return fast

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu":  # cuDNN's transposed conv has no such weak spot
            return super().forward(x)
        return _PatchDeconv.apply(x, self.weight, self.bias)


def _is_image_deconv(layer: nn.Module) -> bool:
    return (type(layer) is nn.ConvTranspose2d and layer.out_channels <= 3 and layer.bias is not None
            and (layer.kernel_size, layer.stride, layer.padding, layer.output_padding, layer.dilation, layer.groups)
            == ((4, 4), (2, 2), (1, 1), (0, 0), (1, 1), 1))


def _use_image_deconv(module: nn.Module) -> None:
    """Every stock 4×4 stride-2 transposed conv to 1–3 channels inside ``module`` becomes an ImageDeconv."""
    for parent in list(module.modules()):
        for name, child in parent.named_children():
            if _is_image_deconv(child):
                setattr(parent, name, ImageDeconv.replacing(child))


def _fuse(optimizer: torch.optim.Optimizer) -> None:
    """Run an Adam as torch's fused kernel: one pass over each tensor instead of ~7 elementwise ops (D holds
    5 M weights: 11.2 ms for-loop, 4.0 ms fused per step, docs/performance.md); the same update up to
    rounding. A checkpoint's optimizer state carries the flag, so a resumed run keeps it."""
    if type(optimizer) is torch.optim.Adam and not optimizer.defaults["differentiable"]:
        for group in [optimizer.defaults, *optimizer.param_groups]:
            group.update(fused=True, foreach=None)


# ---- precision --------------------------------------------------------------------------------------------


def precision_scope(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Where the networks compute in ``precision``: bf16 is torch's autocast, which runs convolutions and
    matmuls in bfloat16 (each float32 weight cast as it is used, the gradient cast back to float32) and
    leaves every other op in its inputs' dtype; fp32 changes nothing. The weight-cast cache is off: the
    optimizers step in place inside one training step, and Algorithm 2's B2 pass must see the new weights."""
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype, cache_enabled=False)


def _float32_outputs(module: nn.Module, inputs: tuple, output):
    """Forward hook: a network's outputs in float32, so that losses, sampling and logs stay float32."""
    if isinstance(output, tuple):
        return tuple(o.float() if torch.is_tensor(o) and o.is_floating_point() else o for o in output)
    return output.float() if torch.is_tensor(output) and output.is_floating_point() else output


def _in_precision(step: Callable, device: torch.device, precision: str) -> Callable:
    @functools.wraps(step)
    def train_step(next_batch):
        with precision_scope(device, precision):
            return step(next_batch)

    return train_step


_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
_warned: set[str] = set()


def cpu_bf16_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> list[str]:
    """The CPU's bf16 instruction flags (/proc/cpuinfo; empty elsewhere or when it cannot be read)."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return []
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return [f for f in _BF16_FLAGS if f in flags]


def _warn_without_bf16(device: torch.device) -> None:
    if device.type == "cpu" and not cpu_bf16_flags() and "bf16" not in _warned:
        _warned.add("bf16")
        print("precision=bf16: this CPU has no bf16 instructions (avx512_bf16 or amx_bf16); bf16 is emulated and "
              "may train slower than fp32", file=sys.stderr, flush=True)


# ---- the one place --------------------------------------------------------------------------------------


def for_device(method, device: torch.device, precision: str = "fp32"):
    """Make ``method`` (its ``modules``, ``optimizers`` and ``train_step``) fast on ``device``, in place.

    Called once, by ``methods.build_method``, before any training step and before any checkpoint is loaded.
    """
    for module in method.modules.values():
        if device.type == "cpu":
            _use_image_deconv(module)
            # oneDNN's convolutions run in NHWC: with NCHW weights every conv and its backward reorders in and
            # out, which made the encoder and decoder ~1.5× slower. On CUDA fp32 NCHW is cuDNN's home layout.
            module.to(memory_format=torch.channels_last)
        if PRECISIONS[precision] is not None:
            module.register_forward_hook(_float32_outputs)
    for optimizer in method.optimizers.values():
        _fuse(optimizer)
    if PRECISIONS[precision] is not None:
        _warn_without_bf16(device)
        method.train_step = _in_precision(method.train_step, device, precision)
    return method
