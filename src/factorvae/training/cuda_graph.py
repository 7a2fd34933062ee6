"""One training step captured as a CUDA graph and replayed (paper Algorithm 2).

Why: a FactorVAE iteration at the paper's batch of 64 is a few hundred small kernels (two encoder passes,
decoder, D on z and on permute_dims(z'), two backward passes, two fused Adam steps; counted from the
code, not profiled), each a few microseconds of GPU work, so eager PyTorch is bound by the host
launching them, not by the GPU. A
``torch.cuda.CUDAGraph`` records the whole iteration once and replays it as one launch. A
:class:`~factorvae.methods.batched.BatchedVAE` step is the same, times K (per-member losses, noise draws
and Adam steps), so it gains the most.

:func:`capture_step` captures one ``train_step`` of a VAE-family method (methods/vae.py,
methods/factorvae.py) or of a BatchedVAE, following torch's whole-network recipe:

- Warm-up steps run eagerly on a side stream first, so that Adam's lazily created moments and cuDNN's
  and cuBLAS's workspaces exist before capture (a zeros() of the moments captured in the graph would
  reset them at every replay). The method is then put back as it was before the warm-up: weights, Adam
  moments and step counts copied back in place (the graph holds their addresses), noise generators set
  back. Moments that did not exist yet are zeroed with step 0, which a fused Adam step treats exactly as
  fresh state.
- Every optimizer must be fused Adam (as the methods build them). Fused Adam keeps ``state["step"]`` on
  the device and its kernel ignores ``capturable`` (torch/optim/adam.py, ``_fused_adam``), so only
  ``Optimizer.step``'s capture check reads the flag: it is set True for the capture and put back after,
  the numbers and the optimizers' state dicts stay what they were. The learning rates are floats, baked
  into the graph: a schedule would need tensor rates.
- The methods draw reparameterisation noise and permute_dims from their own ``torch.Generator``, which a
  graph only advances when registered (``CUDAGraph.register_generator_state``, torch >= 2.4): each
  replay then reads the generator's current seed and offset and moves the offset on, so it draws new
  numbers, and eager steps after replays continue the same stream.
- ``next_batch()`` is called inside the step (twice for FactorVAE: B1, then B2 after the VAE update).
  Each call gets a static buffer of its own; :meth:`GraphedStep.__call__` fills them in that order from
  the caller's ``next_batch`` and replays. The data stream is the same as the eager step's, since
  drawing B2 does not depend on the update.
- ``zero_grad(set_to_none=True)`` and ``backward`` run inside the capture, so the gradients live in the
  graph's memory pool. The step's numbers come back as the same static tensors at every replay: clone
  what must outlive the next replay.
- A host sync inside the step cannot be captured: BatchedVAE keeps its (K,) γ/β tensor on the device
  (``weights``, built when the members are assembled), so the step copies nothing from the host.

Anything that stops the capture (not CUDA, an unsupported method or optimizer, torch without generator
registration, an op that is not capturable, out of memory) gives ``(None, reason)`` in one line instead
of raising, and leaves the method as it was.

Verified on CPU only (tests/test_cuda_graph.py): the refusals; that warm-up plus restore leaves a method
bit-identical to an untouched twin, fresh or mid-training, single or batched; and, with torch.cuda's
graph API stubbed, the orchestration (every generator registered, ``capturable`` set only while
capturing, a failed capture reported in one line with the method untouched). Untested, for want of a
GPU: the capture itself, that every op of the step is capturable, the speed-up, and the generator
behaviour above (read from torch's CUDAGeneratorImpl). tests/test_cuda_graph.py holds a GPU test
(graphed vs eager over 3 steps from the same state, weights, Adam state and generator offsets), and
benchmarks/gpu_oneshot.py measures it. The training loop does not use this module.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..methods.batched import BatchedVAE
from ..run.rundir import one_line

WARMUP_STEPS = 3  # torch's recipe uses a few eager iterations before capture


@dataclass
class GraphedStep:
    """A captured training step: fill ``inputs`` in order, replay, read ``outputs`` (static tensors)."""

    graph: torch.cuda.CUDAGraph
    inputs: list[torch.Tensor]  # one static minibatch buffer per next_batch() call of the step, in call order
    outputs: dict[str, torch.Tensor]  # the step's numbers, rewritten by every replay

    def __call__(self, next_batch: Callable[[], torch.Tensor]) -> dict[str, torch.Tensor]:
        """One training step, as ``method.train_step(next_batch)``: the batches are drawn first, in order."""
        for buffer in self.inputs:
            buffer.copy_(next_batch())
        self.graph.replay()
        return dict(self.outputs)


@dataclass
class _Parts:
    """What a step reads and changes: parameters, optimizers, noise generators, and the device."""

    params: list[torch.Tensor]
    optimizers: list[torch.optim.Optimizer]
    generators: list[torch.Generator]
    device: torch.device

    @classmethod
    def of(cls, method) -> _Parts:
        if isinstance(method, BatchedVAE):
            params = [p for group in method.stacked.values() for p in group.values()]
            optimizers = [o for member in method.optimizers for o in member.values()]
            return cls(params, optimizers, list(method.generators), method.device)
        params = [p for module in method.modules.values() for p in module.parameters()]
        return cls(params, list(method.optimizers.values()), [method.generator], params[0].device)


def unsupported(method) -> str | None:
    """Why ``method``'s step cannot be captured here, or None when it may be."""
    if not isinstance(method, BatchedVAE) and getattr(method, "kind", None) != "vae":
        return f"not captured: only VAE-family methods and BatchedVAE are supported, not {type(method).__name__}"
    parts = _Parts.of(method)
    for opt in parts.optimizers:
        if not isinstance(opt, torch.optim.Adam) or not all(g.get("fused") for g in opt.param_groups):
            return f"not captured: {type(opt).__name__} is not a fused Adam (its step would need capturable state)"
    if parts.device.type != "cuda" or not torch.cuda.is_available():
        return f"not CUDA: graph capture needs a CUDA device (the method is on {parts.device})"
    if not hasattr(torch.cuda.CUDAGraph, "register_generator_state"):
        return (f"not captured: torch {torch.__version__} has no CUDAGraph.register_generator_state (torch >= 2.4), "
                "so the methods' own noise generators would not advance between replays")
    return None


def _snapshot(parts: _Parts) -> tuple:
    params = [p.detach().clone() for p in parts.params]
    states = [{p: {k: v.clone() if torch.is_tensor(v) else v for k, v in opt.state[p].items()} if opt.state.get(p)
               else None for group in opt.param_groups for p in group["params"]} for opt in parts.optimizers]
    return params, states, [g.get_state() for g in parts.generators]


@torch.no_grad()
def _restore(parts: _Parts, saved: tuple) -> None:
    """Put the snapshot back in place: the same tensors (a captured graph holds their addresses)."""
    params, states, generators = saved
    for p, value in zip(parts.params, params, strict=True):
        p.copy_(value)
    for opt, state in zip(parts.optimizers, states, strict=True):
        for p, before in state.items():
            for key, now in opt.state.get(p, {}).items():
                if not torch.is_tensor(now):
                    opt.state[p][key] = before[key] if before else now
                elif before is None:  # created by the warm-up: zero moments and step 0 are fresh state
                    now.zero_()
                else:
                    now.copy_(before[key])
    for g, state in zip(parts.generators, generators, strict=True):
        g.set_state(state)


class _Feed:
    """``next_batch`` for warm-up and capture: call i of a step returns static buffer i. The first step
    creates the buffers (copies of ``example``); later steps must make as many calls."""

    def __init__(self, buffers: list[torch.Tensor], example: torch.Tensor | None) -> None:
        self.buffers, self.example, self.calls = buffers, example, 0

    def __call__(self) -> torch.Tensor:
        if self.calls == len(self.buffers):
            if self.example is None:
                raise RuntimeError(f"the step called next_batch() more than {len(self.buffers)} time(s)")
            self.buffers.append(self.example.clone())
        self.calls += 1
        return self.buffers[self.calls - 1]

    def check(self) -> None:
        if self.calls != len(self.buffers):
            raise RuntimeError(f"the step called next_batch() {self.calls} time(s), before {len(self.buffers)}")


def warm_up(method, example: torch.Tensor, steps: int = WARMUP_STEPS) -> list[torch.Tensor]:
    """``steps`` eager training steps on static buffers (copies of ``example``), on a side stream on CUDA.
    Returns the buffers, one per next_batch() call of a step. The steps change the method: train on."""
    buffers: list[torch.Tensor] = []
    cuda = example.device.type == "cuda"
    stream = torch.cuda.Stream(example.device) if cuda else None
    if stream is not None:
        stream.wait_stream(torch.cuda.current_stream(example.device))
    with torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext():
        for i in range(steps):
            feed = _Feed(buffers, example if i == 0 else None)
            method.train_step(feed)
            feed.check()
    if stream is not None:
        torch.cuda.current_stream(example.device).wait_stream(stream)
    return buffers


def capture_step(method, example: torch.Tensor, warmup: int = WARMUP_STEPS) -> tuple[GraphedStep | None, str]:
    """Capture one ``method.train_step`` in a CUDA graph. ``example``: one minibatch as ``next_batch()``
    returns it ((B, C, H, W), or (K, B, C, H, W) for a BatchedVAE), on the method's device; it only sizes
    the buffers and feeds the warm-up. Returns (the graphed step, "captured ...") or (None, the reason).
    The method's weights, Adam state and generators are as before the call either way."""
    reason = unsupported(method)
    if reason:
        return None, reason
    parts = _Parts.of(method)
    if example.device.type != parts.device.type:
        return None, f"not captured: the example batch is on {example.device}, the method on {parts.device}"
    saved = _snapshot(parts)
    flags = [(group, group.get("capturable", False)) for opt in parts.optimizers for group in opt.param_groups]
    graph, captured, stream = None, False, torch.cuda.current_stream(parts.device)
    try:  # on the method's device: registering a generator allocates its graph-side seed and offset there
        with torch.cuda.device(parts.device):
            buffers = warm_up(method, example, warmup)
            graph = torch.cuda.CUDAGraph()
            for generator in parts.generators:
                graph.register_generator_state(generator)
            for group, _ in flags:
                group["capturable"] = True  # read only by Optimizer.step's capture check (fused Adam)
            feed = _Feed(buffers, None)
            with torch.cuda.graph(graph):
                outputs = method.train_step(feed)
            feed.check()
            captured = True
    except Exception as exc:  # capture is best effort: the caller falls back to eager steps
        context = exc.__context__  # e.g. the op that broke the capture, when ending the capture raised too
        reason = f"capture failed: {one_line(exc)}" + (f" (while handling {one_line(context)})" if context else "")
        torch.cuda.set_stream(stream)  # torch.cuda.graph leaves its capture stream current if capture_end raises
    finally:
        for group, flag in flags:
            group["capturable"] = flag
        if not captured:
            for p in parts.params:
                p.grad = None  # not into a failed graph's memory
        _restore(parts, saved)
    if not captured:
        return None, reason
    message = f"captured after {warmup} warm-up step(s), {len(buffers)} input buffer(s)"
    return GraphedStep(graph, buffers, outputs), message
