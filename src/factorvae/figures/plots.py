"""Figures of the paper's §4 from plain arrays and run-directory files.

Latent traversals (paper Figs. 3, 7–10: one row per code dimension, the dimension swept while the others
stay fixed), reconstructions, samples from the prior, and training curves (reconstruction error, KL, the
discriminator's TC estimate next to the true TC as in paper Fig. 5, the disentanglement metric over
training as in Fig. 6). Every function here takes numpy arrays (or the parsed log lines) and returns a
:class:`matplotlib.figure.Figure` built without pyplot, so nothing touches global state and the module is
safe in threads and in headless processes. Images are float in [0, 1] (or uint8) shaped (n, C, H, W).
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image, ImageDraw, ImageFont

from ..files import read_jsonl_lines

DPI = 100  # pixel-exact image figures: 1 inch = 100 px; modest so PNG encoding stays fast
PAD = 2  # pixels between tiles
PAD_VALUE = 0.55  # mid grey: visible against both black (dSprites) and white backgrounds


def to_rgb(images: np.ndarray) -> np.ndarray:
    """(n, C, H, W) with C in {1, 3}, float in [0, 1] or uint8 -> float32 (n, H, W, 3) in [0, 1]."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be shaped (n, C, H, W) with C = 1 or 3, got {images.shape}")
    out = images.astype(np.float32) / 255.0 if images.dtype == np.uint8 else images.astype(np.float32)
    out = np.clip(out, 0.0, 1.0).transpose(0, 2, 3, 1)  # (n, H, W, C)
    return np.repeat(out, 3, axis=3) if out.shape[3] == 1 else out


def tile_images(images: np.ndarray, ncols: int, pad: int = PAD, pad_value: float = PAD_VALUE) -> np.ndarray:
    """Lay n images (n, C, H, W) out row-major on a grid with ``ncols`` columns: float32 (H', W', 3).

    Padding goes only between tiles, so tile ``i`` of a one-row mosaic is centred at
    ``i * (W + pad) + W / 2``; unused cells of the last row are left at ``pad_value``.
    """
    rgb = to_rgb(images)
    n, h, w, _ = rgb.shape
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    out = np.full((nrows * h + (nrows - 1) * pad, ncols * w + (ncols - 1) * pad, 3), pad_value, np.float32)
    for i in range(n):
        r, c = divmod(i, ncols)
        out[r * (h + pad) : r * (h + pad) + h, c * (w + pad) : c * (w + pad) + w] = rgb[i]
    return out


def _auto_scale(tile_h: int) -> int:
    # small images (e.g. 32 px) are shown at an integer zoom so that every tile is at least ~48 px tall;
    # integer zoom with nearest-neighbour keeps binary dSprites pixels sharp
    return max(1, round(48 / tile_h))


def _text_width_px(texts: Sequence[str]) -> int:
    """Widest rendered width in pixels of the row labels, measured with Agg so long labels never clip."""
    fig = Figure(dpi=DPI)
    renderer = FigureCanvasAgg(fig).get_renderer()
    widths = [fig.text(0, 0, t, fontsize=9, family="monospace").get_window_extent(renderer).width
              for t in texts if t]
    return math.ceil(max(widths, default=0.0))


def _strips_figure(
    strips: Sequence[np.ndarray],
    labels: Sequence[str],
    *,
    scale: int,
    title: str | None = None,
    col_labels: Sequence[str] | None = None,
    col_centres: Sequence[float] | None = None,
) -> Figure:
    """Stacked image strips (H, W, 3), each in its own axes, laid out in exact pixels with a label column.

    Sizes are computed in pixels so that each image pixel maps to ``scale`` screen pixels: no resampling
    blur, and the PNG's size is predictable (tests check it).
    """
    label_px = 14 + _text_width_px(labels)
    top = 30 if title else 8
    bottom = 22 if col_labels else 8
    gap, right = 4, 8
    width = max(s.shape[1] for s in strips) * scale
    heights = [s.shape[0] * scale for s in strips]
    fig_w = label_px + width + right
    fig_h = top + sum(heights) + gap * (len(strips) - 1) + bottom
    fig = Figure(figsize=(fig_w / DPI, fig_h / DPI), dpi=DPI)
    y = fig_h - top  # pixels from the bottom to the top of the next strip
    for strip, label, h in zip(strips, labels, heights, strict=True):
        y -= h
        ax = fig.add_axes((label_px / fig_w, y / fig_h, strip.shape[1] * scale / fig_w, h / fig_h))
        ax.imshow(strip, interpolation="nearest", aspect="auto")
        ax.set_axis_off()
        fig.text((label_px - 6) / fig_w, (y + h / 2) / fig_h, label, ha="right", va="center",
                 fontsize=9, family="monospace")
        y -= gap
    if title:
        fig.text(0.5, 1 - 6 / fig_h, title, ha="center", va="top", fontsize=10)
    if col_labels and col_centres:
        for text, cx in zip(col_labels, col_centres, strict=True):
            fig.text((label_px + cx * scale) / fig_w, (bottom - 4) / fig_h, text, ha="center", va="top",
                     fontsize=8)
    return fig


def traversal_figure(
    grid: np.ndarray,
    row_labels: Sequence[str] | None = None,
    *,
    col_labels: Sequence[str] | None = None,
    title: str | None = None,
    scale: int | None = None,
    header: np.ndarray | None = None,
    header_label: str = "seed",
) -> Figure:
    """Latent traversal (paper Fig. 3): grid (R, S, C, H, W) -> one row per code dimension, S columns.

    ``row_labels`` (e.g. ``"z3  KL=2.31  → posX"``) are written left of each row; ``col_labels`` (the swept
    values) under the last row. ``header`` images (k, C, H, W), e.g. the seed and its reconstruction, form
    an extra first strip so the reader sees what is being traversed.
    """
    grid = np.asarray(grid)
    if grid.ndim != 5:
        raise ValueError(f"grid must be shaped (R, S, C, H, W), got {grid.shape}")
    rows, steps, _, h, w = grid.shape
    labels = list(row_labels) if row_labels is not None else [f"row {r}" for r in range(rows)]
    if len(labels) != rows:
        raise ValueError(f"{rows} rows but {len(labels)} row labels")
    strips = [tile_images(grid[r], ncols=steps) for r in range(rows)]
    if header is not None:
        strips, labels = [tile_images(header, ncols=len(header)), *strips], [header_label, *labels]
    centres = [i * (w + PAD) + w / 2 for i in range(steps)]
    return _strips_figure(strips, labels, scale=scale or _auto_scale(h), title=title,
                          col_labels=col_labels, col_centres=centres)


def reconstruction_figure(
    inputs: np.ndarray, recons: np.ndarray, *, ncols: int = 10, scale: int | None = None
) -> Figure:
    """Inputs above their reconstructions: (n, C, H, W) each; rows of ``ncols``, alternating input/recon."""
    if np.shape(inputs) != np.shape(recons):
        raise ValueError(f"inputs {np.shape(inputs)} and reconstructions {np.shape(recons)} differ in shape")
    n = len(inputs)
    strips, labels = [], []
    for start in range(0, n, ncols):
        chunk = slice(start, start + ncols)
        strips += [tile_images(inputs[chunk], ncols), tile_images(recons[chunk], ncols)]
        labels += ["input", "reconstruction"]
    return _strips_figure(strips, labels, scale=scale or _auto_scale(np.shape(inputs)[2]))


def samples_figure(images: np.ndarray, *, ncols: int | None = None, scale: int | None = None,
                   title: str | None = None) -> Figure:
    """Decoded samples (n, C, H, W) on one square-ish mosaic."""
    ncols = ncols or math.ceil(math.sqrt(len(images)))
    return _strips_figure([tile_images(images, ncols)], [""], scale=scale or _auto_scale(np.shape(images)[2]),
                          title=title)


def traversal_gif(
    grids: np.ndarray,
    tile_labels: Sequence[str] | None = None,
    *,
    scale: int | None = None,
    duration_ms: int = 120,
    pingpong: bool = True,
) -> bytes:
    """Animated traversal: grids (N, R, S, C, H, W) or (R, S, C, H, W) -> GIF bytes.

    Frame s shows, for each of N seed images (mosaic rows) and each of R dimensions (mosaic columns), the
    tile at step s, so every dimension's tile moves along its own sweep at once. With ``pingpong`` the
    sweep plays forward then back (2S − 2 frames) so the loop has no jump. Pillow merges identical
    consecutive frames, so a model whose decoder ignores every code yields fewer frames.
    """
    grids = np.asarray(grids)
    if grids.ndim == 5:
        grids = grids[None]
    if grids.ndim != 6:
        raise ValueError(f"grids must be shaped (N, R, S, C, H, W), got {grids.shape}")
    n, rows, steps, c, h, w = grids.shape
    order = list(range(steps)) + (list(range(steps - 2, 0, -1)) if pingpong else [])
    scale = scale or max(1, math.ceil(64 / h))  # tiles of at least 64 px: room for a label above each
    header = _gif_header(tile_labels, rows, w, scale) if tile_labels else None
    frames = []
    for s in order:
        tiles = grids[:, :, s].reshape(n * rows, c, h, w)
        mosaic = tile_images(tiles, ncols=rows, pad_value=1.0)
        pixels = (np.kron(mosaic, np.ones((scale, scale, 1))) * 255 + 0.5).astype(np.uint8)
        if header is not None:
            pixels = np.concatenate([header, pixels], axis=0)
        # grey images become single-channel GIF frames: exact, and no palette quantisation
        frames.append(Image.fromarray(pixels[..., 0] if c == 1 else pixels))
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=duration_ms, loop=0)
    return buf.getvalue()


def _gif_header(labels: Sequence[str], rows: int, tile_w: int, scale: int) -> np.ndarray:
    """A white strip with each column's label above its tile: uint8 (h, W, 3)."""
    if len(labels) != rows:
        raise ValueError(f"{rows} columns but {len(labels)} tile labels")
    width = (rows * tile_w + (rows - 1) * PAD) * scale
    img = Image.new("RGB", (width, 14), "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=10)
    for r, text in enumerate(labels):
        if draw.textlength(text, font=font) > tile_w * scale - 2:
            text = text.split()[0]  # "z3 posX" -> "z3" when the tile is too narrow for the factor name
        cx = (r * (tile_w + PAD) + tile_w / 2) * scale
        draw.text((cx, 7), text, fill="black", font=font, anchor="mm")
    return np.asarray(img)


def figure_to_png(fig: Figure, dpi: float | None = None) -> bytes:
    """PNG bytes of a figure at its own DPI (no tight bbox, so pixel-exact figures keep their size)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi or fig.dpi)
    return buf.getvalue()


# ---- training curves ----------------------------------------------------------------------------------


def read_json(path: Path) -> dict | None:
    """A JSON object from ``path``, or None when the file is missing or unreadable (a run still writing)."""
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def read_jsonl(path: Path) -> list[dict]:
    """The records of a run's ``.jsonl`` log ([] when there is none), read as a resume reads them
    (files.read_jsonl_lines: a torn last line is skipped); a file damaged otherwise, or not UTF-8, is a
    one-line RunError naming it."""
    from ..run.rundir import RunError  # late: run/ imports torch, which drawing curves does not need

    try:
        return [record for _, record in read_jsonl_lines(path)]
    except FileNotFoundError:
        return []
    except ValueError as exc:
        raise RunError(str(exc)) from None


def _series(records: Sequence[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of the records where ``key`` holds a finite number."""
    pairs = [(r["step"], float(r[key])) for r in records
             if isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool)
             and isinstance(r.get("step"), (int, float)) and math.isfinite(float(r[key]))]
    if not pairs:
        return np.zeros(0), np.zeros(0)
    steps, values = zip(*pairs, strict=True)
    return np.asarray(steps, float), np.asarray(values, float)


def _line(ax: Any, x: np.ndarray, y: np.ndarray, label: str | None = None, raw: bool = True) -> None:
    # per-step values are single-batch estimates and noisy: draw them faintly under a trailing running mean
    if len(y) > 60:
        k = max(2, len(y) // 40)
        smooth = np.convolve(y, np.ones(k) / k, mode="valid")
        (line,) = ax.plot(x[k - 1 :], smooth, lw=1.4, label=label)
        if raw:
            ax.plot(x, y, alpha=0.25, lw=0.8, color=line.get_color())
    else:
        ax.plot(x, y, lw=1.4, label=label, marker="." if len(y) < 20 else None)


def _metric_series(metric_records: Sequence[dict]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    # the "tc" entry's score is a TC in nats, not a score in [0, 1]: it goes to the TC panel as tc_true
    names = sorted({k for r in metric_records for k, v in r.items()
                    if isinstance(v, dict) and "score" in v and k != "tc"})
    flat = [{"step": r.get("step"), **{k: r[k]["score"] for k in names if isinstance(r.get(k), dict)}}
            for r in metric_records]
    return {k: _series(flat, k) for k in names if len(_series(flat, k)[0])}


def _curve_panels(log: Sequence[dict], metrics: Sequence[dict]) -> list[tuple[str, str, Any]]:
    """(title, y label, draw(ax)) for each panel whose data is present, in reading order."""
    panels: list[tuple[str, str, Any]] = []

    def simple(key: str, title: str, ylabel: str, hline: float | None = None) -> None:
        x, y = _series(log, key)
        if len(x):
            def draw(ax: Any) -> None:
                _line(ax, x, y)
                if hline is not None:
                    ax.axhline(hline, color="grey", ls="--", lw=0.8)
            panels.append((title, ylabel, draw))

    simple("recon", "Reconstruction error", "nats (Bernoulli NLL / image)")
    simple("kl", "KL(q(z|x) ‖ p(z)), total", "nats")
    per_dim = [r for r in log if isinstance(r.get("kl_per_dim"), list) and "step" in r]
    width = len(per_dim[-1]["kl_per_dim"]) if per_dim else 0
    per_dim = [r for r in per_dim if len(r["kl_per_dim"]) == width]
    if width:
        def draw_kl(ax: Any) -> None:
            x = np.asarray([r["step"] for r in per_dim], float)
            kl = np.asarray([r["kl_per_dim"] for r in per_dim], float)  # (T, D)
            for d in range(width):
                _line(ax, x, kl[:, d], label=f"z{d}", raw=False)  # ten raw traces would hide the means
            ax.legend(fontsize=6, ncol=2, loc="upper left", frameon=False)
        panels.append(("KL per dimension", "nats", draw_kl))
    tc_x, tc_y = _series(log, "tc")
    true_x, true_y = _series(metrics, "tc_true")
    if len(tc_x) or len(true_x):
        def draw_tc(ax: Any) -> None:
            if len(tc_x):
                _line(ax, tc_x, tc_y, label="discriminator estimate")
            if len(true_x):
                ax.plot(true_x, true_y, "o-", color="black", ms=3, lw=1, label="true TC (Monte Carlo)")
            ax.legend(fontsize=7, frameon=False)
        panels.append(("Total correlation (paper Fig. 5)", "nats", draw_tc))
    simple("d_acc", "Discriminator accuracy", "fraction (0.5 = chance)", hline=0.5)
    for key, title in (("critic_loss", "Critic loss"), ("wasserstein", "Wasserstein estimate"),
                       ("gp", "Gradient penalty"), ("mi", "Mutual-information bound")):
        simple(key, title, "")
    scores = _metric_series(metrics)
    if scores:
        def draw_scores(ax: Any) -> None:
            for name, (x, y) in scores.items():
                ax.plot(x, y, "o-", ms=3, lw=1.2, label=name)
            top = max(float(y.max()) for _, y in scores.values())
            ax.set_ylim(0, max(1.02, top * 1.05))
            ax.legend(fontsize=7, frameon=False)
        panels.append(("Disentanglement metric (paper Fig. 6)", "score", draw_scores))
    return panels


def curves_figure(log_records: Sequence[dict], metric_records: Sequence[dict] = (), *,
                  ncols: int = 3) -> Figure | None:
    """Training curves from ``log.jsonl`` and ``metrics.jsonl`` lines; None when there is nothing to draw.

    Panels whose data is absent are left out: a β-VAE log has no TC or discriminator panel, an
    InfoWGAN-GP log gets critic loss, gradient penalty, Wasserstein estimate and MI panels instead of
    reconstruction and KL, and the metric panel appears only where periodic evaluation ran.
    """
    panels = _curve_panels(log_records, metric_records)
    if not panels:
        return None
    ncols = min(ncols, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig = Figure(figsize=(3.6 * ncols, 2.6 * nrows), dpi=DPI, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, (title, ylabel, draw) in zip(axes, panels, strict=False):
        draw(ax)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("training step", fontsize=8)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in axes[len(panels) :]:
        fig.delaxes(ax)
    return fig


def curves_from_run(run_dir: str | Path) -> Figure | None:
    """:func:`curves_figure` of a run's ``log.jsonl`` and ``metrics.jsonl`` (either may be absent)."""
    run_dir = Path(run_dir)
    return curves_figure(read_jsonl(run_dir / "log.jsonl"), read_jsonl(run_dir / "metrics.jsonl"))
