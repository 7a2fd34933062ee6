"""Live training curves in TensorBoard (``--tensorboard``): the numbers of log.jsonl and metrics.jsonl as
scalars, and a latent traversal image at each evaluation (paper §4: the curves of Fig. 4, the traversals of
Fig. 2-3), written under ``RUN_DIR/tensorboard/``.

The JSON-lines files stay the record; TensorBoard is a view of them. A resumed run reopens the same folder
with ``purge_step`` = the checkpoint's step + 1, so events that a killed process wrote after its last
checkpoint are hidden and every step keeps one value. TensorBoard is an optional extra
(``pip install 'factorvae[tensorboard]'``); asking for it without the package is a one-line error.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..run.rundir import require_tensorboard

FOLDER = "tensorboard"


class _MethodView:
    """What :func:`traversal_grid` needs of a model (kind, data, encode, decode), on a method in training."""

    def __init__(self, method: Any, data: Any, device: torch.device) -> None:
        self.method, self.data, self.device, self.kind = method, data, device, method.kind

    def encode(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        with torch.inference_mode():
            mu, logvar = self.method.encode(torch.as_tensor(x, device=self.device))
        return mu.cpu().numpy(), None if logvar is None else logvar.cpu().numpy()

    def decode(self, z: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self.method.decode(torch.as_tensor(z, device=self.device)).cpu().numpy()


class TensorBoardLog:
    """One event writer per process on ``run_dir/tensorboard``; ``start_step`` is where this process began."""

    def __init__(self, run_dir: Path, start_step: int) -> None:
        require_tensorboard()
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(Path(run_dir) / FOLDER), purge_step=start_step + 1 if start_step else None)

    def log_line(self, record: Mapping[str, Any]) -> None:
        """A log.jsonl record: every number as ``train/NAME``, the KL of dimension j as ``kl_per_dim/j``."""
        step = int(record["step"])
        for name, value in record.items():
            if name in ("step", "partial"):
                continue
            if isinstance(value, (list, tuple)):
                for j, v in enumerate(value):
                    self.writer.add_scalar(f"{name}/{j}", float(v), step)
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(f"train/{name}", float(value), step)

    def metrics(self, step: int, results: Mapping[str, Any]) -> None:
        """An evaluation: each metric's score as ``metric/NAME``, and D's TC estimate as ``metric/tc_discriminator``."""
        for name, result in results.items():
            if isinstance(result, Mapping) and isinstance(result.get("score"), (int, float)):
                self.writer.add_scalar(f"metric/{name}", float(result["score"]), step)
            if isinstance(result, Mapping) and isinstance(result.get("tc_discriminator"), (int, float)):
                self.writer.add_scalar("metric/tc_discriminator", float(result["tc_discriminator"]), step)

    def evaluation(self, step: int, results: Mapping[str, Any], method: Any, data: Any, device: torch.device,
                   seed: int = 0) -> None:
        """An evaluation's scores and a traversal image of the networks as they are now."""
        self.metrics(step, results)
        self.traversal(step, method, data, device, seed)
        self.writer.flush()

    def traversal(self, step: int, method: Any, data: Any, device: torch.device, seed: int = 0) -> None:
        """One seed image's traversal of every code dimension (rows by KL, as `factorvae traverse` draws it)."""
        from ..figures.plots import tile_images  # matplotlib only when a picture is drawn
        from ..figures.traverse import traversal_grid

        image = data.sample_observations(1, np.random.default_rng(seed))
        tr = traversal_grid(_MethodView(method, data, device), image, n_steps=10, seed=seed)
        _, dim, steps = tr.grid.shape[:3]
        picture = tile_images(tr.grid[0].reshape(dim * steps, *tr.grid.shape[3:]), ncols=steps)  # (H, W, 3)
        self.writer.add_image("traversal", picture, step, dataformats="HWC")

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()
