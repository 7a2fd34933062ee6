"""Data set listing, info and the factor-sweep preview grid (paper §4 traversals; docs/paper.md §8)."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from PIL import Image

from factorvae.data import GroundTruthData, index_to_factors
from factorvae.data.dsprites import DSprites
from factorvae.data.preview import (
    GAP,
    dataset_info,
    list_datasets,
    preview_grid,
    save_png,
    sweep_values,
)
from factorvae.data.shapes3d import HUES, ORIENTATIONS, SCALES, Shapes3D


def tiles(grid: np.ndarray, row: int, n: int, side: int = 64) -> list[np.ndarray]:
    y = row * (side + GAP)
    return [grid[y : y + side, i * (side + GAP) : i * (side + GAP) + side] for i in range(n)]


def test_shapes3d_rows_sweep_one_factor_each() -> None:
    data = Shapes3D()
    grid = preview_grid(data, seed=1, n_cols=10)
    assert grid.dtype == np.uint8 and grid.shape == (6 * 64 + 5 * GAP, 10 * 64 + 9 * GAP, 3)
    for k, size in enumerate(data.factor_sizes):
        shown = tiles(grid, k, min(size, 10))
        for a, b in zip(shown, shown[1:], strict=False):  # every step along a row changes the picture
            assert np.abs(a.astype(int) - b.astype(int)).max() > 30, data.factor_names[k]
    # the shape row has 4 tiles; the rest of it is background
    assert (tiles(grid, 4, 10)[4] == 255).all() and (tiles(grid, 4, 10)[3] != 255).any()
    np.testing.assert_array_equal(grid, preview_grid(data, seed=1, n_cols=10))
    assert not np.array_equal(grid, preview_grid(data, seed=2, n_cols=10))


def test_sweep_values_are_even_and_include_the_ends() -> None:
    np.testing.assert_array_equal(sweep_values(15, 10), [0, 2, 3, 5, 6, 8, 9, 11, 12, 14])
    np.testing.assert_array_equal(sweep_values(4, 10), [0, 1, 2, 3])
    np.testing.assert_array_equal(sweep_values(32, 3), [0, 16, 31])


def test_greyscale_is_shown_as_grey_rgb() -> None:
    grid = preview_grid(DSprites(), seed=0, n_cols=5)
    assert grid.shape == (5 * 64 + 4 * GAP, 5 * 64 + 4 * GAP, 3)
    assert (grid[..., 0] == grid[..., 1]).all() and (grid[..., 1] == grid[..., 2]).all()


class NoFactors(GroundTruthData):
    name = "noise"
    observation_shape = (3, 8, 8)
    num_examples = 100

    def images(self, indices: np.ndarray) -> np.ndarray:
        return np.broadcast_to(np.asarray(indices, dtype=np.uint8)[:, None, None, None], (len(indices), 3, 8, 8))


def test_data_without_factors_gives_random_images() -> None:
    grid = preview_grid(NoFactors(), seed=0, n_cols=4, n_rows=3)
    assert grid.shape == (3 * 8 + 2 * GAP, 4 * 8 + 3 * GAP, 3)
    values = {int(grid[r * (8 + GAP), c * (8 + GAP), 0]) for r in range(3) for c in range(4)}
    assert len(values) > 6  # random picks, not one image repeated


def test_list_datasets() -> None:
    listed = {d["name"]: d for d in list_datasets()}
    assert set(listed) >= {"dsprites", "shapes3d", "celeba", "chairs", "faces"}
    assert listed["shapes3d"]["builtin"] and listed["shapes3d"]["has_factors"]
    for name in ("celeba", "chairs", "faces"):
        assert not listed[name]["builtin"] and not listed[name]["has_factors"]
    assert all(d["description"] for d in listed.values())


def test_dataset_info(tmp_path) -> None:
    info = dataset_info("shapes3d")
    assert info["source"] == "built-in" and info["num_examples"] == 480_000
    assert info["observation_shape"] == [3, 64, 64] and info["factor_sizes"] == [10, 10, 10, 8, 4, 15]
    factors = index_to_factors(np.arange(12), (1, 1, 1, 2, 2, 3))
    labels = np.stack(
        [
            HUES[factors[:, 0]],
            HUES[factors[:, 1]],
            HUES[factors[:, 2]],
            SCALES[factors[:, 3]],
            factors[:, 4].astype(float),
            ORIENTATIONS[factors[:, 5]],
        ],
        1,
    )
    with h5py.File(tmp_path / "3dshapes.h5", "w") as h5:
        h5["images"] = np.zeros((12, 64, 64, 3), dtype=np.uint8)
        h5["labels"] = labels
    info = dataset_info("shapes3d", tmp_path / "3dshapes.h5")
    assert info["source"] == str(tmp_path / "3dshapes.h5") and info["factor_sizes"] == [1, 1, 1, 2, 2, 3]


def test_save_png(tmp_path) -> None:
    picture = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    path = save_png(picture, tmp_path / "p.png", zoom=3)
    back = np.asarray(Image.open(path))
    assert back.shape == (15, 21, 3)
    np.testing.assert_array_equal(back[::3, ::3], picture)


@pytest.mark.parametrize("n_cols", [1, 3])
def test_small_grids(n_cols: int) -> None:
    grid = preview_grid(NoFactors(), seed=0, n_cols=n_cols, n_rows=1)
    assert grid.shape == (8, n_cols * 8 + (n_cols - 1) * GAP, 3)
