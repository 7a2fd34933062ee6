"""A trained run, loaded for use: encode, decode, and the representation the metrics score (paper §4–5).

``load(run_dir)`` rebuilds the method from the run's ``config.json`` and loads ``checkpoint.pt`` with
``weights_only=True``. The returned object works on numpy arrays (or tensors) in large batches under
``torch.inference_mode``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..config import Config, make_config
from ..data import GroundTruthData
from ..data import load as load_data
from ..methods import build_method, inference_encode
from .checkpoint import load_checkpoint
from .rundir import RunError, is_run_dir, one_line, resolve_device


class TrainedModel:
    """The networks of a run plus its config and data set. ``kind`` is "vae" or "gan"."""

    def __init__(
        self, config: Config, data: GroundTruthData, method, step: int, run_dir: Path | None, device: torch.device
    ) -> None:
        self.config, self.data, self.method, self.step = config, data, method, step
        self.run_dir, self.device = run_dir, device
        self.kind = method.kind
        self.latent_dim = config.latent_dim
        for m in method.modules.values():
            m.eval()

    def _batches(self, x, fn, batch_size: int):
        as_numpy = isinstance(x, np.ndarray)
        outs = []
        with torch.inference_mode():
            for i in range(0, len(x), batch_size):
                chunk = torch.as_tensor(x[i : i + batch_size], dtype=torch.float32).to(self.device)
                out = fn(chunk)
                outs.append(out if isinstance(out, tuple) else (out,))
        cols = list(zip(*outs, strict=True)) if outs else []
        joined = [None if parts[0] is None else torch.cat(parts) for parts in cols]
        if as_numpy:
            joined = [None if t is None else t.cpu().numpy() for t in joined]
        return joined

    def encode(self, images, batch_size: int = 1024):
        """(mu, logvar) for float images (n, C, H, W) in [0, 1]; a GAN's Q gives (c_hat, None)."""
        # the fast inference copy is rebuilt per call (~0.5 ms), so it never holds stale weights
        mu, logvar = self._batches(images, inference_encode(self.method), batch_size)
        return mu, logvar

    def represent(self, images: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        """The representation scored by the metrics: the encoder mean (n, D)."""
        return self.encode(images, batch_size)[0]

    def decode(self, z, batch_size: int = 1024):
        """Images (n, C, H, W) in [0, 1] for codes (n, D)."""
        return self._batches(z, self.method.decode, batch_size)[0]


def load(run_dir: str | Path, device: str = "cpu", data_path: str | Path | None = None) -> TrainedModel:
    """The trained model of the run in ``run_dir`` (its latest checkpoint), or of a ``.safetensors`` file
    written by ``factorvae export`` (the same encode / decode / represent).

    ``data_path``: read the run's data set from there instead of the path it was trained on (the data moved).
    """
    run_dir = Path(run_dir)
    if run_dir.suffix == ".safetensors":
        return _load_export(run_dir, device, data_path)
    if not is_run_dir(run_dir):
        raise RunError(f"{run_dir} is not a run directory (no config.json); train one with `factorvae train`")
    path = run_dir / "checkpoint.pt"
    if not path.is_file():
        raise RunError(f"{run_dir} has no checkpoint.pt yet; resume training with `factorvae train --resume {run_dir}`")
    dev = resolve_device(device)
    try:  # weights_only: a crafted file cannot run code, it can only fail to load
        state = load_checkpoint(path, map_location="cpu")
        config = make_config(**json.loads(state["config"]))
        step = int(state["step"])
    except Exception as exc:
        raise RunError(f"cannot read {path} ({one_line(exc)}); it is damaged or not a factorvae checkpoint") from None
    if data_path is not None:
        config = make_config(config, data_path=str(data_path))
    data = load_data(config.dataset, config.data_path)
    method = build_method(config, data.observation_shape[0], torch.Generator(device=dev), dev)
    try:
        for k, m in method.modules.items():
            m.load_state_dict(state["modules"][k])
    except Exception as exc:
        raise RunError(f"cannot load the networks of {path} ({one_line(exc)}); is it this run's checkpoint, and "
                       "does the data have the same image shape?") from None
    return TrainedModel(config, data, method, step, run_dir, dev)


def _load_export(path: Path, device: str, data_path: str | Path | None) -> TrainedModel:
    """An exported model. Its data set is loaded when it can be (built-in, or found at ``data_path`` or the
    recorded path); elsewhere ``model.data`` is None and encode / decode still work."""
    from ..data import DataError
    from .export import ExportError, load_into, read_export

    try:
        config, step, modules = read_export(path)
    except ExportError as exc:
        raise RunError(str(exc)) from None
    if data_path is not None:
        config = make_config(config, data_path=str(data_path))
    try:
        data = load_data(config.dataset, config.data_path)
    except DataError:
        data = None
    first = modules.get("encoder", modules.get("critic", {})).get("convs.0.weight")
    if first is None or first.ndim != 4:
        raise RunError(f"{path}: no first convolution in the exported networks; not a factorvae export")
    dev = resolve_device(device)
    method = build_method(config, int(first.shape[1]), torch.Generator(device=dev), dev)
    try:
        load_into(method, modules, path)
    except ExportError as exc:
        raise RunError(str(exc)) from None
    return TrainedModel(config, data, method, step, None, dev)
