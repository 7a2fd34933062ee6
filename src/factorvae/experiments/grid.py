"""A sweep's grid: the (setting, seed) cells of the paper's β / γ studies (paper §4.1; docs/paper.md §4).

:func:`make_grid` turns a model, the values of its weight (γ for FactorVAE, β for β-VAE) and seeds into
:class:`RunSpec` cells, each named like ``factorvae-gamma40-s0``; :class:`EvalPlan` says what each run is
scored with and how often. The sweep driver (:mod:`.sweep`) and the workers (:mod:`.worker`) both read them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..config import BATCHED_MODELS, ConfigError, make_config

PARAM = {"factorvae": "gamma", "betavae": "beta"}  # the weight each model's grid varies (paper §4.1)
DEFAULT_METRICS = ("factorvae", "tc")  # what the trade-off table needs: the paper's metric and true TC


@dataclass(frozen=True)
class RunSpec:
    """One (setting, seed) cell of a grid: a run directory name and the config overrides that make it."""

    name: str
    model: str
    param: str | None
    value: float | None
    seed: int
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EvalPlan:
    """What to score, how, and how often (0: only at the end)."""

    metrics: tuple[str, ...] = DEFAULT_METRICS
    protocol: str = "paper"
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    every: int = 0


def _num(value: float) -> str:
    return f"{value:g}"


def run_name(model: str, param: str | None, value: float | None, seed: int) -> str:
    setting = f"-{param}{_num(value)}" if param and value is not None else ""
    return f"{model}{setting}-s{seed}"


def make_grid(
    model: str, values: Sequence[float] | None, seeds: int | Sequence[int], steps: int | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> list[RunSpec]:
    """Runs of ``model`` for each value of its weight (γ for FactorVAE, β for β-VAE) and each seed.

    ``seeds`` is a count (seeds 0..N-1) or explicit seeds. Runs are ordered seed-major, so a sweep
    stopped early has every setting for the first seeds rather than every seed for the first settings.
    """
    param = PARAM.get(model)
    if values and param is None:
        raise ConfigError(f"model {model} has no β/γ to sweep; sweep one of {', '.join(PARAM)} or give no values")
    if param and not values:
        raise ConfigError(f"give the {param} values to sweep for {model} (e.g. --{param} 10,40)")
    seed_list = list(range(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]
    if not seed_list:
        raise ConfigError("a sweep needs at least one seed")
    base = dict(overrides or {})
    owned = [k for k in ("model", "seed", param) if k and k in base]
    if owned:
        raise ConfigError(f"{', '.join(owned)} set by the sweep grid; remove it from the overrides")
    if "threads" in base:  # a worker's threads are the sweep's choice (workers × threads ≤ cores)
        raise ConfigError("set threads with --threads (sweep(threads=...)), not as a run setting")
    if steps is not None:
        base["steps"] = steps
    specs = []
    for seed in seed_list:
        for value in (values or [None]):
            ov = {**base, "model": model, "seed": seed, **({param: float(value)} if param else {})}
            specs.append(RunSpec(run_name(model, param, value, seed), model, param, value, seed, ov))
    make_config(**specs[0].overrides)  # fail on bad settings before anything starts
    return specs


def batch_groups(specs: Sequence[RunSpec], per_process: int | None = None) -> list[list[RunSpec]]:
    """``specs`` in groups that can train as one batched model (one model type, the same settings but seed
    and γ or β), at most ``per_process`` runs each (None: the whole group). InfoWGAN-GP runs go alone."""
    if per_process is not None and per_process < 1:
        raise ConfigError(f"--models-per-process must be at least 1, not {per_process}")
    groups: dict[str, list[RunSpec]] = {}
    alone: list[list[RunSpec]] = []
    for spec in specs:
        if spec.model not in BATCHED_MODELS or spec.overrides.get("tensorboard") or spec.overrides.get("cuda_graph"):
            alone.append([spec])  # batched training writes no TensorBoard files and captures no graphs yet
            continue
        shared = {k: v for k, v in spec.overrides.items() if k not in ("seed", spec.param)}
        groups.setdefault(json.dumps(shared, sort_keys=True, default=str), []).append(spec)
    batches = []
    for group in groups.values():
        size = per_process or len(group)
        batches += [group[i : i + size] for i in range(0, len(group), size)]
    return batches + alone
