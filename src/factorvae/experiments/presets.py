"""Named experiments of the paper, for ``factorvae reproduce NAME [--scale F]`` (paper §4.1; docs/paper.md §4, §6).

Each experiment is the grids (model, weights), the seeds, the iterations and the data set of one of the
paper's trade-off studies, with the place in the paper it comes from. ``scaled(scale)`` shrinks it for a
CPU by one rule, documented in docs/sweeps.md:

- steps = max(100, round(steps × scale)), rounded to a multiple of 100 so log windows stay whole;
- seeds = max(1, round(seeds × scale)), unless the caller fixes the number of seeds;
- the metric is evaluated ``eval_points`` times during training (eval_every = steps / eval_points), so
  the metric-vs-iteration curves exist at every scale.

Scale 1 is the paper's full experiment: 12 settings × 10 seeds × 3·10^5 steps on dSprites.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..config import ConfigError


@dataclass(frozen=True)
class Experiment:
    name: str
    source: str  # where in the paper (and docs/paper.md) the settings come from
    description: str
    grids: tuple[tuple[str, tuple[float, ...]], ...]  # (model, values of its β or γ)
    seeds: int
    steps: int
    overrides: dict[str, Any] = field(default_factory=dict)  # config settings shared by every run
    eval_points: int = 10  # metric evaluations during training, for the curves

    def scaled(self, scale: float = 1.0, seeds: int | None = None) -> ScaledExperiment:
        if not 0 < scale <= 1:
            raise ConfigError(f"--scale must be in (0, 1], got {scale}")
        steps = max(100, round(self.steps * scale / 100) * 100)
        n_seeds = seeds if seeds is not None else max(1, round(self.seeds * scale))
        if n_seeds < 1:
            raise ConfigError(f"--seeds must be >= 1, got {n_seeds}")
        return ScaledExperiment(self, scale, steps, n_seeds, max(1, steps // self.eval_points))


@dataclass(frozen=True)
class ScaledExperiment:
    experiment: Experiment
    scale: float
    steps: int
    seeds: int
    eval_every: int

    def describe(self) -> str:
        e = self.experiment
        grids = "; ".join(f"{m} {'γ' if m == 'factorvae' else 'β'} ∈ {{{', '.join(f'{v:g}' for v in vals)}}}"
                          for m, vals in e.grids)
        runs = sum(len(vals) for _, vals in e.grids) * self.seeds
        return (f"{e.name} ({e.source}) at scale {self.scale:g}: {grids}; {self.seeds} seed(s), {self.steps} steps "
                f"each ({runs} runs), metric every {self.eval_every} steps")


BETAS = (1.0, 2.0, 4.0, 6.0, 8.0, 16.0)  # paper §4.1 β grid (docs/paper.md §4)
GAMMAS = (10.0, 20.0, 30.0, 40.0, 50.0, 100.0)  # paper §4.1 γ grid (docs/paper.md §4)

EXPERIMENTS: dict[str, Experiment] = {
    e.name: e
    for e in (
        Experiment(
            "dsprites-tradeoff",
            "paper §4.1, 2D Shapes: the reconstruction error vs disentanglement metric figure and the metric over "
            "training iterations; docs/paper.md §4, §6",
            "β-VAE and FactorVAE on dSprites, 10 seeds each, 3·10^5 iterations; the paper's best: "
            "FactorVAE γ=40 ≈ 0.82 vs β-VAE β=4 ≈ 0.73 at reconstruction error ≈ 45",
            (("betavae", BETAS), ("factorvae", GAMMAS)),
            seeds=10,
            steps=300_000,
            overrides={"dataset": "dsprites"},
        ),
        Experiment(
            "shapes3d-tradeoff",
            "paper §4.1, 3D Shapes: the same study as on 2D Shapes; iterations [open] 10^6 (docs/paper.md §4, §6)",
            "β-VAE and FactorVAE on 3D Shapes (built-in renderer unless --set data_path=...), 10 seeds each; "
            "discriminator lr 1e-5 as configured for data sets other than dSprites",
            (("betavae", BETAS), ("factorvae", GAMMAS)),
            seeds=10,
            steps=1_000_000,
            overrides={"dataset": "shapes3d"},
        ),
    )
}


def get(name: str) -> Experiment:
    if name not in EXPERIMENTS:
        raise ConfigError(f"unknown experiment '{name}'; choose one of: {', '.join(EXPERIMENTS)}")
    return EXPERIMENTS[name]


def runs(scaled: ScaledExperiment, overrides: dict[str, Any] | None = None) -> list:
    """The experiment's runs (``factorvae.experiments.grid.RunSpec``), seed-major across both grids, so that a
    reproduction stopped early holds every setting for its first seeds."""
    from .grid import make_grid

    e = scaled.experiment
    shared = {**e.overrides, **(overrides or {})}
    specs = [s for model, values in e.grids for s in make_grid(model, values, scaled.seeds, scaled.steps, shared)]
    return sorted(specs, key=lambda s: s.seed)  # stable: keeps grid order within a seed
