"""Old import path of :mod:`factorvae.figures.report` (docs before the restructure named it); use that."""

from .figures.report import write_report

__all__ = ["write_report"]
