"""3D Shapes: the built-in renderer's factor grid and the reader of the release's h5 file (docs/paper.md §8)."""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from factorvae.data import DataError, factors_to_index, index_to_factors, load
from factorvae.data.factors import to_float
from factorvae.data.shapes3d import (
    FACTOR_SIZES,
    HUES,
    ORIENTATIONS,
    SCALES,
    SKY_RGB,
    Shapes3D,
    palette,
)
from factorvae.data.shapes3d_file import Shapes3DFile


@pytest.fixture(scope="module")
def shapes() -> Shapes3D:
    return Shapes3D()


def test_factor_grid_matches_the_release(shapes: Shapes3D) -> None:
    assert shapes.factor_names == ("floor_hue", "wall_hue", "object_hue", "scale", "shape", "orientation")
    assert shapes.factor_sizes == (10, 10, 10, 8, 4, 15)
    assert shapes.num_examples == 480_000
    assert shapes.observation_shape == (3, 64, 64)
    np.testing.assert_allclose(HUES, np.arange(10) / 10)
    np.testing.assert_allclose(ORIENTATIONS[[0, 7, 14]], [-30, 0, 30])
    np.testing.assert_allclose(SCALES[[0, -1]], [0.75, 1.25])


def test_images_are_uint8_rgb_and_deterministic(shapes: Shapes3D) -> None:
    idx = np.random.default_rng(0).integers(0, 480_000, 50)
    a = shapes.images(idx)
    assert a.dtype == np.uint8 and a.shape == (50, 3, 64, 64)
    assert a.min() < 60 and a.max() > 200  # shading spans dark shadows to full value
    np.testing.assert_array_equal(a, shapes.images(idx))
    second = load("shapes3d")  # the built-in version when no path is given
    assert isinstance(second, Shapes3D)
    np.testing.assert_array_equal(a, second.images(idx))  # a second renderer agrees byte for byte
    obs = shapes.observations(index_to_factors(idx, FACTOR_SIZES))
    assert obs.dtype == np.float32 and 0.0 <= obs.min() and obs.max() <= 1.0


@pytest.mark.parametrize("k", range(6))
def test_every_factor_changes_the_image(shapes: Shapes3D, k: int) -> None:
    rng = np.random.default_rng(k)
    f = shapes.sample_factors(400, rng)
    g = f.copy()
    g[:, k] = (f[:, k] + rng.integers(1, FACTOR_SIZES[k], len(f))) % FACTOR_SIZES[k]  # another value of k
    a = shapes.images(factors_to_index(f, FACTOR_SIZES)).astype(int)
    b = shapes.images(factors_to_index(g, FACTOR_SIZES)).astype(int)
    diff = np.abs(a - b).reshape(len(f), -1)
    assert (diff.max(1) > 30).all(), shapes.factor_names[k]  # clearly visible, not rounding noise


def test_all_480_geometries_are_distinct(shapes: Shapes3D) -> None:
    # the last three factors (scale, shape, orientation) vary fastest: indices 0..479 share the hues
    flat = shapes.images(np.arange(480)).reshape(480, -1)
    assert len(np.unique(flat, axis=0)) == 480
    for labels in shapes.labels:  # every scene shows floor, wall and object
        counts = np.bincount(labels.ravel(), minlength=3)
        assert (counts[:3] > 100).all()


def test_region_colours_follow_the_hues(shapes: Shapes3D) -> None:
    f = np.array([[0, 3, 6, 4, 0, 7]])  # red floor, green wall, blue object
    img = shapes.images(factors_to_index(f, FACTOR_SIZES))[0].astype(int)  # (3, 64, 64)
    labels = shapes.labels[factors_to_index(f, FACTOR_SIZES)[0] % 480]
    for region, channel in ((0, 0), (1, 1), (2, 2)):  # the dominant channel of each region
        pixels = img[:, labels == region]  # (3, n)
        assert (pixels.argmax(0) == channel).mean() > 0.9


def geometry(scale: int, shape: int, orientation: int) -> int:
    return (scale * 4 + shape) * 15 + orientation  # index into Shapes3D.labels / weights (image index % 480)


def test_sky_band_is_the_release_colour_in_every_image(shapes: Shapes3D) -> None:
    # the release's sky is (154, 226, 249) in every frame, whatever the factors; its lower edge (the walls'
    # top) lies at rows 15-20, and the tallest capsule reaches up to row 7
    assert (shapes.labels[:, :6] == 3).all()
    idx = np.r_[0, 479_999, np.random.default_rng(3).integers(0, 480_000, 30)]
    top = shapes.images(idx)[:, :, :6].transpose(0, 2, 3, 1).reshape(-1, 3)
    np.testing.assert_array_equal(np.unique(top, axis=0), [[154, 226, 249]])
    np.testing.assert_allclose(SKY_RGB * 255, [154, 226, 249])


def test_regions_are_fully_saturated_at_the_release_hues(shapes: Shapes3D) -> None:
    # shading scales the value only (no white highlight): every region pixel is v × its hue's pure colour
    f = np.array([[0, 6, 3, 7, 3, 14], [7, 2, 9, 0, 0, 0], [4, 8, 1, 3, 2, 9]])
    images = shapes.images(factors_to_index(f, FACTOR_SIZES)).astype(float) / 255
    np.testing.assert_allclose(palette()[[0, 3, 6]], [[1, 0, 0], [0.2, 1, 0], [0, 0.4, 1]], atol=1e-6)
    for img, row in zip(images, f, strict=True):
        labels = shapes.labels[geometry(*row[3:])]
        for region in range(3):
            pixels = img[:, labels == region]  # (3, n)
            value = pixels.max(0)
            bright = value > 0.3  # rounding to 8 bits blurs the hue of dark pixels
            interior = np.abs(pixels[:, bright] / value[bright] - palette()[row[region]][:, None]).max(0) < 0.02
            assert interior.mean() > 0.85, (row, region)  # the rest: anti-aliased edges


# Object pixels (labels == 2) at orientation 7, per shape (cube, cylinder, sphere, capsule) and scale 0..7.
# The release's frames at scale 0 (orientation 0..14) and its capsule at every scale (orientation 14) have
# the same outlines within about a pixel (benchmarks/reference_shapes3d.py; tests below).
OBJECT_PIXELS = [
    [270, 324, 360, 420, 508, 578, 678, 814],
    [248, 300, 356, 402, 470, 562, 652, 704],
    [238, 286, 344, 398, 464, 534, 602, 682],
    [298, 372, 454, 508, 614, 716, 786, 908],
]


def test_object_size_per_shape_and_scale(shapes: Shapes3D) -> None:
    counts = np.array([[(shapes.labels[geometry(c, k, 7)] == 2).sum() for c in range(8)] for k in range(4)])
    np.testing.assert_allclose(counts, OBJECT_PIXELS, rtol=0.01)
    assert (np.diff(counts, axis=1) > 0).all()  # every scale step grows every shape


def test_room_corner_slides_with_orientation(shapes: Shapes3D) -> None:
    # the walls' top edge dips at the room corner (the farthest wall point): right of centre at orientation
    # 0, gone (a flat edge, the back wall face on) at orientation 7, left of centre at orientation 14
    sky = shapes.weights[:, 3].reshape(480, 64, 64).sum(1)[:, 2:62]  # (480, 60) sky rows per column
    dip = [np.flatnonzero(sky[geometry(0, 0, o)] == sky[geometry(0, 0, o)].max()).mean() + 2 for o in (0, 14)]
    assert abs(dip[0] - 43.5) <= 1.5 and abs(dip[1] - 20.0) <= 1.5  # the release: columns 44 and 20
    assert np.ptp(sky[geometry(0, 0, 7)]) < 0.3 and abs(sky[geometry(0, 0, 7)].mean() - 17.2) < 0.5


def test_soft_shadow_right_of_and_below_the_object(shapes: Shapes3D) -> None:
    f = np.array([[0, 6, 3, 7, 3, 14]])  # the release's big capsule: shadow centred near (55.5, 38.1)
    img = shapes.images(factors_to_index(f, FACTOR_SIZES))[0].astype(float) / 255
    floor = shapes.labels[geometry(7, 3, 14)] == 0
    value = img.max(0)
    dark = floor & (value < 0.6)
    rows, cols = np.nonzero(dark)
    assert 180 < dark.sum() < 300 and abs(rows.mean() - 55.5) < 1.5 and abs(cols.mean() - 38.1) < 1.5
    assert value[dark].min() < 0.35 and value[floor & ~dark].mean() > 0.95  # the floor is lit to full value
    assert ((value[floor] > 0.4) & (value[floor] < 0.55)).sum() > 10  # a penumbra, not a hard edge


REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference"


@pytest.mark.skipif(not (REFERENCE / "3dshapes-release.gif").is_file(), reason="no release frames in shared/reference")
def test_release_frames_match(shapes: Shapes3D) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import reference_shapes3d as ref

    cells = ref.release_cells(REFERENCE)
    m = ref.measure(shapes, cells)
    # the GIF sweeps orientation 0..14 (cube, scale 0), shape 1..3 and scale 0..7 at orientation 14, then hues
    expected = [(0, 0, o) for o in range(15)] + [(0, 1, 14), (0, 2, 14)] + [(c, 3, 14) for c in range(8)]
    found = [tuple(row) for row in m["factors"][: len(expected), 3:]]
    assert sum(a == b for a, b in zip(found, expected, strict=True)) >= len(expected) - 2
    assert (m["factors"][len(expected) :, 3:] == (7, 3, 14)).all()
    assert np.abs(m["our_sky"].mean(0) - m["sky"].mean(0)).max() < 2  # the target was 25 levels
    assert np.abs(m["sky_edge"]).mean() < 0.5
    gap = np.abs(ref.hue_gap(m["ours"], m["release"]))  # (frames, 3) degrees
    assert np.isfinite(gap).all() and gap.mean() < 0.6 and gap.max() < 4


def write_h5(path, images: np.ndarray, labels: np.ndarray, **options) -> None:
    with h5py.File(path, "w") as h5:
        h5.create_dataset("images", data=images, **options)
        h5.create_dataset("labels", data=labels)


def small_grid(shapes: Shapes3D) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A 2×1×2×2×4×3 sub-grid in release order: (images N×64×64×3, float labels N×6, built-in indices N)."""
    picks = [[0, 5], [2], [1, 9], [0, 7], [0, 1, 2, 3], [0, 7, 14]]
    values = [HUES, HUES, HUES, SCALES, np.arange(4.0), ORIENTATIONS]
    sub = index_to_factors(np.arange(96), [len(p) for p in picks])  # (96, 6) positions in the sub-grid
    factors = np.stack([np.asarray(p)[sub[:, k]] for k, p in enumerate(picks)], 1)
    labels = np.stack([values[k][factors[:, k]] for k in range(6)], 1)
    idx = factors_to_index(factors, FACTOR_SIZES)
    return shapes.images(idx).transpose(0, 2, 3, 1), labels, idx


@pytest.mark.parametrize("mode", ["memory", "memmap", "h5py"])
def test_file_reader_returns_the_files_images(shapes: Shapes3D, tmp_path, mode: str) -> None:
    images, labels, idx = small_grid(shapes)
    compressed = {"compression": "gzip", "chunks": (8, 64, 64, 3)} if mode == "h5py" else {}
    write_h5(tmp_path / "3dshapes.h5", images, labels, **compressed)
    data = Shapes3DFile(tmp_path / "3dshapes.h5", in_memory=mode == "memory")
    assert (data._offset is None) == (mode == "h5py")  # a contiguous dataset is memory-mapped
    assert data.factor_sizes == (2, 1, 2, 2, 4, 3) and data.num_examples == 96
    np.testing.assert_allclose(data.factor_values[3], SCALES[[0, 7]])
    query = np.array([95, 3, 3, 0, 50])  # unsorted with a repeat: h5py needs both handled
    np.testing.assert_array_equal(data.images(query), shapes.images(idx[query]))
    f = data.sample_factors(8, np.random.default_rng(0))  # factors of the small grid
    rows = factors_to_index(f, data.factor_sizes)
    np.testing.assert_array_equal(data.observations(f), to_float(shapes.images(idx[rows])))
    clone = pickle.loads(pickle.dumps(data))  # data loader workers get a copy; the h5 handle is reopened
    np.testing.assert_array_equal(clone.images(query), data.images(query))
    assert isinstance(load("shapes3d", tmp_path / "3dshapes.h5"), Shapes3DFile)


def one_line_error(call, match: str) -> str:
    with pytest.raises(DataError, match=match) as info:
        call()
    assert "\n" not in str(info.value)
    return str(info.value)


def test_file_reader_errors(shapes: Shapes3D, tmp_path) -> None:
    images, labels, _ = small_grid(shapes)
    one_line_error(lambda: Shapes3DFile(tmp_path / "absent.h5"), "not found")
    (tmp_path / "text.h5").write_text("not hdf5")
    one_line_error(lambda: Shapes3DFile(tmp_path / "text.h5"), "not an HDF5 file")
    with h5py.File(tmp_path / "no_labels.h5", "w") as h5:
        h5.create_dataset("images", data=images)
    one_line_error(lambda: Shapes3DFile(tmp_path / "no_labels.h5"), r"missing dataset\(s\) \['labels'\]")
    write_h5(tmp_path / "grey.h5", images[..., 0], labels)
    one_line_error(lambda: Shapes3DFile(tmp_path / "grey.h5"), r"expected uint8 \(N, 64, 64, 3\)")
    write_h5(tmp_path / "float.h5", images.astype(np.float32), labels)
    one_line_error(lambda: Shapes3DFile(tmp_path / "float.h5"), "expected uint8")
    write_h5(tmp_path / "labels.h5", images, labels[:, :5])
    one_line_error(lambda: Shapes3DFile(tmp_path / "labels.h5"), r"expected \(96, 6\)")
    order = np.random.default_rng(0).permutation(96)
    write_h5(tmp_path / "shuffled.h5", images[order], labels[order])
    one_line_error(lambda: Shapes3DFile(tmp_path / "shuffled.h5"), "not a full factor grid")
    write_h5(tmp_path / "partial.h5", images[:90], labels[:90])
    one_line_error(lambda: Shapes3DFile(tmp_path / "partial.h5"), "not a full factor grid")
