"""K runs of one VAE-family method trained as one batched model (paper §3, Algorithm 2).

A sweep trains the same networks many times, differing only in seed and in γ (FactorVAE) or β (β-VAE,
VAE). :class:`BatchedVAE` holds K such members: every parameter of the single method's networks is
stacked along a new leading member axis (K, ...), and the loss is the sum of the members' losses, so each
member's gradient is its own (d sum / d loss_k = 1 exactly). Each member keeps its own random streams:
initial weights drawn as its single run draws them (``torch.manual_seed(seed)``, then ``build_method``),
minibatches from its own numpy sampler (the caller's ``batches``), reparameterisation noise and
permute_dims from its own ``torch.Generator`` in its single run's order. Each member has its own fused
Adam over its slices of the stack. Adam is elementwise, but the CPU fused kernel vectorises all of a
tensor except its tail, so one step over the whole stack rounds the elements near a member's slice end
differently (measured: a first differing bit after 37 steps); per-member optimizers also keep each
member's step count, and their state dicts are the single run's as they are.

The networks run in one of two modes:
- "loop" (the default on CPU): member by member through the single networks' own forward
  (``torch.func.functional_call`` on views of the stack, which keep the single run's strides), so the
  same kernels run: weights, Adam state and numbers are bit-identical to the single run's.
- "grouped" (the default elsewhere): written directly, convolutions with the K members folded into the
  channels (groups=K) and linear layers as batched matmuls (``torch.baddbmm``): a few large kernels
  instead of K small ones; the same as the single runs up to float rounding (tests/test_batched.py).
Measured on our 2-core CPU (1 thread, beside a running sweep; K = 4, batch 64, forward + backward per
network): ``torch.vmap(functional_call)`` took 450–490 ms for the encoder, 545–565 ms for the decoder and
175–185 ms for D; grouped convolutions (channels_last) and bmm took 315–400, 435–470 and 170–180 ms. So
grouped beat vmap, which also folds convs into groups but in NCHW, and vmap is not kept. K separate
networks took 250, 265 and 205 ms, though: oneDNN's grouped convolutions are slower than K small ones,
and whole steps ran at 0.87–1.04× the sequential runs (benchmarks/batched_speed.py, K = 1–8), "loop"
at 0.97–1.01×. A CPU gains nothing from batching; a GPU, where one batch-64 run leaves most of the
device idle, should, but it is unmeasured here (run the benchmark with ``--device cuda``).
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ..config import BATCHED_MODELS, Config
from ..kernels import precision_scope
from ..losses import permute_dims, reparameterize
from . import build_method
from .factorvae import algorithm2
from .networks import OPTIMIZED
from .vae import betavae_step

MODELS = BATCHED_MODELS  # declared with the other model names in config.py
MODES = ("grouped", "loop")
VARYING = ("seed", "gamma", "beta")  # the only settings in which members may differ

MemberState = dict[str, dict[str, dict]]  # {"modules": {name: state_dict}, "optimizers": {name: state_dict}}


def check_members(configs: Sequence[Config]) -> None:
    """Refuse member configs that cannot share one batched model (one-line ValueError)."""
    if not configs:
        raise ValueError("a batched model needs at least one member config")
    if configs[0].model not in MODELS:
        raise ValueError(f"batched training supports {', '.join(MODELS)}, not '{configs[0].model}'")
    base = {k: v for k, v in configs[0].to_dict().items() if k not in VARYING}
    for k, config in enumerate(configs[1:], 1):
        other = {key: v for key, v in config.to_dict().items() if key not in VARYING}
        diff = sorted(key for key in base if base[key] != other[key])
        if diff:
            raise ValueError(f"batched members may differ only in {', '.join(VARYING)}; member {k} also differs "
                             f"from member 0 in {', '.join(diff)}")


class BatchedVAE:
    """K members of one model ("factorvae", "betavae" or "vae") on one data set, trained in lockstep.

    ``states`` (one :meth:`member_state`-shaped dict per member, e.g. read from the members' checkpoints)
    replaces the initial weights and optimizer states: the resume path, and how :meth:`drop` rebuilds.
    The constructor leaves torch's global RNG as it found it; ``init_rng_states[k]`` is the CPU global
    state member k's single run holds after building its networks (what its checkpoint saves as
    ``torch_global_rng`` while no evaluation draws from it), or None when built from ``states``.
    """

    def __init__(
        self, configs: Sequence[Config], channels: int, generators: Sequence[torch.Generator],
        device: torch.device, states: Sequence[MemberState] | None = None, mode: str | None = None,
    ) -> None:
        check_members(configs)
        if len(generators) != len(configs) or (states is not None and len(states) != len(configs)):
            raise ValueError(f"{len(configs)} member configs need as many generators (got {len(generators)})"
                             + ("" if states is None else f" and states (got {len(states)})"))
        self.mode = mode or ("loop" if device.type == "cpu" else "grouped")
        if self.mode not in MODES:
            raise ValueError(f"unknown batched mode '{self.mode}'; choose one of: {', '.join(MODES)}")
        self.configs, self.generators, self.device = list(configs), list(generators), device
        self.channels = channels
        self.model = configs[0].model
        self.same_batch = configs[0].same_batch
        methods, self.init_rng_states = self._build_members(states is None)
        self.template = methods[0]  # architecture (layers, state-dict layouts) shared by all members
        if states is None:
            states = [{"modules": {n: m.state_dict() for n, m in method.modules.items()},
                       "optimizers": {n: o.state_dict() for n, o in method.optimizers.items()}}
                      for method in methods]
        self._assemble(states)

    def _build_members(self, all_members: bool) -> tuple[list, list[torch.Tensor] | None]:
        """Each member's single method, built exactly as its single run builds it (the template only,
        when the weights come from states); the global RNG is restored afterwards."""
        cpu_state = torch.get_rng_state()
        on_cuda = self.device.type == "cuda" or torch.cuda.is_initialized()
        cuda_states = torch.cuda.get_rng_state_all() if on_cuda else None
        methods, rng_states = [], []
        count = self.size if all_members else 1
        try:
            for config, generator in zip(self.configs[:count], self.generators[:count], strict=True):
                torch.manual_seed(config.seed)  # network initialisation, as the single run's Run does
                methods.append(build_method(config, self.channels, generator, self.device))
                rng_states.append(torch.get_rng_state())
        finally:  # manual_seed reseeds the CPU and every CUDA device
            torch.set_rng_state(cpu_state)
            if cuda_states is not None:
                torch.cuda.set_rng_state_all(cuda_states)
        return methods, rng_states if all_members else None

    @property
    def size(self) -> int:
        """K, the number of members."""
        return len(self.configs)

    def _loss_weights(self) -> torch.Tensor:
        """γ (FactorVAE) or β per member (K,), the only loss settings in which members differ; built once
        per assembly, since a copy from a Python list at every step would stall a GPU's queue."""
        if self.model == "factorvae":
            values = [c.gamma for c in self.configs]
        else:  # model "vae" is β = 1, as methods/vae.py
            values = [1.0 if c.model == "vae" else c.beta for c in self.configs]
        return torch.tensor(values, dtype=torch.float32, device=self.device)

    # ---- stacked parameters, per-member optimizers ------------------------------------------------------

    def _assemble(self, states: Sequence[MemberState]) -> None:
        """(K, ...) parameters, each member's optimizers over its slices, then every member's state."""
        self.weights = self._loss_weights()  # (K,)
        self.stacked: dict[str, dict[str, nn.Parameter]] = {
            name: {p: nn.Parameter(_stack_like(t, self.size)) for p, t in module.state_dict().items()}
            for name, module in self.template.modules.items()
        }
        with torch.no_grad():  # leaf views: member k's tensors, as its optimizers see them
            self._slices = [{name: {p: t[k] for p, t in params.items()} for name, params in self.stacked.items()}
                            for k in range(self.size)]
        # one Adam per member, built as the template's (fused, by kernels.for_device), over the single run's
        # tensor shapes: a fused step over the whole stack rounds some elements differently (the CPU kernel
        # vectorises all but a tail of each tensor, so where a member's slice ends differs), and per-member
        # step counts stay exact
        self.optimizers: list[dict[str, torch.optim.Optimizer]] = [
            {name: type(opt)(self._member_params(k, name), **opt.defaults)
             for name, opt in self.template.optimizers.items()}
            for k in range(self.size)
        ]
        for k, state in enumerate(states):
            self.load_member_state(k, **state)

    def _member_params(self, k: int, name: str) -> list[torch.Tensor]:
        """Member k's slices that optimizer ``name`` steps, in the single method's order."""
        return [t for module in OPTIMIZED[name] for t in self._slices[k][module].values()]

    # ---- what a step sees (methods/networks.py): the single run's members with a member axis -------------

    def params(self, name: str) -> list[nn.Parameter]:
        """The stacked parameters optimizer ``name`` steps (the backward's inputs)."""
        return [p for module in OPTIMIZED[name] for p in self.stacked[module].values()]

    def zero_grad(self, name: str) -> None:
        for p in self.params(name):
            p.grad = None

    def step(self, name: str) -> None:
        """Every member's optimizer ``name`` on its slice of the stacked gradients."""
        for k, optimizers in enumerate(self.optimizers):
            for view, p in zip(self._member_params(k, name), self.params(name), strict=True):
                view.grad = None if p.grad is None else p.grad[k]
            optimizers[name].step()

    def sample(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """z ~ q(z|x) (K, B, D), member k's noise from member k's generator (one draw each, as its run)."""
        return self.each_drawing(reparameterize, mu, logvar)

    def permute(self, z: torch.Tensor) -> torch.Tensor:
        """permute_dims per member (K, B, D), member k's permutations from member k's generator."""
        return self.each_drawing(permute_dims, z)

    def each_drawing(self, fn: Callable[..., torch.Tensor], *args: torch.Tensor) -> torch.Tensor:
        """fn(member's tensors..., member's generator) for every member, stacked."""
        return torch.stack([fn(*member, g) for *member, g in zip(*args, self.generators, strict=True)])

    @staticmethod
    def each(fn: Callable[..., torch.Tensor], *args: torch.Tensor) -> torch.Tensor:
        """fn on each member's slices, stacked: (K, ...). The single run's own loss functions, called as it
        calls them: vmapped, bernoulli_nll's backward rounds differently (measured)."""
        return torch.stack([fn(*member) for member in zip(*args, strict=True)])

    def member_state(self, k: int) -> MemberState:
        """Member k as the single method's checkpoint holds it: ``{"modules": {"encoder": state_dict, ...},
        "optimizers": {"vae": state_dict, ...}}``; copies, with the single run's strides."""
        modules = {}
        with torch.no_grad():
            for name, module in self.template.modules.items():
                sd = OrderedDict((p, t.clone()) for p, t in self._slices[k][name].items())
                sd._metadata = module.state_dict()._metadata  # type: ignore[attr-defined]  # torch's versions
                modules[name] = sd
        optimizers = {name: copy.deepcopy(opt.state_dict()) for name, opt in self.optimizers[k].items()}
        return {"modules": modules, "optimizers": optimizers}

    def load_member_state(self, k: int, modules: dict[str, dict], optimizers: dict[str, dict]) -> None:
        """Put a single run's states (:meth:`member_state`'s format, e.g. its checkpoint's) into member k."""
        for name, sd in modules.items():
            if list(sd) != list(self.stacked[name]):
                raise ValueError(f"member {k}'s {name} state does not match the {self.model} networks")
        with torch.no_grad():
            for name, sd in modules.items():
                for p, value in sd.items():
                    self._slices[k][name][p].copy_(value)
        for name, state in optimizers.items():
            opt = self.optimizers[k][name]
            opt.load_state_dict(state)
            for view, moments in opt.state.items():
                for key, value in moments.items():
                    # own copies (load_state_dict keeps the caller's tensors), laid out as the parameter:
                    # the fused CPU kernel pairs elements by memory order, so an NCHW moment of a
                    # channels_last weight (a CUDA checkpoint) would be applied to the wrong elements
                    moments[key] = value.clone() if key == "step" else torch.empty_like(view).copy_(value)

    def drop(self, k: int) -> None:
        """Remove member k (e.g. its loss turned non-finite); the others go on exactly as before.

        Members keep their order, those after k move down by one. The stacked tensors are rebuilt from
        the other members' states, so every remaining member's weights, Adam moments and step count carry
        over unchanged, and member k costs no more compute. (Masking member k instead would still draw
        from its random streams and spend its forward and backward.)
        """
        keep = [j for j in range(self.size) if j != k]
        if not keep:
            raise ValueError("cannot drop the last member of a batched model")
        states = [self.member_state(j) for j in keep]
        self.configs = [self.configs[j] for j in keep]
        self.generators = [self.generators[j] for j in keep]
        if self.init_rng_states is not None:
            self.init_rng_states = [self.init_rng_states[j] for j in keep]
        self._assemble(states)

    # ---- the networks on K members at once ------------------------------------------------------------

    def _members(self, name: str) -> list[dict[str, torch.Tensor]]:
        """Member k's parameters of module ``name`` as differentiable views (unbind: one backward node).
        The stack keeps the single run's strides per member (channels_last convs on CPU), which pick
        oneDNN's kernel: the same kernel as the single run, so the same rounding."""
        slices = [p.unbind(0) for p in self.stacked[name].values()]
        return [dict(zip(self.stacked[name], ts, strict=True)) for ts in zip(*slices, strict=True)]

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (K, B, C, H, W) -> (mu, logvar), each (K, B, D)."""
        if self.mode == "loop":
            codes = self._each("encoder", x)
            return torch.stack([c[0] for c in codes]), torch.stack([c[1] for c in codes])
        n, b = x.shape[:2]
        p, enc = self.stacked["encoder"], self.template.encoder
        h = _conv_stack(enc.convs, "convs", p, _fold(x), n)  # (B, K·64, 4, 4)
        h = _linear_stack(enc.fc, "fc", p, h.reshape(b, n, -1).transpose(0, 1))  # (K, B, 2D)
        mu, logvar = h.float().chunk(2, dim=2)  # float32 outputs, as the single networks' in bf16
        return mu, logvar

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        """z (K, B, D) -> Bernoulli logits (K, B, C, H, W)."""
        if self.mode == "loop":
            return torch.stack(self._each("decoder", z))
        n, b = z.shape[:2]
        p, dec = self.stacked["decoder"], self.template.decoder
        h = _linear_stack(dec.fc, "fc", p, z)  # (K, B, 64·4·4)
        h = _conv_stack(dec.deconvs, "deconvs", p, _fold(h.view(n, b, dec.deconvs[0].in_channels, 4, 4)), n)
        return h.float().reshape(b, n, self.channels, *h.shape[2:]).transpose(0, 1)  # (K, B, C, H, W)

    def discriminate(self, z: torch.Tensor) -> torch.Tensor:
        """z (K, B, D) -> D's 2 logits (K, B, 2)."""
        if self.mode == "loop":
            return torch.stack(self._each("discriminator", z))
        return _linear_stack(self.template.discriminator.net, "net", self.stacked["discriminator"], z).float()

    def _each(self, name: str, inputs: torch.Tensor) -> list:
        """Member k's input through the single module ``name`` with member k's weights, for every k."""
        module = self.template.modules[name]
        return [functional_call(module, p, (h,)) for p, h in zip(self._members(name), inputs, strict=True)]

    # ---- Algorithm 2 (FactorVAE) and the β-VAE step: the single run's own code, on K members ------------

    def train_step(self, batches: Callable[[], torch.Tensor]) -> dict[str, torch.Tensor]:
        """One iteration of every member; ``batches()`` gives each member's minibatch (K, B, C, H, W).
        Returns the single method's numbers with a leading member axis (kl_per_dim: (K, D))."""
        with precision_scope(self.device, self.configs[0].precision):  # as the single method's train_step
            if self.model == "factorvae":
                return algorithm2(self, batches, self.weights, self.same_batch)
            return betavae_step(self, batches, self.weights)


def _stack_like(t: torch.Tensor, n: int) -> torch.Tensor:
    """Zeros (n, *t.shape) in which every [k] has t's strides (t is dense: contiguous or channels_last)."""
    return torch.empty_strided((n, *t.shape), (t.numel(), *t.stride()), dtype=t.dtype, device=t.device).zero_()


def _fold(h: torch.Tensor) -> torch.Tensor:
    """(K, B, C, H, W) -> (B, K·C, H, W): member k's channels are group k of a grouped conv. Channels_last
    on CPU, where oneDNN runs convs in NHWC (measured 10–30% faster here); NCHW is cuDNN's home layout."""
    n, b, c = h.shape[:3]
    h = h.transpose(0, 1).reshape(b, n * c, *h.shape[3:])
    return h.contiguous(memory_format=torch.channels_last) if h.device.type == "cpu" else h.contiguous()


def _conv_stack(layers: nn.Sequential, prefix: str, p: dict[str, nn.Parameter], h: torch.Tensor,
                n: int) -> torch.Tensor:
    """h (B, K·C, H, W) through a single net's conv layers, each member's weights one group of K."""
    for i, layer in enumerate(layers):
        if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)):
            # stacked (K, out, in, k, k) / transposed (K, in, out, k, k) -> grouped layout (K·out|K·in, ...)
            w, b = p[f"{prefix}.{i}.weight"].flatten(0, 1), p[f"{prefix}.{i}.bias"].flatten()
            if isinstance(layer, nn.Conv2d):
                h = F.conv2d(h, w, b, layer.stride, layer.padding, layer.dilation, groups=n)
            else:
                h = F.conv_transpose2d(h, w, b, layer.stride, layer.padding, layer.output_padding, groups=n,
                                       dilation=layer.dilation)
        else:  # ReLU: elementwise, the same on any layout
            h = layer(h)
    return h


def _linear_stack(layers: nn.Sequential, prefix: str, p: dict[str, nn.Parameter], h: torch.Tensor) -> torch.Tensor:
    """h (K, B, F) through a single net's linear layers, as batched matmuls: h·Wᵀ + b per member."""
    for i, layer in enumerate(layers):
        if isinstance(layer, nn.Linear):
            w, b = p[f"{prefix}.{i}.weight"], p[f"{prefix}.{i}.bias"]  # (K, out, in), (K, out)
            h = torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))  # (K, B, out)
        else:  # ReLU, LeakyReLU
            h = layer(h)
    return h
