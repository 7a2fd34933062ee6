"""Built-in dSprites renderer and the npz reader (docs/paper.md §8)."""

import sys
from pathlib import Path

import numpy as np
import pytest

from factorvae.data import DataError, factors_to_index, index_to_factors, load
from factorvae.data.dsprites import POSITION_OFFSETS, DSprites, DSpritesFile


@pytest.fixture(scope="module")
def dsprites():
    return load("dsprites")


def test_interface(dsprites):
    assert dsprites.factor_sizes == (3, 6, 40, 32, 32)
    assert dsprites.factor_names == ("shape", "scale", "orientation", "posX", "posY")
    assert dsprites.num_examples == 737_280
    f = dsprites.sample_factors(7, np.random.default_rng(0))
    assert f.dtype == np.int64 and f.shape == (7, 5)
    x = dsprites.observations(f)
    assert x.dtype == np.float32 and x.shape == (7, 1, 64, 64)
    assert set(np.unique(x)) <= {0.0, 1.0}


def test_index_factor_roundtrip(dsprites):
    idx = np.arange(0, dsprites.num_examples, 977)
    f = index_to_factors(idx, dsprites.factor_sizes)
    assert np.array_equal(factors_to_index(f, dsprites.factor_sizes), idx)
    assert np.array_equal(f[-1], np.unravel_index(idx[-1], dsprites.factor_sizes))
    assert factors_to_index(np.array([[0, 0, 0, 0, 1]]), dsprites.factor_sizes)[0] == 1  # posY fastest


def test_deterministic_and_centred_at_position(dsprites):
    f = np.array([[2, 5, 0, 0, 0], [2, 5, 0, 31, 31], [2, 5, 0, 16, 8]])
    a, b = dsprites.observations(f), dsprites.observations(f)
    assert np.array_equal(a, b)
    rows0, cols0 = np.nonzero(a[0, 0])
    # the sprite window's centre is pixel 16 + offset(pos); the heart's centroid sits 2.4 px above it in the
    # release (frame 0 of its GIF: row 13.57, column 15.5), so allow 3 px
    assert abs(cols0.mean() - 16) < 2.0 and abs(rows0.mean() - 16) < 3.0
    for img, (px, py) in zip(a[1:, 0], [(31, 31), (16, 8)], strict=True):
        rows, cols = np.nonzero(img)  # the same sprite moved by exactly the window offsets of its position
        assert cols.mean() - cols0.mean() == POSITION_OFFSETS[px] and rows.mean() - rows0.mean() == POSITION_OFFSETS[py]
    # the release's centres step 32/31 px: 15.5 -> 47.5, so the offsets run 0 -> 32, each within 0.5 px of p·32/31
    assert POSITION_OFFSETS[0] == 0 and POSITION_OFFSETS[-1] == 32
    assert np.abs(POSITION_OFFSETS - np.arange(32) * 32 / 31).max() <= 0.5


def test_every_image_stays_in_frame_and_is_nonempty(dsprites):
    # extremes of position with the largest scale and every orientation and shape
    f = np.array([[s, 5, o, x, y] for s in range(3) for o in range(0, 40, 3) for x in (0, 31) for y in (0, 31)])
    imgs = dsprites.observations(f)[:, 0]
    assert (imgs.sum((1, 2)) > 50).all()
    # nothing touches the border: every shape is fully inside the frame
    border = np.concatenate([imgs[:, 0], imgs[:, -1], imgs[:, :, 0], imgs[:, :, -1]], axis=1)
    assert border.sum() == 0


def test_each_factor_changes_the_image(dsprites):
    base = np.array([1, 3, 5, 10, 20])
    for k, size in enumerate(dsprites.factor_sizes):
        rows = np.repeat(base[None], 2, 0)
        rows[1, k] = (base[k] + 1) % size
        a, b = dsprites.observations(rows)
        assert not np.array_equal(a, b), dsprites.factor_names[k]


def test_scale_grows_area_and_orientation_wraps(dsprites):
    f = np.array([[2, s, 0, 16, 16] for s in range(6)])
    areas = dsprites.observations(f).sum((1, 2, 3))
    assert (np.diff(areas) > 0).all()
    ends = dsprites.observations(np.array([[2, 5, 0, 16, 16], [2, 5, 39, 16, 16]]))
    assert np.array_equal(ends[0], ends[1])  # linspace(0, 2π) with both ends, as in the original


def test_renderer_speed_is_on_demand(dsprites):
    # rendering 4096 images must not need a big array: the sprite bank is 720 × 32 × 32 bytes
    assert dsprites.sprites.nbytes == 720 * 1024


def _write_text(path, text):
    path.write_text(text)
    return path


def _write_npz(path, sizes=(3, 2, 2, 2, 2), imgs=None, **overrides):
    n = int(np.prod(sizes))
    classes = np.concatenate([np.zeros((n, 1), np.int64), index_to_factors(np.arange(n), sizes)], 1)
    if imgs is None:
        imgs = np.zeros((n, 64, 64), np.uint8)
        imgs[np.arange(n), np.arange(n) % 64, 3] = 1  # each image marks its own index
    arrays = {"imgs": imgs, "latents_classes": classes, "latents_values": classes.astype(np.float64)}
    arrays.update(overrides)
    np.savez_compressed(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


def test_npz_reader_reads_the_original_format(tmp_path):
    data = DSpritesFile(_write_npz(tmp_path / "d.npz"))
    assert data.factor_sizes == (3, 2, 2, 2, 2) and data.num_examples == 48
    f = np.array([[1, 0, 1, 1, 0]])
    idx = factors_to_index(f, data.factor_sizes)[0]
    img = data.observations(f)
    assert img.shape == (1, 1, 64, 64) and img[0, 0, idx % 64, 3] == 1.0 and img.sum() == 1.0
    assert load("dsprites", tmp_path / "d.npz").num_examples == 48


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p / "missing.npz", "not found"),
        (lambda p: _write_text(p / "x.npz", "not a zip"), "not a readable .npz"),
        (lambda p: _write_npz(p / "a.npz", latents_classes=None), "missing array(s) ['latents_classes']"),
        (lambda p: _write_npz(p / "b.npz", imgs=np.zeros((48, 32, 32), np.uint8)), "expected (N, 64, 64)"),
        (lambda p: _write_npz(p / "c.npz", latents_classes=np.zeros((48, 6), np.int64)), "not a full factor grid"),
        (lambda p: _write_npz(p / "e.npz", imgs=np.full((48, 64, 64), 255, np.uint8)), "binary 0/1"),
    ],
)
def test_npz_reader_errors(tmp_path, make, message):
    with pytest.raises(DataError) as err:
        DSpritesFile(make(tmp_path))
    assert message in str(err.value) and "\n" not in str(err.value)


# Pixel areas of the built-in drawings at orientation 0, scale index 0..5. The release's are
# heart 58, 84, 108, 140, 182, 222; ellipse 76, 104, 144, 184, 228, 288; square 100, 144, ..., 400 (its GIF).
PINNED_AREAS = {
    0: [100, 144, 196, 256, 324, 400],  # square: the release's exactly
    1: [76, 104, 144, 184, 228, 288],  # ellipse: the release's exactly
    2: [58, 82, 110, 144, 182, 226],  # heart: within 4 px of the release's
}


def test_drawings_are_pinned(dsprites):
    for shape, areas in PINNED_AREAS.items():
        f = np.array([[shape, s, 0, 0, 0] for s in range(6)])
        assert dsprites.observations(f).sum((1, 2, 3)).astype(int).tolist() == areas
    # binary pixels, and the heart's bounding box at scale 1 is the release's 17 rows × 20 columns
    img = dsprites.observations(np.array([[2, 5, 0, 0, 0]]))[0, 0]
    assert set(np.unique(img)) == {0.0, 1.0}
    rows, cols = np.nonzero(img)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (7, 23, 6, 25)


def test_orientation_turns_counter_clockwise_as_the_release(dsprites):
    # the heart's lobes (its centroid) sit above the centre at orientation 0; a quarter turn counter-clockwise
    # on screen (orientation index 10 of 39 steps over 2π: 92°) moves them to the left, as in the release's GIF
    a, b = dsprites.observations(np.array([[2, 5, 0, 0, 0], [2, 5, 10, 0, 0]]))[:, 0]
    (ra, ca), (rb, cb) = [np.array(np.nonzero(x)).mean(1) for x in (a, b)]
    assert ra < 15.5 - 1.5 and abs(ca - 15.5) < 0.6  # up, centred horizontally (window centre: pixel 15.5)
    assert cb < 15.5 - 1.5 and abs(rb - 15.5) < 0.6  # left, centred vertically


REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference"


@pytest.mark.skipif(not (REFERENCE / "dsprites-release.gif").is_file(), reason="no release frames in shared/reference")
def test_release_frames_match():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import reference_dsprites as ref

    frames, data = ref.release_frames(REFERENCE), DSprites()
    scores = np.array([row[-1] for row in ref.scale_table(data, frames)])
    assert scores.mean() >= 0.98 and scores.min() >= 0.92  # the target was >= 0.9 and >= 0.8
    for name in ref.ORIENTATION_SWEEPS:
        same = ref.orientation_ious(data, frames, name)
        assert same.mean() >= 0.95 and same.mean() > ref.orientation_ious(data, frames, name, reverse=True).mean()
