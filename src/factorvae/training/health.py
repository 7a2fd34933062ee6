"""Is a training state fit to be kept? The checks made before a checkpoint is called good (docs/paper.md §4).

A diverging run does not always show it in its VAE loss first: with a huge discriminator learning rate the
step that blows D's weights up to 1e30 still reports a finite loss (it was computed before the update),
and its checkpoint would hold those weights as "good". So training checks every number a step returns
(each method's losses: the VAE's, D's, the critic's, the gradient penalty...) at every step that writes,
and before writing a checkpoint also the parameters themselves and the optimizers' state.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

# A parameter this large means divergence, not learning: the paper's networks keep their weights within
# a few units (their inputs are in [0, 1], codes ~N(0, 1)), and a weight of 1e6 already makes the next
# layer's activations overflow-prone in float32. Optimizer state (Adam's squared gradients) is only
# required to be finite: summed-over-pixel losses make its values legitimately large.
PARAM_LIMIT = 1e6


def all_finite(numbers: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """One boolean tensor: every value of every number is finite (stays on the device: no sync)."""
    return torch.stack([torch.isfinite(v).all() for v in numbers.values()]).all()


def non_finite_names(numbers: Mapping[str, torch.Tensor]) -> list[str]:
    """The names of the numbers holding a NaN or an infinity (reads them back: call when failing)."""
    return [k for k, v in numbers.items() if not bool(torch.isfinite(v).all())]


def unfit_state(modules: Mapping[str, torch.nn.Module], optimizers: Mapping[str, torch.optim.Optimizer]) -> str | None:
    """Why these weights must not be saved as a good checkpoint, or None when they may."""
    problems = []
    for name, module in modules.items():
        bad = huge = 0
        for p in module.parameters():
            if not bool(torch.isfinite(p).all()):
                bad += 1
            elif p.numel() and float(p.detach().abs().max()) > PARAM_LIMIT:
                huge += 1
        if bad:
            problems.append(f"{name}: {bad} non-finite tensor(s)")
        if huge:
            problems.append(f"{name}: {huge} tensor(s) with weights above {PARAM_LIMIT:g}")
    for name, opt in optimizers.items():
        bad = sum(1 for state in opt.state.values() for v in state.values()
                  if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all()))
        if bad:
            problems.append(f"optimizer {name}: {bad} non-finite state tensor(s)")
    return "; ".join(problems) or None
