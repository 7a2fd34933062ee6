"""Shareable trained models: the networks that encode and decode, in one safetensors file (paper §4–5 use a
trained model only through its encoder mean and its decoder).

A run directory's ``checkpoint.pt`` also holds the discriminator, the optimizer moments and the random
states (≈ 66 MB on dSprites) and is a pickle, however restricted. ``export_run`` writes only the encoder
and decoder (a VAE) or the generator and the critic with its Q head (InfoWGAN-GP), contiguous, in
safetensors (no code can hide in it), with the run's config and step as metadata (≈ 2–4 MB).
``read_export`` checks every tensor against the networks the config builds and refuses a file that does not
fit them with a one-line error.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..config import Config, make_config
from ..files import atomic_write_bytes
from .checkpoint import load_checkpoint

FORMAT = "factorvae-export-1"
KEPT = {"vae": ("encoder", "decoder"), "gan": ("generator", "critic")}  # by method kind
MODULE_KIND = {"encoder": "vae", "generator": "gan"}


class ExportError(ValueError):
    """An export file is missing, unreadable, or does not fit the networks of its own config."""


def export_run(run_dir: str | Path, out: str | Path) -> Path:
    """Write the networks of ``run_dir``'s latest checkpoint to ``out`` (a ``.safetensors`` file)."""
    from safetensors.torch import save

    run_dir, out = Path(run_dir), Path(out)
    path = run_dir / "checkpoint.pt"
    if not path.is_file():
        raise ExportError(f"{run_dir} has no checkpoint.pt to export; train or resume the run first")
    if out.suffix != ".safetensors":
        raise ExportError(f"export to a .safetensors file, not '{out.name}'")
    if not out.parent.is_dir():  # the atomic write would create it, wherever a typo put it
        raise ExportError(f"{out}: folder {out.parent} does not exist; create it first or write elsewhere")
    try:
        state = load_checkpoint(path)
        config, step, modules = json.loads(state["config"]), int(state["step"]), state["modules"]
    except Exception as exc:
        raise ExportError(f"cannot read {path} ({type(exc).__name__}); it is damaged or not a checkpoint") from None
    kind = next((MODULE_KIND[m] for m in modules if m in MODULE_KIND), None)
    if kind is None:
        raise ExportError(f"{path} holds no encoder or generator: not a factorvae checkpoint")
    tensors = {f"{name}.{key}": t.contiguous() for name in KEPT[kind] for key, t in modules[name].items()}
    metadata = {"format": FORMAT, "config": json.dumps(config), "step": str(step), "kind": kind}
    atomic_write_bytes(out, save(tensors, metadata=metadata))
    return out


def read_export(path: str | Path) -> tuple[Config, int, dict[str, dict[str, torch.Tensor]]]:
    """(config, step, {module name: state dict}) of an export file, after checking its format."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise ExportError(f"model file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 (safe_open has no items())
    except (SafetensorError, OSError, ValueError) as exc:
        raise ExportError(f"{path} is not a readable safetensors file ({exc})") from None
    if metadata.get("format") != FORMAT:
        raise ExportError(f"{path} is not a factorvae export (metadata format {metadata.get('format')!r})")
    try:
        config, step = make_config(**json.loads(metadata["config"])), int(metadata["step"])
    except Exception as exc:
        raise ExportError(f"{path}: its config metadata is unreadable ({exc})") from None
    modules: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        name, _, param = key.partition(".")
        modules.setdefault(name, {})[param] = tensor
    return config, step, modules


def load_into(method, modules: dict[str, dict[str, torch.Tensor]], path: Path) -> None:
    """Load the exported state dicts into ``method``'s networks; any missing, extra or misshapen tensor is
    a one-line :class:`ExportError`."""
    wanted = KEPT[method.kind]
    if set(modules) != set(wanted):
        raise ExportError(f"{path} holds networks {sorted(modules)}, but its config's model needs {list(wanted)}")
    for name in wanted:
        try:
            method.modules[name].load_state_dict(modules[name], strict=True)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[1].strip() if "\n" in str(exc) else str(exc)
            raise ExportError(f"{path}: the {name} tensors do not fit the config's networks ({first})") from None
