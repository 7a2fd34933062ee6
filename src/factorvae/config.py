"""Training configuration, declared once (paper §4 and appendix A; docs/paper.md §2–4, §7).

One frozen dataclass holds every setting with the paper's default. The CLI and the Python API build it
the same way (:func:`make_config`), it is saved as ``config.json`` in every run directory and inside every
checkpoint, and later commands (resume, evaluate, traverse, report) read it back instead of taking flags.
Settings the paper leaves open are marked [open] and documented in docs/config.md.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MODELS = ("vae", "betavae", "factorvae", "infowgan-gp")
BATCHED_MODELS = ("vae", "betavae", "factorvae")  # those that K runs can train as one model (methods/batched.py)
INITS = ("pytorch", "glorot")  # torch's layer defaults; Glorot-uniform weights and zero biases (TF, dlib)
PRECISIONS = ("fp32", "bf16")  # the paper's float32; bf16 compute with float32 weights (docs/performance.md)
METRIC_NAMES = ("factorvae", "betavae", "mig", "dci", "sap", "tc")


class ConfigError(ValueError):
    """A setting is unknown, mistyped or impossible."""


@dataclass(frozen=True)
class Config:
    # what is trained
    model: str = "factorvae"  # one of MODELS
    dataset: str = "dsprites"  # a name from factorvae.data.DATASETS
    data_path: str | None = None  # None: the built-in procedural data set
    latent_dim: int = 10  # paper appendix A: 10 for every data set
    beta: float = 4.0  # β-VAE weight on KL; the paper's best on dSprites is 4 (model "vae" uses 1)
    gamma: float = 40.0  # FactorVAE weight on TC; the paper's best on dSprites is 40 (paper Fig. 6)
    # optimisation (paper §4: Adam, batch 64, 3e5 iterations on dSprites)
    steps: int = 300_000
    batch_size: int = 64
    lr: float = 1e-4  # VAE (encoder + decoder) Adam learning rate
    adam_betas: tuple[float, float] = (0.9, 0.999)
    lr_d: float | None = None  # discriminator lr; None: 1e-4 on dSprites, 1e-5 elsewhere (docs/paper.md §4)
    adam_betas_d: tuple[float, float] = (0.5, 0.9)
    same_batch: bool = False  # True: disentanglement_lib's variant that permutes the VAE step's own codes
    # networks (paper appendix A)
    fc_width: int | None = None  # encoder/decoder FC width; None: 128 on dSprites, 256 elsewhere
    d_hidden: int = 1000  # discriminator width
    d_layers: int = 6  # discriminator hidden layers
    d_slope: float = 0.2  # leaky ReLU slope [likely]
    init: str = "pytorch"  # weight initialisation: "pytorch" (torch's layer defaults) or "glorot" [open]
    precision: str = "fp32"  # training compute: "fp32" (the paper's) or "bf16" (mixed; docs/config.md)
    # InfoWGAN-GP (paper §4.3; [open] except the idea, see docs/infowgan.md)
    noise_dim: int = 64  # size of the incompressible noise z fed to G beside the codes c
    n_critic: int = 5  # critic steps per generator step (WGAN-GP's usual value)
    gp_weight: float = 10.0  # gradient penalty weight (WGAN-GP's usual value)
    lambda_mi: float = 1.0  # weight of the mutual-information lower bound
    q_std: float | None = None  # Q's Gaussian std; None: learned per dimension
    lr_g: float = 1e-4  # generator / critic Adam lr (WGAN-GP's usual value)
    adam_betas_g: tuple[float, float] = (0.5, 0.9)
    # bookkeeping
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    threads: int | None = None  # torch intra-op threads; None: torch's default
    log_every: int = 100  # steps between log lines
    checkpoint_every: int = 5_000  # steps between checkpoints (always one at the end)
    tensorboard: bool = False  # also write TensorBoard event files under RUN_DIR/tensorboard/
    cuda_graph: bool = False  # CUDA only: replay each step from a captured CUDA graph (training/cuda_graph.py)
    eval_every: int = 0  # steps between metric evaluations during training; 0: off
    eval_metrics: tuple[str, ...] = ("factorvae", "tc")  # metrics computed every eval_every steps
    eval_protocol: str = "paper"
    extra: dict[str, Any] = field(default_factory=dict)  # free-form notes kept with the run

    def __post_init__(self) -> None:
        validate(self)

    @property
    def discriminator_lr(self) -> float:
        if self.lr_d is not None:
            return self.lr_d
        return 1e-4 if self.dataset == "dsprites" else 1e-5

    @property
    def width(self) -> int:
        if self.fc_width is not None:
            return self.fc_width
        return 128 if self.dataset == "dsprites" else 256

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        from .files import atomic_write_text

        atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Config:
        try:
            raw = json.loads(Path(path).read_bytes().decode())
        except OSError as exc:
            raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
        except ValueError as exc:  # not JSON, or not UTF-8 text
            raise ConfigError(f"cannot read config {path}: {exc}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"cannot read config {path}: expected a JSON object of settings")
        return make_config(**raw)


_POSITIVE = ("steps", "batch_size", "latent_dim", "log_every", "checkpoint_every", "d_hidden", "d_layers",
             "n_critic", "noise_dim")
_OPTIONAL_POSITIVE = ("fc_width", "threads")  # None: the default
_NON_NEGATIVE = ("beta", "gamma", "lambda_mi", "gp_weight", "d_slope")
_RATES = ("lr", "lr_d", "lr_g")  # > 0 (lr_d may be None); q_std is checked by InfoWGAN-GP, its only user
_BETAS = ("adam_betas", "adam_betas_d", "adam_betas_g")
SEED_LIMIT = 2**63  # numpy and torch both take seeds in [0, 2^63)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def validate(c: Config) -> None:
    """Refuse every setting that would crash or silently misbehave later (NaN rates, zero widths...)."""
    if c.model not in MODELS:
        raise ConfigError(f"unknown model '{c.model}'; choose one of: {', '.join(MODELS)}")
    for name in _POSITIVE + _OPTIONAL_POSITIVE:
        value = getattr(c, name)
        if not (value is None and name in _OPTIONAL_POSITIVE) and not (_is_int(value) and value > 0):
            raise ConfigError(f"{name} must be a positive integer, got {value}")
    for name in ("eval_every", "seed"):
        if not (_is_int(getattr(c, name)) and 0 <= getattr(c, name) < SEED_LIMIT):
            raise ConfigError(f"{name} must be an integer >= 0, got {getattr(c, name)}")
    if c.model == "factorvae" and c.batch_size < 2:
        raise ConfigError("FactorVAE needs batch_size >= 2: permute_dims shuffles codes across the batch")
    for name in _NON_NEGATIVE:
        value = getattr(c, name)
        if not _is_number(value) or value < 0:
            raise ConfigError(f"{name} must be a finite number >= 0, got {value}")
    for name in _RATES:
        value = getattr(c, name)
        if not (value is None and name == "lr_d") and not (_is_number(value) and value > 0):
            raise ConfigError(f"{name} must be a finite number > 0, got {value}")
    for name in _BETAS:
        betas = getattr(c, name)
        if not (isinstance(betas, tuple) and len(betas) == 2 and all(_is_number(b) and 0 <= b < 1 for b in betas)):
            raise ConfigError(f"{name} must be two numbers in [0, 1), e.g. 0.9,0.999; got {betas}")
    if c.eval_every and not c.eval_metrics:
        raise ConfigError("eval_every is set but eval_metrics is empty: name the metrics to score, or use 0")
    for name in ("dataset", "device", "init", "eval_protocol", "precision"):
        if not isinstance(getattr(c, name), str):
            raise ConfigError(f"{name} must be a name, got {getattr(c, name)!r}")
    if c.data_path is not None and not isinstance(c.data_path, str):
        raise ConfigError(f"data_path must be a path, got {c.data_path!r}")
    if c.device not in ("auto", "cpu", "cuda") and not c.device.startswith("cuda:"):
        raise ConfigError(f"unknown device '{c.device}'; use auto, cpu or cuda")
    bad = [m for m in c.eval_metrics if m not in METRIC_NAMES]
    if bad:
        raise ConfigError(f"unknown eval metric(s) {bad}; choose from: {', '.join(METRIC_NAMES)}")
    if c.init not in INITS:
        raise ConfigError(f"unknown init '{c.init}'; choose one of: {', '.join(INITS)}")
    if c.precision not in PRECISIONS:
        raise ConfigError(f"unknown precision '{c.precision}'; choose one of: {', '.join(PRECISIONS)}")
    if c.eval_protocol not in ("paper", "dlib"):
        raise ConfigError(f"unknown eval protocol '{c.eval_protocol}'; use paper or dlib")


_FIELDS = {f.name: f for f in dataclasses.fields(Config)}


def _coerce(name: str, value: Any) -> Any:
    """Turn a CLI string or a JSON value into the field's type."""
    default = _FIELDS[name].default
    if isinstance(value, str):
        text = value.strip()
        if text.lower() in ("none", "null") and (default is None or name in ("lr_d", "fc_width", "q_std",
                                                                               "threads", "data_path")):
            return None
        if isinstance(default, bool):
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ConfigError(f"{name} must be true or false, got '{value}'")
        if isinstance(default, int) and not isinstance(default, bool):
            try:
                return int(float(text)) if float(text).is_integer() else _bad(name, value, "an integer")
            except ValueError:
                _bad(name, value, "an integer")
        if isinstance(default, float) or name in ("lr_d", "q_std"):
            try:
                return float(text)
            except ValueError:
                _bad(name, value, "a number")
        if name in ("fc_width", "threads"):
            try:
                return int(text)
            except ValueError:
                _bad(name, value, "an integer")
        if isinstance(default, tuple) or name in ("adam_betas", "adam_betas_d", "adam_betas_g", "eval_metrics"):
            parts = tuple(p.strip() for p in text.split(",") if p.strip())
            try:
                return parts if name == "eval_metrics" else tuple(float(p) for p in parts)
            except ValueError:
                _bad(name, value, "comma-separated numbers")
        return text
    if isinstance(value, list):
        return tuple(value)
    return value


def _bad(name: str, value: Any, what: str) -> Any:
    raise ConfigError(f"{name} must be {what}, got '{value}'")


def make_config(base: Config | None = None, **overrides: Any) -> Config:
    """The one override function used by the CLI and the API: ``base`` (or the defaults) with overrides.

    Values may be strings (from ``--set key=value``) and are converted to the field's type.
    """
    unknown = set(overrides) - set(_FIELDS)
    if unknown:
        raise ConfigError(
            f"unknown setting(s) {', '.join(sorted(unknown))}; known settings: {', '.join(sorted(_FIELDS))}"
        )
    values = (base or Config()).to_dict() if base is not None else {}
    values.update({k: _coerce(k, v) for k, v in overrides.items()})
    for k, v in values.items():
        if isinstance(v, list):
            values[k] = tuple(v)
    return Config(**values)


def parse_set(items: list[str]) -> dict[str, str]:
    """``["key=value", ...]`` from ``--set`` into a dict, with a clear error for malformed items."""
    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got '{item}'")
        key, value = item.split("=", 1)
        out[key.strip()] = value
    return out
