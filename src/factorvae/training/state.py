"""A training run in memory: data, method, random streams and the log window (paper §4, Algorithm 2).

:class:`Run` is what the loop (loop.py) advances one step at a time and what a checkpoint saves and
restores exactly: the networks and optimizers, the noise generator, torch's global generator, the numpy
data sampler and the running sums of the log window. It also records the step of the last whole line of
each log and what the data set looks like, so that a resume can refuse a log cut short or other data
(prepare.py). Weights are initialised from ``torch.manual_seed(seed)``;
the reparameterisation noise and ``permute_dims`` draw from a generator of their own (:func:`noise_seed`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import torch

from ..config import Config
from ..data import GroundTruthData
from ..data import load as load_data
from ..files import append_jsonl
from ..methods import build_method
from ..run.lock import DirLock
from ..run.rundir import RunError, one_line, resolve_device
from .runtime import configure_cpu
from .tensorboard import TensorBoardLog


def noise_seed(seed: int) -> int:
    """The seed of a run's noise generator: derived from the run's seed, distinct from it."""
    return int(np.random.SeedSequence([seed, 1]).generate_state(1)[0])


class Run:
    """Everything a training run holds in memory: data, method, random state, log window."""

    def __init__(self, config: Config, out_dir: Path, data: GroundTruthData | None = None) -> None:
        """``data``: the run's data set when the caller has it already (runs trained together share one)."""
        self.config, self.out_dir = config, out_dir
        configure_cpu(config.threads)
        self.device = resolve_device(config.device)
        self.data = data if data is not None else load_data(config.dataset, config.data_path)
        # on CUDA the built-in dSprites renders on the GPU, so only indices cross the bus; on CPU numpy's
        # renderer is the faster one (docs/performance.md)
        renderer = getattr(self.data, "renderer", None)
        self.render = renderer(self.device) if renderer is not None and self.device.type == "cuda" else None
        self.defer_checks = self.device.type == "cuda"  # non-finite loss checks only at steps that write
        torch.manual_seed(config.seed)  # network initialisation
        # reparameterisation noise and permute_dims: a stream of its own, since on CPU a generator seeded
        # like the global one would replay the very numbers that drew the initial weights
        self.generator = torch.Generator(device=self.device).manual_seed(noise_seed(config.seed))
        self.rng = np.random.default_rng(config.seed)  # the data sampler
        self.method = _build(config, self.data.observation_shape[0], self.generator, self.device)
        self.step = 0
        self.last_good: int | None = None  # step of the checkpoint on disk
        self.window: dict[str, torch.Tensor] = {}
        self.window_count = 0
        self.logged: dict[str, int] = {}  # log file name -> step of its last whole line
        self.lock: DirLock | None = None
        self.board: TensorBoardLog | None = None  # opened by fit() when config.tensorboard

    def close(self) -> None:
        """Let another process write the run directory (the lock also goes when the process ends)."""
        if self.board is not None:
            self.board.close()
            self.board = None
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def next_batch(self) -> torch.Tensor:
        """A training minibatch (B, C, H, W) float32 on the device. Indices always come from the numpy
        sampler, so the data stream and exact resume are the same on every device."""
        n = self.config.batch_size
        if self.render is not None:
            return self.render(self.to_device(torch.from_numpy(self.data.sample_indices(n, self.rng))))
        return self.to_device(torch.from_numpy(self.data.sample_observations(n, self.rng)))

    def to_device(self, t: torch.Tensor) -> torch.Tensor:
        if self.device.type == "cuda":  # from pinned memory the copy is asynchronous: no sync per step
            t = t.pin_memory()
        return t.to(self.device, non_blocking=True)

    def state(self) -> dict:
        return {
            "step": self.step,
            "config": json.dumps(self.config.to_dict()),
            "modules": {k: m.state_dict() for k, m in self.method.modules.items()},
            "optimizers": {k: o.state_dict() for k, o in self.method.optimizers.items()},
            "torch_rng": self.generator.get_state(),
            "torch_global_rng": torch.get_rng_state(),
            "numpy_rng": json.dumps(self.rng.bit_generator.state),
            "window": dict(self.window),
            "window_count": self.window_count,
            "logged": dict(self.logged),
            "data": data_signature(self.data),
        }

    def restore(self, state: dict) -> None:
        for k, m in self.method.modules.items():
            m.load_state_dict(state["modules"][k])
        for k, o in self.method.optimizers.items():
            o.load_state_dict(state["optimizers"][k])
            match_layouts(o)
        self.generator.set_state(state["torch_rng"])
        torch.set_rng_state(state["torch_global_rng"])
        self.rng.bit_generator.state = json.loads(state["numpy_rng"])
        self.window = {k: v.to(self.device) for k, v in state["window"].items()}
        self.window_count = state["window_count"]
        self.step = state["step"]
        self.logged = dict(state.get("logged") or {})
        if "log.jsonl" not in self.logged and self.step > self.window_count:  # a checkpoint from before "logged":
            self.logged["log.jsonl"] = self.step - self.window_count  # the window restarts at each whole line

    def append_log(self, name: str, record: dict) -> None:
        """Append ``record`` to the run's log ``name`` (log.jsonl, metrics.jsonl), noting a whole line's step."""
        append_jsonl(self.out_dir / name, record)
        if not record.get("partial"):
            self.logged[name] = record["step"]

    def accumulate(self, numbers: dict[str, torch.Tensor]) -> None:
        for k, v in numbers.items():
            self.window[k] = self.window[k] + v if k in self.window else v.clone()
        self.window_count += 1

    def flush_window(self, reset: bool = True) -> dict:
        record = {}
        for k, v in self.window.items():
            mean = (v / self.window_count).cpu()
            record[k] = mean.tolist() if mean.ndim else float(mean)
        if reset:
            self.window, self.window_count = {}, 0
        return record


def _build(config: Config, channels: int, generator: torch.Generator, device: torch.device):
    """The method's networks; settings too large for memory (e.g. latent_dim=100000000) are a one-line RunError
    rather than the allocator's traceback."""
    try:
        return build_method(config, channels, generator, device)
    except (MemoryError, RuntimeError) as exc:
        if not isinstance(exc, (MemoryError, torch.OutOfMemoryError)) and "alloc" not in str(exc):
            raise
        asked = re.search(r"allocate (\d+) bytes", str(exc))
        what = f"one tensor alone needs {int(asked[1]) / 1e9:.1f} GB" if asked else one_line(exc)
        raise RunError(f"the networks of these settings do not fit in memory ({what}); lower latent_dim, "
                       "fc_width or the other sizes") from None


def data_signature(data: GroundTruthData) -> dict:
    """What a resume checks when the data is read from a new place: the same factors and image shape."""
    return {"factor_sizes": list(data.factor_sizes), "observation_shape": list(data.observation_shape),
            "num_examples": int(data.num_examples)}


def match_layouts(optimizer: torch.optim.Optimizer) -> None:
    """Give every per-parameter state tensor (Adam's moments) its parameter's memory layout.

    Fused Adam walks a parameter and its moments in memory order, not index order. ``load_state_dict``
    keeps a saved tensor's layout, so moments saved by a CUDA run (NCHW) and loaded into a CPU run
    (channels_last conv weights) would be applied to the wrong elements, silently. Copying into
    ``empty_like(param)`` keeps every value at its index and takes the parameter's strides.
    """
    for param, state in optimizer.state.items():
        for key, value in state.items():
            if torch.is_tensor(value) and value.shape == param.shape and value.stride() != param.stride():
                state[key] = torch.empty_like(param).copy_(value)

