"""CelebA, 3D Chairs and 3D Faces folders: preprocessing, the decode cache and the errors (docs/paper.md §8)."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from factorvae.data import DataError, load
from factorvae.data import images as images_module
from factorvae.data.images import ImageFolderData, Preprocess, default_cache_dir, preprocess


def celeba_like(colour_inside=(255, 0, 0), colour_outside=(0, 0, 255)) -> Image.Image:
    """A 178×218 image (CelebA's aligned size) whose centred 140×140 square has its own colour."""
    a = np.empty((218, 178, 3), dtype=np.uint8)
    a[...] = colour_outside
    a[39:179, 19:159] = colour_inside  # left (178-140)//2 = 19, top (218-140)//2 = 39
    return Image.fromarray(a)


def test_celeba_crop_keeps_exactly_the_centre_square() -> None:
    out = preprocess(celeba_like(), Preprocess(channels=3, crop=140))
    assert out.shape == (3, 64, 64) and out.dtype == np.uint8
    np.testing.assert_array_equal(out.reshape(3, -1).T, np.tile([255, 0, 0], (64 * 64, 1)))


def test_largest_square_then_resize() -> None:
    a = np.zeros((100, 300), dtype=np.uint8)  # wide: the centred 100×100 square is columns 100..199
    a[:, 150:200] = 255  # its right half
    out = preprocess(Image.fromarray(a), Preprocess(channels=1, crop=None))
    assert out.shape == (1, 64, 64)
    assert (out[0, :, :31] == 0).all() and (out[0, :, 33:] == 255).all()


def test_modes_become_the_requested_channels() -> None:
    rgba = np.zeros((64, 64, 4), dtype=np.uint8)
    rgba[..., 0] = 255  # red where opaque ...
    rgba[:, 32:, 3] = 255  # ... and transparent on the left, which shows the white background
    out = preprocess(Image.fromarray(rgba, "RGBA"), Preprocess(channels=3))
    assert (out[:, :, :30] == 255).all() and (out[:, :, 34:].T == [255, 0, 0]).all()
    grey = preprocess(Image.fromarray(np.full((80, 80), 77, np.uint8)), Preprocess(channels=3))
    assert (grey == 77).all() and grey.shape == (3, 64, 64)
    face = preprocess(Image.new("RGB", (70, 90), (200, 200, 200)), Preprocess(channels=1))
    assert face.shape == (1, 64, 64) and (face == 200).all()
    indexed = Image.new("P", (64, 64), 1)
    indexed.putpalette([0, 0, 0, 0, 128, 0])  # colour 1 is green
    assert (preprocess(indexed, Preprocess(channels=3)).T == [0, 128, 0]).all()


def make_folder(root, n: int = 6, broken: bool = True) -> list[str]:
    """A CelebA-like archive layout with images in several formats, non-images and broken files."""
    sub = root / "img_align_celeba"
    sub.mkdir(parents=True)
    names = []
    for i in range(n):
        suffix = (".jpg", ".png", ".JPEG", ".bmp")[i % 4]
        colour = (40 * i, 255 - 40 * i, 100)
        img = celeba_like(colour) if i % 2 else Image.new("RGB", (90, 120), colour)
        img = img.convert("L") if i == 3 else img
        img.save(sub / f"{i:06d}{suffix}")
        names.append(f"img_align_celeba/{i:06d}{suffix}")
    (root / "list_attr_celeba.txt").write_text("not an image")
    (root / ".hidden").mkdir()
    Image.new("RGB", (10, 10)).save(root / ".hidden" / "skipped.png")
    if broken:
        (sub / "broken.jpg").write_bytes(b"this is not a jpeg")
        png = (sub / "000001.png").read_bytes()
        (sub / "truncated.png").write_bytes(png[: len(png) // 2])
    return names


def test_folder_is_decoded_once_and_read_from_the_cache(tmp_path, monkeypatch) -> None:
    make_folder(tmp_path)
    with pytest.warns(UserWarning, match=r"skipped 2 unreadable image\(s\).*broken\.jpg.*truncated\.png"):
        first = ImageFolderData(tmp_path, name="celeba")
    assert first.num_examples == 6 and first.observation_shape == (3, 64, 64)
    assert sorted(s.split(" ")[0] for s in first.skipped) == [
        "img_align_celeba/broken.jpg",
        "img_align_celeba/truncated.png",
    ]
    assert first.cache_file.parent == tmp_path / ".factorvae_cache" and first.cache_file.exists()
    assert not [p for p in first.cache_dir.iterdir() if p.name.startswith(".tmp")]  # no temp files left
    expected = first.images(np.arange(6))
    assert expected.shape == (6, 3, 64, 64) and expected.dtype == np.uint8
    assert (expected[1].reshape(3, -1).T == [40, 215, 100]).all()  # CelebA crop: the centre colour only

    def no_decoding(*args, **kwargs):
        raise AssertionError("the second load must not decode images")

    monkeypatch.setattr(images_module.Image, "open", no_decoding)
    second = load("celeba", tmp_path)
    assert isinstance(second._imgs, np.memmap)
    assert second.skipped == first.skipped and second.files == first.files
    np.testing.assert_array_equal(second.images(np.array([5, 0, 5])), expected[[5, 0, 5]])
    np.testing.assert_array_equal(second.sample_observations(4, np.random.default_rng(0)).shape, (4, 3, 64, 64))


def test_cache_is_rebuilt_when_the_listing_or_settings_change(tmp_path) -> None:
    make_folder(tmp_path, broken=False)
    first = ImageFolderData(tmp_path, name="chairs")
    Image.new("RGB", (30, 30), (1, 2, 3)).save(tmp_path / "img_align_celeba" / "zzz.png")
    added = ImageFolderData(tmp_path, name="chairs")
    assert added.num_examples == first.num_examples + 1 and added.cache_file != first.cache_file
    assert not first.cache_file.exists()  # the stale cache of the same settings is removed
    os.utime(tmp_path / "img_align_celeba" / "zzz.png", ns=(1, 1))
    touched = ImageFolderData(tmp_path, name="chairs")
    assert touched.cache_file != added.cache_file
    cropped = ImageFolderData(tmp_path, name="chairs", settings=Preprocess(channels=3, crop=50))
    assert cropped.cache_file != touched.cache_file and touched.cache_file.exists()  # both settings kept
    expected = cropped.images(np.arange(cropped.num_examples))
    cropped.cache_file.write_bytes(b"half-written")  # e.g. a copy interrupted: decode again, never crash
    again = ImageFolderData(tmp_path, name="chairs", settings=Preprocess(channels=3, crop=50))
    np.testing.assert_array_equal(again.images(np.arange(again.num_examples)), expected)


def test_faces_are_greyscale(tmp_path) -> None:
    make_folder(tmp_path, n=3, broken=False)
    faces = load("faces", tmp_path)
    assert faces.observation_shape == (1, 64, 64) and faces.images(np.arange(3)).shape == (3, 1, 64, 64)


def test_read_only_folder_caches_under_the_user_cache(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("FACTORVAE_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(images_module.os, "access", lambda *a, **k: False)  # works under root too
    where = default_cache_dir(tmp_path / "data")
    assert where.parent == tmp_path / "xdg" / "factorvae"
    monkeypatch.setenv("FACTORVAE_CACHE", str(tmp_path / "mine"))
    # a folder per data path under it: one shared folder let one data folder evict another's cache
    assert default_cache_dir(tmp_path / "data") == tmp_path / "mine" / where.name


def test_errors(tmp_path) -> None:
    for name in ("celeba", "chairs", "faces"):
        with pytest.raises(DataError, match="no built-in version.*--data-path"):
            load(name)
    with pytest.raises(DataError, match="not found"):
        load("celeba", tmp_path / "absent")
    (tmp_path / "celeba.zip").write_bytes(b"PK")
    with pytest.raises(DataError, match="extract the archive"):
        load("celeba", tmp_path / "celeba.zip")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="no image files"):
        load("chairs", tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "a.png").write_bytes(b"nope")
    with pytest.raises(DataError, match="none of the 1 image files"):
        load("chairs", tmp_path / "bad")
    assert not list((tmp_path / "bad" / ".factorvae_cache").glob("*.npy"))


def test_no_factors(tmp_path) -> None:
    make_folder(tmp_path, n=2, broken=False)
    data = load("chairs", tmp_path)
    assert not data.has_factors and data.factor_sizes == ()
    with pytest.raises(DataError, match="no ground-truth factors"):
        data.sample_factors(2, np.random.default_rng(0))
    with pytest.raises(DataError, match="no ground-truth factors"):
        data.observations(np.zeros((1, 0), dtype=np.int64))
    assert data.describe()["num_examples"] == 2
