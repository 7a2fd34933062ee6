"""Old import path of :mod:`factorvae.experiments.report` (docs before the restructure named it); use that."""

from .experiments.report import collect, summarize, write_sweep_report

__all__ = ["collect", "summarize", "write_sweep_report"]
