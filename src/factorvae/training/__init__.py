"""Training a run (paper §4, Algorithm 2): the run in memory (state.py), opening a run directory new or
resumed (prepare.py), the one loop (loop.py), its checks on the numbers (health.py), CPU setup
(runtime.py) and the optional TensorBoard writer (tensorboard.py)."""
