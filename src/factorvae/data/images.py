"""CelebA, 3D Chairs and 3D Faces (paper §4; docs/paper.md §6, §8): folders of images without factors.

The paper shows latent traversals only for these data sets, so they need nothing but 64×64 images.
Every image file under the given folder is used, found by a recursive search (hidden folders skipped), so
the archives' own layouts work unchanged: CelebA's ``img_align_celeba/*.jpg``, 3D Chairs'
``rendered_chairs/<chair>/renders/*.png``, or a flat folder of renders of 3D Faces.

Decoding 200,000 JPEGs takes minutes, so the first load decodes every image once (threads, a progress bar)
into a uint8 ``.npy`` array of shape (N, C, 64, 64); later loads memory-map it and start at once. The cache
file is named by a checksum of the source listing (relative names, sizes, modification times) and of the
preprocessing settings, so adding, removing or touching an image, or changing a setting, decodes again.
Unreadable images are skipped and reported by name once, when decoded.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from .factors import DataError, GroundTruthData

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})
CACHE_FOLDER = ".factorvae_cache"  # inside the data folder when it is writable
CACHE_VERSION = 1  # part of the checksum: bump when decoding changes, so old caches are not reused
BLOCK = 1024  # images decoded per thread-pool round; bounds the memory held between writes


@dataclass(frozen=True)
class Preprocess:
    """How one source image becomes a model input (paper §4: 64×64 for every data set)."""

    channels: int = 3  # 3: RGB; 1: greyscale (3D Faces)
    crop: int | None = None  # side in source pixels of the centred square crop; None: the largest square
    size: int = 64


# [open] crops: the paper says only that images are 64×64. CelebA's aligned 178×218 faces are centre-cropped
# to 140×140, the common choice of reimplementations; 3D Chairs (600×600 renders) and 3D Faces are resized
# whole, keeping the white border around the chairs.
PRESETS: dict[str, Preprocess] = {
    "celeba": Preprocess(channels=3, crop=140),
    "chairs": Preprocess(channels=3, crop=None),
    "faces": Preprocess(channels=1, crop=None),
}


def preprocess(image: Image.Image, settings: Preprocess) -> np.ndarray:
    """One PIL image -> uint8 (C, size, size): flatten alpha onto white, centre-crop a square, resize."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # transparent pixels keep arbitrary colours underneath; white is the renders' background
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    image = image.convert("RGB" if settings.channels == 3 else "L")
    w, h = image.size
    side = min(w, h) if settings.crop is None else min(settings.crop, w, h)
    left, top = (w - side) // 2, (h - side) // 2
    image = image.crop((left, top, left + side, top + side))
    # bilinear with Pillow's antialiasing when shrinking: torchvision's Resize on PIL images does the same
    image = image.resize((settings.size, settings.size), Image.Resampling.BILINEAR)
    array = np.asarray(image, dtype=np.uint8)
    return array.transpose(2, 0, 1) if array.ndim == 3 else array[None]


def list_images(root: Path) -> list[tuple[str, int, int]]:
    """(relative path, size in bytes, mtime in ns) of every image file under root, sorted by path."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))  # skips our cache and .git-like folders
        for name in files:
            if Path(name).suffix.lower() in IMAGE_SUFFIXES:
                full = Path(folder, name)
                st = full.stat()
                found.append((full.relative_to(root).as_posix(), st.st_size, st.st_mtime_ns))
    return sorted(found)


def default_cache_dir(root: Path) -> Path:
    """A folder per data path under ``$FACTORVAE_CACHE`` if set; else ``<root>/.factorvae_cache`` if it can
    be written, else a folder per data path under ~/.cache.

    Per data path, because a cache folder keeps one cache per (data set name, settings): a second image
    folder sharing it would evict the first one's cache as stale (and the other way round on every load).
    """
    if env := os.environ.get("FACTORVAE_CACHE"):
        return Path(env) / _path_key(root)
    local = root / CACHE_FOLDER
    try:
        local.mkdir(exist_ok=True)
        if os.access(local, os.W_OK):
            return local
    except OSError:
        pass  # a read-only data folder: fall back to the user's cache
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "factorvae"
    return base / _path_key(root)


def _path_key(root: Path) -> str:
    return hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]


def _decode(path: Path, settings: Preprocess) -> np.ndarray | str:
    """The preprocessed image, or why it could not be read."""
    try:
        with Image.open(path) as image:
            return preprocess(image, settings)
    except Exception as exc:  # Pillow raises many types for damaged files; one bad file must not stop us
        return f"{type(exc).__name__}: {exc}"


def decode_all(
    root: Path, names: list[str], settings: Preprocess, out: np.ndarray, workers: int, desc: str
) -> tuple[list[str], list[str]]:
    """Decode root/name for every name into the rows of ``out`` in order, skipping unreadable files.

    Returns the names kept (row i of ``out`` is kept[i]) and "name (reason)" for each file skipped.
    """
    kept, skipped = [], []
    # threads, not processes: Pillow releases the GIL while decoding and resizing, and rows go straight to out
    with ThreadPoolExecutor(workers) as pool, tqdm(total=len(names), desc=desc, unit="img") as bar:
        for start in range(0, len(names), BLOCK):
            block = names[start : start + BLOCK]
            results = pool.map(lambda name: _decode(root / name, settings), block)
            for name, result in zip(block, results, strict=True):
                if isinstance(result, str):
                    skipped.append(f"{name} ({result})")
                else:
                    out[len(kept)] = result
                    kept.append(name)
            bar.update(len(block))
    return kept, skipped


class ImageFolderData(GroundTruthData):
    """A folder of images, decoded once into a memory-mapped uint8 cache. No ground-truth factors."""

    def __init__(
        self,
        path: str | Path,
        name: str = "images",
        settings: Preprocess | None = None,
        cache_dir: str | Path | None = None,
        workers: int | None = None,
    ) -> None:
        self.name = name
        self.settings = settings or PRESETS.get(name, Preprocess())
        self.root = Path(path)
        if not self.root.is_dir():
            kind = "a file, not a folder (extract the archive first)" if self.root.is_file() else "not found"
            raise DataError(f"{name} image folder {self.root} is {kind}")
        listing = list_images(self.root)
        if not listing:
            raise DataError(f"no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) found under {self.root} for {name}")
        s = self.settings
        self.observation_shape = (s.channels, s.size, s.size)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir(self.root)
        key = json.dumps({"version": CACHE_VERSION, "settings": asdict(s), "files": listing})
        settings_id = hashlib.sha256(json.dumps(asdict(s)).encode()).hexdigest()[:8]
        self.checksum = hashlib.sha256(key.encode()).hexdigest()[:16]
        self.cache_file = self.cache_dir / f"{name}-{settings_id}-{self.checksum}.npy"
        cached = self._read_cache()
        if cached is None:
            cached = self._build_cache([entry[0] for entry in listing], workers)
        self._imgs, self.files, self.skipped = cached
        self.num_examples = len(self._imgs)

    def images(self, indices: np.ndarray) -> np.ndarray:
        return np.asarray(self._imgs[np.asarray(indices)])

    def describe(self) -> dict:
        return super().describe() | {
            "path": str(self.root),
            "cache": str(self.cache_file),
            "skipped": len(self.skipped),
        }

    def _read_cache(self) -> tuple[np.ndarray, list[str], list[str]] | None:
        meta_file = self.cache_file.with_suffix(".json")
        try:
            meta = json.loads(meta_file.read_text())
            imgs = np.load(self.cache_file, mmap_mode="r")
        except (OSError, ValueError):  # absent, or left half-written by a crash: decode again
            return None
        if not isinstance(meta, dict) or not {"files", "skipped"} <= meta.keys():
            return None
        if imgs.shape != (len(meta["files"]), *self.observation_shape) or imgs.dtype != np.uint8:
            return None
        return imgs, meta["files"], meta["skipped"]

    def _build_cache(self, names: list[str], workers: int | None) -> tuple[np.ndarray, list[str], list[str]]:
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        workers = workers or min(8, os.cpu_count() or 1)
        tmp = self.cache_file.with_name(f".tmp-{os.getpid()}-{self.cache_file.name}")
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(names), *self.observation_shape))
        try:
            kept, skipped = decode_all(self.root, names, self.settings, out, workers, f"decoding {self.name}")
            if not kept:
                raise DataError(
                    f"none of the {len(names)} image files under {self.root} could be read, e.g. {skipped[0]}"
                )
            if skipped:
                warnings.warn(
                    f"{self.name}: skipped {len(skipped)} unreadable image(s): "
                    + "; ".join(skipped[:10])
                    + (" ..." if len(skipped) > 10 else ""),
                    stacklevel=3,
                )
            out.flush()
            if len(kept) < len(names):  # drop the unused rows so the file holds exactly the images kept
                out = _shrunk_copy(out, len(kept), tmp)
            del out
            # the metadata first and the array last, each replaced atomically: a present array means complete
            _atomic_write_text(self.cache_file.with_suffix(".json"), json.dumps({"files": kept, "skipped": skipped}))
            os.replace(tmp, self.cache_file)
        finally:
            tmp.unlink(missing_ok=True)
        self._remove_stale_caches()
        return np.load(self.cache_file, mmap_mode="r"), kept, skipped

    def _remove_stale_caches(self) -> None:
        """Older caches of the same data set and settings (the listing changed): each can take gigabytes."""
        prefix = self.cache_file.name.rsplit("-", 1)[0]
        for old in self.cache_dir.glob(f"{prefix}-*"):
            if old.stem != self.cache_file.stem and not old.name.startswith("."):
                old.unlink(missing_ok=True)


def _shrunk_copy(array: np.ndarray, n: int, path: Path) -> np.ndarray:
    """The first n rows of a memory-mapped .npy, rewritten in place of ``path`` with the shorter shape."""
    part = path.with_name(path.name + ".part")
    small = np.lib.format.open_memmap(part, mode="w+", dtype=array.dtype, shape=(n, *array.shape[1:]))
    for start in range(0, n, 10 * BLOCK):
        stop = min(start + 10 * BLOCK, n)
        small[start:stop] = array[start:stop]
    small.flush()
    os.replace(part, path)
    return small


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    tmp.write_text(text)
    os.replace(tmp, path)
