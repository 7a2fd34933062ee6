"""Figures of paper §4 from a trained model or a run directory: plots (arrays -> pictures), traversals,
reconstructions and samples (traverse.py), and a run's self-contained HTML report (report.py)."""
