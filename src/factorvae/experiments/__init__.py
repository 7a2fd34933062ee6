"""Many runs: the paper's β / γ grids (grid.py, presets.py), a sweep's driver (sweep.py), where its runs
execute (backends.py: local subprocesses or Ray), one run's work in a worker (worker.py), and the sweep
report with the trade-off figure (report.py)."""
