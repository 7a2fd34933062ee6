"""Latent traversals, reconstructions and samples from a trained model (the figures of paper §4).

A traversal (paper Figs. 3, 7–10) takes a seed image, encodes it, and decodes copies of its code in which
one dimension at a time is swept over a range while the others keep the seed's values. Rows are sorted by
each dimension's average KL(q(z_d|x) ‖ p(z_d)) over a data sample, so informative dimensions come first
and collapsed ones (KL ≈ 0, paper §4.1) sink to the bottom. For InfoWGAN-GP (``kind == "gan"``) the codes
are uniform on [−1, 1]: the sweep covers that interval and rows keep the code's index order.

Everything here uses the model contract of :func:`factorvae.load`: ``encode(x) -> (mu, logvar)`` (logvar
None for a GAN), ``decode(z) -> images in [0, 1]``, ``latent_dim``, ``kind``, ``data``, ``config``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from ..files import atomic_write_bytes
from .plots import (
    curves_from_run,
    figure_to_png,
    read_json,
    reconstruction_figure,
    samples_figure,
    traversal_figure,
    traversal_gif,
)

BATCH = 256  # codes or images per forward pass: bounded memory, few Python round trips
KL_SAMPLE = 1000  # images whose posteriors are averaged to rank dimensions by KL


@dataclass(frozen=True)
class Traversal:
    """Decoded traversals of N seed images, rows already sorted (``order[r]`` is the dimension in row r)."""

    grid: np.ndarray  # (N, D, S, C, H, W) float32 in [0, 1]
    order: np.ndarray  # (D,) int: code dimension shown in each row
    kl: np.ndarray | None  # (D,) average KL per dimension, indexed by dimension (None for a GAN)
    values: np.ndarray  # (N, D, S) value the swept dimension takes in each row and column
    mode: str
    limit: float


def kl_per_dim(mu: np.ndarray, logvar: np.ndarray) -> np.ndarray:
    """Mean over rows of KL(N(mu, exp(logvar)) ‖ N(0, 1)) per dimension: (n, D) -> (D,)."""
    mu, logvar = np.asarray(mu, np.float64), np.asarray(logvar, np.float64)
    return (0.5 * (mu**2 + np.exp(logvar) - logvar - 1.0)).mean(axis=0)


def _encode(model: Any, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    mus, logvars = [], []
    for start in range(0, len(x), BATCH):
        mu, logvar = model.encode(x[start : start + BATCH])
        mus.append(np.asarray(mu))
        logvars.append(None if logvar is None else np.asarray(logvar))
    logvar = None if any(v is None for v in logvars) else np.concatenate(logvars)
    return np.concatenate(mus), logvar


def _decode(model: Any, z: np.ndarray) -> np.ndarray:
    return np.concatenate([np.asarray(model.decode(z[s : s + BATCH]), np.float32)
                           for s in range(0, len(z), BATCH)])


def latent_kl(model: Any, n: int = KL_SAMPLE, seed: int = 0) -> np.ndarray | None:
    """Average KL per code dimension over ``n`` random images: (D,), or None for a GAN (no posterior)."""
    if model.kind == "gan":
        return None
    x = model.data.sample_observations(n, np.random.default_rng(seed))
    mu, logvar = _encode(model, x)
    return None if logvar is None else kl_per_dim(mu, logvar)


def traversal_grid(
    model: Any,
    images: np.ndarray,
    n_steps: int = 10,
    limit: float = 3.0,
    mode: str = "prior",
    *,
    kl: np.ndarray | None = None,
    seed: int = 0,
) -> Traversal:
    """Traverse every code dimension for each seed image (n, C, H, W); see :class:`Traversal`.

    ``mode="prior"``: the swept dimension takes ``linspace(-limit, limit)`` (the prior's bulk, since p(z) is
    N(0, I)); ``"posterior"``: ``mu_d + linspace(-limit, limit)`` around the seed's own value. A GAN sweeps
    [−1, 1] either way. ``kl`` (from :func:`latent_kl`) is computed on ``KL_SAMPLE`` images if not given.
    """
    if mode not in ("prior", "posterior"):
        raise ValueError(f"mode must be 'prior' or 'posterior', got '{mode}'")
    images = np.asarray(images, np.float32)
    if images.ndim == 3:
        images = images[None]
    base, _ = _encode(model, images)  # (N, D): the seed's posterior mean (a GAN: Q's estimate of c)
    n, dim = base.shape
    if model.kind == "gan":
        base = np.clip(base, -1.0, 1.0)
        values = np.broadcast_to(np.linspace(-1.0, 1.0, n_steps), (n, dim, n_steps))
        order, kl = np.arange(dim), None
    else:
        if kl is None:
            kl = latent_kl(model, seed=seed)
        sweep = np.linspace(-limit, limit, n_steps)
        centre = base[:, :, None] if mode == "posterior" else np.zeros((n, dim, 1))
        values = centre + sweep  # (N, D, S)
        # stable sort, so ties (e.g. several collapsed dimensions) keep their index order
        order = np.arange(dim) if kl is None else np.argsort(-np.asarray(kl), kind="stable")
    codes = np.repeat(base[:, None, None, :], dim * n_steps, axis=1).reshape(n, dim, n_steps, dim)
    for d in range(dim):
        codes[:, d, :, d] = values[:, d, :]
    codes, values = codes[:, order], np.ascontiguousarray(values[:, order])
    decoded = _decode(model, codes.reshape(-1, dim).astype(np.float32))  # (N·D·S, C, H, W)
    grid = decoded.reshape(n, dim, n_steps, *decoded.shape[1:])
    return Traversal(grid=grid, order=order, kl=kl, values=values, mode=mode, limit=float(limit))


def factor_of_dim(eval_result: dict | None, factor_names: tuple[str, ...] | list[str] = ()) -> dict[int, str]:
    """Code dimension -> the factor the FactorVAE metric's majority-vote classifier assigns it (paper §5).

    ``eval_result`` is eval.json's ``"factorvae"`` entry. Its ``classifier`` (D,: factor index, −1 for no
    vote) is used when present, else the argmax of its vote counts (``vote_matrix`` or ``train_votes``,
    D × K: rows are code dimensions, columns factors). Dimensions without votes, or pruned from
    ``active_dims`` because they collapsed, get no entry: they encode no factor, and a label would say so.
    """
    if not isinstance(eval_result, dict):
        return {}
    votes = eval_result.get("vote_matrix") or eval_result.get("train_votes")
    classifier = eval_result.get("classifier")
    if classifier is None and votes:
        counts = np.asarray(votes, dtype=float)  # (D, K) or (A, K) over active dims only
        classifier = np.where(counts.sum(axis=1) > 0, counts.argmax(axis=1), -1).tolist()
    if not classifier:
        return {}
    k = len(votes[0]) if votes else max(classifier) + 1
    names = list(eval_result.get("factor_names") or factor_names) or [f"factor {j}" for j in range(k)]
    active = eval_result.get("active_dims")
    dims = list(range(len(classifier)))
    if active is not None and len(active) == len(classifier) and max(active, default=-1) >= len(classifier):
        dims = [int(a) for a in active]  # a classifier over active dimensions only: map rows back to dims
    return {d: str(names[c]) for d, c in zip(dims, classifier, strict=True)
            if 0 <= c < len(names) and (active is None or d in active)}


def row_labels(tr: Traversal, factors: dict[int, str] | None = None, prefix: str = "z") -> list[str]:
    """One label per traversal row, e.g. ``"z3  KL=2.31  → posX"``."""
    factors = factors or {}
    labels = []
    for d in tr.order:
        parts = [f"{prefix}{d}"]
        if tr.kl is not None:
            parts.append(f"KL={tr.kl[d]:.2f}")
        if int(d) in factors:
            parts.append(f"→ {factors[int(d)]}")
        labels.append("  ".join(parts))
    return labels


def reconstructions(model: Any, n: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, reconstructions) of ``n`` random images, decoding the posterior mean: (n, C, H, W) each.

    For a GAN this is G(Q(x)), which shows how much of the image the codes alone determine.
    """
    x = model.data.sample_observations(n, np.random.default_rng(seed))
    return x, _reconstruct(model, x)


def _reconstruct(model: Any, x: np.ndarray) -> np.ndarray:
    mu, _ = _encode(model, x)
    code = np.clip(mu, -1.0, 1.0) if model.kind == "gan" else mu
    return _decode(model, code.astype(np.float32))


def prior_samples(model: Any, n: int = 36, seed: int = 0) -> np.ndarray:
    """Decoded codes drawn from the prior: N(0, I) for a VAE, U(−1, 1) for a GAN's codes. (n, C, H, W)."""
    rng = np.random.default_rng(seed)
    shape = (n, model.latent_dim)
    z = rng.uniform(-1.0, 1.0, shape) if model.kind == "gan" else rng.standard_normal(shape)
    return _decode(model, z.astype(np.float32))


def _load_model(run_dir: Path, data_path: str | Path | None = None) -> Any:
    from ..run.trained import load  # late: figures need torch and the networks only when drawing from a checkpoint

    return load(run_dir) if data_path is None else load(run_dir, data_path=data_path)


def _column_labels(tr: Traversal, kind: str) -> list[str]:
    # prior and GAN sweeps share one value per column; a posterior sweep is an offset from each seed's mu
    offsets = np.linspace(-1.0, 1.0, tr.values.shape[2]) * (1.0 if kind == "gan" else tr.limit)
    return [f"{'Δ' if tr.mode == 'posterior' and kind != 'gan' else ''}{v:+.1f}" for v in offsets]


def write_visuals(
    run_dir: str | Path,
    seed: int = 0,
    n_seeds: int = 3,
    *,
    n_steps: int = 10,
    limit: float = 3.0,
    mode: str = "prior",
    model: Any = None,
    data_path: str | Path | None = None,
) -> list[Path]:
    """Draw a run's figures into ``run_dir/figures/`` and return the paths written.

    Writes ``traversal_seed{i}.png`` (one per seed image), ``traversal.gif``, ``reconstructions.png``,
    ``samples.png``, ``curves.png`` (when ``log.jsonl`` has data) and ``traversal.json`` (row order, KL
    and factor labels, read by the report). ``model`` defaults to ``factorvae.load(run_dir)`` (reading the
    data from ``data_path`` when given). Every
    file is written to a temporary name and renamed, so a reader never sees half a PNG.
    """
    run_dir = Path(run_dir)
    out = run_dir / "figures"
    written: list[Path] = []

    def put(name: str, data: bytes) -> None:
        atomic_write_bytes(out / name, data)
        written.append(out / name)
        bar.update()

    # tqdm's disable=None: a bar on a terminal, silent in logs and tests
    curves = curves_from_run(run_dir)  # first: a damaged log is refused before any figure is written
    with tqdm(total=n_seeds + 5, desc="figures", unit="fig", disable=None) as bar:
        model = model if model is not None else _load_model(run_dir, data_path)
        kind, data = model.kind, model.data
        eval_json = read_json(run_dir / "eval.json") or {}
        factors = factor_of_dim(eval_json.get("factorvae"), data.factor_names) if data.has_factors else {}
        seeds = data.sample_observations(n_seeds, np.random.default_rng(seed))
        tr = traversal_grid(model, seeds, n_steps, limit, mode, seed=seed)
        labels = row_labels(tr, factors, prefix="c" if kind == "gan" else "z")
        cols, recon = _column_labels(tr, kind), _reconstruct(model, seeds)
        for i in range(n_seeds):
            title = f"seed image {i}: {'code' if kind == 'gan' else mode} traversal, one row per dimension"
            fig = traversal_figure(tr.grid[i], labels, col_labels=cols, title=title,
                                   header=np.stack([seeds[i], recon[i]]), header_label="seed, reconstruction")
            put(f"traversal_seed{i}.png", figure_to_png(fig))
        short = [lab.split("  ")[0] + (f" {factors[int(d)]}" if int(d) in factors else "")
                 for lab, d in zip(labels, tr.order, strict=True)]
        put("traversal.gif", traversal_gif(tr.grid, short))
        pairs = reconstructions(model, 10, seed + 1)  # other images than the traversal seeds
        put("reconstructions.png", figure_to_png(reconstruction_figure(*pairs)))
        put("samples.png", figure_to_png(samples_figure(prior_samples(model, 36, seed))))
        if curves is not None:
            put("curves.png", figure_to_png(curves))
        meta = {"kind": kind, "mode": tr.mode, "limit": tr.limit, "n_steps": n_steps, "seed": seed,
                "n_seeds": n_seeds, "order": tr.order.tolist(), "labels": labels,
                "kl": None if tr.kl is None else [float(v) for v in tr.kl],
                "factors": {str(d): f for d, f in factors.items()}}
        put("traversal.json", (json.dumps(meta, indent=2) + "\n").encode())
    return written
