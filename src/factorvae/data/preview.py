"""Looking at a data set before training on it (paper §4; docs/paper.md §8): what the registry holds, what a
data set contains, and a picture of its factors.

The factor grid shows one row per factor: a random factor row held fixed while that one factor sweeps its
values. It is the data-side twin of the paper's latent traversals (paper §4): a factor that
does not visibly change along its row cannot be learned from the images either. These functions back
the CLI's ``factorvae data list|info|preview``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import DATASETS, load
from .factors import DataError, GroundTruthData, factors_to_index

GAP = 2  # pixels between tiles
BACKGROUND = 255  # white gaps and empty tiles


def list_datasets() -> list[dict]:
    """One dict per registered data set: name, builtin, has_factors, description."""
    return [
        {"name": name, "builtin": e.builtin, "has_factors": e.has_factors, "description": e.description}
        for name, e in DATASETS.items()
    ]


def dataset_info(name: str, path: str | Path | None = None) -> dict:
    """What ``load(name, path)`` gives: name, source, num_examples, observation_shape, factor names/sizes.

    Loading an image folder for the first time decodes it into the cache (see docs/data.md).
    """
    data = load(name, path)
    info = data.describe()
    info["source"] = "built-in" if path is None else str(path)
    if name in DATASETS:
        info["description"] = DATASETS[name].description
    return info


def sweep_values(size: int, n_cols: int) -> np.ndarray:
    """Up to n_cols factor values spread evenly over 0..size-1, ends included."""
    return np.unique(np.round(np.linspace(0, size - 1, min(size, n_cols))).astype(np.int64))


def preview_grid(data: GroundTruthData, seed: int = 0, n_cols: int = 10, n_rows: int = 6) -> np.ndarray:
    """A uint8 (H, W, 3) picture of a data set.

    With factors: one row per factor (in ``data.factor_names`` order), starting from one random factor row and
    sweeping that factor over up to ``n_cols`` evenly spaced values. Without factors: ``n_rows`` × ``n_cols``
    random images. Greyscale and binary images are shown as grey RGB.
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise DataError(f"seed must be an integer >= 0, got {seed!r}")
    rng = np.random.default_rng(seed)
    if data.has_factors:
        base = data.sample_factors(1, rng)[0]  # (K,)
        rows = []
        for k, size in enumerate(data.factor_sizes):
            values = sweep_values(size, n_cols)
            factors = np.repeat(base[None], len(values), axis=0)  # (v, K)
            factors[:, k] = values
            rows.append(data.images(factors_to_index(factors, data.factor_sizes)))
    else:
        if data.num_examples == 0:
            raise DataError(f"data set '{data.name}' has no images to preview")
        picks = data.sample_indices(n_rows * n_cols, rng)
        rows = [data.images(picks[r * n_cols : (r + 1) * n_cols]) for r in range(n_rows)]
    return tile(rows, n_cols)


def tile(rows: list[np.ndarray], n_cols: int) -> np.ndarray:
    """Rows of uint8 images (n_i, C, h, w), n_i <= n_cols, as one (H, W, 3) picture with gaps."""
    h, w = rows[0].shape[2:]
    grid = np.full((len(rows) * (h + GAP) - GAP, n_cols * (w + GAP) - GAP, 3), BACKGROUND, dtype=np.uint8)
    for r, images in enumerate(rows):
        for i, image in enumerate(images):
            y, x = r * (h + GAP), i * (w + GAP)
            grid[y : y + h, x : x + w] = image.transpose(1, 2, 0)  # (C, h, w) -> (h, w, C); C = 1 broadcasts
    return grid


def save_png(picture: np.ndarray, path: str | Path, zoom: int = 1) -> Path:
    """Write a uint8 (H, W, 3) picture as PNG, each pixel drawn as a zoom × zoom block."""
    from PIL import Image

    check_picture(path, zoom)
    if zoom > 1:
        picture = picture.repeat(zoom, axis=0).repeat(zoom, axis=1)
    path = Path(path)
    Image.fromarray(picture).save(path)
    return path


def check_picture(path: str | Path, zoom: int) -> None:
    """Refuse, before anything is drawn, a zoom below 1 and a file name whose type PIL cannot write."""
    from PIL import Image

    if isinstance(zoom, bool) or not isinstance(zoom, int) or zoom < 1:
        raise DataError(f"zoom must be an integer >= 1, got {zoom!r}")
    suffix = Path(path).suffix.lower()
    if Image.registered_extensions().get(suffix) not in Image.SAVE:
        raise DataError(f"{path}: cannot write a picture of type '{suffix or 'none'}'; give a name ending in "
                        ".png (or .jpg, .gif, .bmp, .tif)")
