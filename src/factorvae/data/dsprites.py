"""dSprites (paper §4, "2D Shapes"; paper-notes §8): a built-in renderer of the exact factor grid and a
reader for the original ``dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz``.

The renderer draws each of the 3 × 6 × 40 = 720 (shape, scale, orientation) sprites once, on a 32×32
canvas with 4×4 supersampling thresholded at half coverage (dSprites is binary), then pastes sprites into
64×64 frames by integer translation. The 32 positions per axis are the 32 pixel offsets that keep a
32×32 sprite window inside the frame, so a shape never leaves it. A batch costs one gather and one
scatter, so rendering on demand is far faster than training needs and nothing big lives in memory.

As in the original data, orientation is ``linspace(0, 2π, 40)`` with both ends included, so orientation
0 and 39 give the same image, and the symmetric shapes (square, ellipse) repeat within the sweep.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from .factors import DataError, GroundTruthData, index_to_factors

FACTOR_NAMES = ("shape", "scale", "orientation", "posX", "posY")
FACTOR_SIZES = (3, 6, 40, 32, 32)
SHAPES = ("square", "ellipse", "heart")
SCALES = np.linspace(0.5, 1.0, 6)
ORIENTATIONS = np.linspace(0.0, 2 * np.pi, 40)  # both ends included, as in the original
SPRITE = 32  # sprite canvas side in pixels
RADIUS = 14.0  # pixels covered by a unit shape at scale 1; < SPRITE / 2 so rotations never clip
SUPERSAMPLE = 4


def _inside(shape: str, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Membership of unit-shape coordinates (y up) in a shape whose extent is about [-1, 1]²."""
    if shape == "square":
        return (np.abs(x) <= 0.7) & (np.abs(y) <= 0.7)
    if shape == "ellipse":
        return (x / 1.0) ** 2 + (y / 0.5) ** 2 <= 1.0
    # the classic heart curve spans x ∈ [-1.14, 1.14], y ∈ [-1, 1.25]; recentre it and shrink it to ~unit size
    hx, hy = x * 1.3, y * 1.3 + 0.125
    return (hx**2 + hy**2 - 1.0) ** 3 - hx**2 * hy**3 <= 0.0


def render_sprites() -> np.ndarray:
    """All (shape, scale, orientation) sprites as uint8 {0, 255}: (3, 6, 40, 32, 32)."""
    sub = (np.arange(SPRITE * SUPERSAMPLE) + 0.5) / SUPERSAMPLE - SPRITE / 2  # pixel units, centred
    py, px = np.meshgrid(sub, sub, indexing="ij")
    out = np.zeros((3, 6, 40, SPRITE, SPRITE), dtype=np.uint8)
    for s, shape in enumerate(SHAPES):
        for c, scale in enumerate(SCALES):
            for o, angle in enumerate(ORIENTATIONS):
                # rotate the sampling grid by -angle so the shape turns by +angle; image rows grow downward
                cos, sin = np.cos(angle), np.sin(angle)
                u = (cos * px - sin * -py) / (RADIUS * scale)
                v = (sin * px + cos * -py) / (RADIUS * scale)
                cover = _inside(shape, u, v).reshape(SPRITE, SUPERSAMPLE, SPRITE, SUPERSAMPLE).mean((1, 3))
                out[s, c, o] = np.where(cover >= 0.5, 255, 0)
    return out


class DSprites(GroundTruthData):
    """The built-in dSprites: 737,280 binary 64×64 images rendered on demand from factor indices."""

    name = "dsprites"
    factor_names = FACTOR_NAMES
    factor_sizes = FACTOR_SIZES
    observation_shape = (1, 64, 64)
    num_examples = int(np.prod(FACTOR_SIZES))

    def __init__(self) -> None:
        self.sprites = render_sprites().reshape(-1, SPRITE * SPRITE)  # (720, 1024)
        rows, cols = np.meshgrid(np.arange(SPRITE), np.arange(SPRITE), indexing="ij")
        self._offsets = (rows * 64 + cols).ravel()  # (1024,) flat offsets of the sprite window

    def images(self, indices: np.ndarray) -> np.ndarray:
        f = index_to_factors(indices, self.factor_sizes)  # (n, 5)
        n = len(f)
        sprite_id = (f[:, 0] * 6 + f[:, 1]) * 40 + f[:, 2]
        # window top-left = position index: posY picks the row, posX the column
        top_left = f[:, 4] * 64 + f[:, 3]  # (n,)
        canvas = np.zeros((n, 64 * 64), dtype=np.uint8)
        canvas[np.arange(n)[:, None], top_left[:, None] + self._offsets] = self.sprites[sprite_id]
        return canvas.reshape(n, 1, 64, 64)

    def renderer(self, device: torch.device) -> DeviceRenderer:
        """The same images drawn by torch on ``device``, as float32 in [0, 1] (the training batches)."""
        return DeviceRenderer(self.sprites, self._offsets, device)


class DeviceRenderer:
    """Training batches of the built-in dSprites rendered by torch where the model trains (CPU or CUDA).

    The sprite bank (720 sprites of 32×32 floats, 3 MB) lives on the device and each image is one
    sprite pasted into a zero 64×64 frame by a scatter, straight into float32. A CUDA run therefore
    moves only the batch's indices (8 bytes an image) to the GPU, never images. Gives exactly
    ``to_float(DSprites().images(indices))``.
    """

    def __init__(self, sprites: np.ndarray, offsets: np.ndarray, device: torch.device) -> None:
        self.bank = torch.from_numpy(sprites).to(device=device, dtype=torch.float32) / 255.0  # (720, 1024) {0, 1}
        self.offsets = torch.from_numpy(offsets).to(device)  # (1024,)
        self.device = torch.device(device)

    def __call__(self, indices: torch.Tensor) -> torch.Tensor:
        """Images (n, 1, 64, 64) for flat indices (n,) int64 on the renderer's device."""
        # flat index = sprite·(32·32) + posX·32 + posY: the three sprite factors come first (posY fastest)
        sprite_id = indices // (SPRITE * SPRITE)
        pos_x, pos_y = (indices // SPRITE) % SPRITE, indices % SPRITE
        top_left = pos_y * 64 + pos_x  # (n,) window corner: posY picks the row, posX the column
        canvas = torch.zeros(len(indices), 64 * 64, device=self.device)
        canvas.scatter_(1, top_left[:, None] + self.offsets, self.bank[sprite_id])
        return canvas.view(-1, 1, 64, 64)


class DSpritesFile(GroundTruthData):
    """The original dSprites npz (or a smaller file in the same format), held in memory as {0, 1} uint8.

    The factor sizes are read from ``latents_classes`` (minus the one-valued colour column), and the rows
    must form the full grid in the original order (posY fastest), which is what makes index sampling and
    factor lookups agree.
    """

    name = "dsprites"
    factor_names = FACTOR_NAMES
    observation_shape = (1, 64, 64)

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        if not path.is_file():
            raise DataError(f"dSprites file not found: {path} (pass the .npz from the dSprites release)")
        try:
            with np.load(path, allow_pickle=False) as npz:
                missing = {"imgs", "latents_classes"} - set(npz.files)
                if missing:
                    raise DataError(
                        f"{path} is missing array(s) {sorted(missing)}; expected the dSprites npz with "
                        "'imgs' and 'latents_classes'"
                    )
                imgs, classes = npz["imgs"], npz["latents_classes"]
        except DataError:
            raise
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
            raise DataError(f"{path} is not a readable .npz file ({exc}); pass the dSprites npz") from exc
        if imgs.ndim != 3 or imgs.shape[1:] != (64, 64):
            raise DataError(f"{path}: 'imgs' has shape {imgs.shape}, expected (N, 64, 64)")
        if classes.shape != (len(imgs), 6):
            raise DataError(f"{path}: 'latents_classes' has shape {classes.shape}, expected ({len(imgs)}, 6)")
        factors = classes[:, 1:].astype(np.int64)
        sizes = tuple(int(s) for s in factors.max(0) + 1)
        if np.prod(sizes) != len(imgs) or not np.array_equal(factors, index_to_factors(np.arange(len(imgs)), sizes)):
            raise DataError(f"{path}: 'latents_classes' is not a full factor grid in dSprites order (posY fastest)")
        if imgs.max(initial=0) > 1:
            raise DataError(f"{path}: 'imgs' must hold binary 0/1 pixels as in the dSprites release")
        self.factor_sizes = sizes
        self.num_examples = len(imgs)
        self._imgs = imgs.astype(np.uint8, copy=False)

    def images(self, indices: np.ndarray) -> np.ndarray:
        return (self._imgs[np.asarray(indices)] * np.uint8(255))[:, None]
