"""Old import path of :mod:`factorvae.experiments.sweep` (docs before the restructure named it); use that."""

from .experiments.grid import EvalPlan, RunSpec, make_grid
from .experiments.sweep import run_sweep, sweep

__all__ = ["EvalPlan", "RunSpec", "make_grid", "run_sweep", "sweep"]
