"""dSprites (paper §4, "2D Shapes"; docs/paper.md §8): a built-in renderer of the exact factor grid and a
reader for the original ``dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz``.

The renderer draws each of the 3 × 6 × 40 = 720 (shape, scale, orientation) sprites once, on a 32×32
canvas with 8×8 supersampling thresholded at 40 % coverage (dSprites is binary), then pastes sprites into
64×64 frames by integer translation. The release's shape centres step 32/31 px per position index (15.5 →
47.5 on each axis), so the 32 window offsets are those steps rounded to whole pixels (0, 1, …, 15, 17, …, 32);
the 32×32 window always stays inside the frame, so a shape never leaves it. A batch costs one gather and one
scatter, so rendering on demand is far faster than training needs and nothing big lives in memory.

The shapes are calibrated on frames of the real release (``shared/reference/dsprites-release.gif``, see
docs/data.md): at orientation 0 every scale of every shape matches the release's pixels with IoU ≥ 0.93
(the square and the ellipse exactly), and orientation turns shapes counter-clockwise on screen as the
release does. As in the original data, orientation is ``linspace(0, 2π, 40)`` with both ends included, so
orientation 0 and 39 give the same image, and the symmetric shapes (square, ellipse) repeat within the sweep.
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
SUPERSAMPLE = 8
# window offset (pixels) of each position index: the release's 32/31 px steps, rounded to whole pixels
POSITION_OFFSETS = np.floor(np.arange(32) * 32 / 31 + 0.5).astype(np.int64)
COVERAGE = 0.4  # a pixel is on when this share of its subsamples is inside: the release's ellipses exactly

# Shape sizes in pixels at scale 1, y up from the sprite centre, fitted to the release's scale sweeps
# (benchmarks/reference_match.py prints the match). The square's half side gives sides 10, 12, ..., 20 px.
SQUARE_HALF = 9.7
ELLIPSE_AXES = (12.7, 7.1)  # (horizontal, vertical) semi-axes: the release's ellipse lies flat at orientation 0
# The heart: two discs (the lobes) and a point (the tip), each lobe joined to the tip by its convex hull.
HEART_LOBE_RADIUS = 5.0
HEART_LOBE_CENTRE = (4.7, 4.1)  # (±x, y) of the lobe centres
HEART_TIP = 8.8  # the tip lies this far below the centre


def _lobe_hull(x: np.ndarray, y: np.ndarray, cx: float) -> np.ndarray:
    """Membership in the convex hull of one lobe disc and the heart's tip (the disc plus two tangents)."""
    r, cy, tip = HEART_LOBE_RADIUS, HEART_LOBE_CENTRE[1], HEART_TIP
    dx, dy = cx, cy + tip  # tip -> disc centre
    d = np.hypot(dx, dy)
    ax = (x * dx + (y + tip) * dy) / d  # distance along the tip -> centre axis
    off = np.abs(-x * dy + (y + tip) * dx) / d  # distance from that axis
    # inside the tangent cone, short of the chord through the two tangent points
    cone = (off <= ax * r / np.sqrt(d * d - r * r)) & (ax >= 0) & (ax <= (d * d - r * r) / d)
    return cone | ((x - cx) ** 2 + (y - cy) ** 2 <= r * r)


def _inside(shape: str, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Membership of points (pixels from the sprite centre, y up) in a shape at scale 1, orientation 0."""
    if shape == "square":
        return (np.abs(x) <= SQUARE_HALF) & (np.abs(y) <= SQUARE_HALF)
    if shape == "ellipse":
        return (x / ELLIPSE_AXES[0]) ** 2 + (y / ELLIPSE_AXES[1]) ** 2 <= 1.0
    cx = HEART_LOBE_CENTRE[0]
    return _lobe_hull(x, y, -cx) | _lobe_hull(x, y, cx)


def render_sprites() -> np.ndarray:
    """All (shape, scale, orientation) sprites as uint8 {0, 255}: (3, 6, 40, 32, 32)."""
    sub = (np.arange(SPRITE * SUPERSAMPLE) + 0.5) / SUPERSAMPLE - SPRITE / 2  # pixel units, centred
    py, px = np.meshgrid(sub, sub, indexing="ij")
    x, y = px, -py  # image rows grow downward; the shapes are defined with y up
    out = np.zeros((3, 6, 40, SPRITE, SPRITE), dtype=np.uint8)
    for s, shape in enumerate(SHAPES):
        for c, scale in enumerate(SCALES):
            for o, angle in enumerate(ORIENTATIONS):
                # the shape turns counter-clockwise by +angle: sample it at the points turned back by -angle
                cos, sin = np.cos(angle), np.sin(angle)
                u = (cos * x + sin * y) / scale
                v = (-sin * x + cos * y) / scale
                cover = _inside(shape, u, v).reshape(SPRITE, SUPERSAMPLE, SPRITE, SUPERSAMPLE).mean((1, 3))
                out[s, c, o] = np.where(cover >= COVERAGE, 255, 0)
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
        # window top-left from the position indices: posY picks the row, posX the column
        top_left = POSITION_OFFSETS[f[:, 4]] * 64 + POSITION_OFFSETS[f[:, 3]]  # (n,)
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
        self.positions = torch.from_numpy(POSITION_OFFSETS).to(device)  # (32,)
        self.device = torch.device(device)

    def __call__(self, indices: torch.Tensor) -> torch.Tensor:
        """Images (n, 1, 64, 64) for flat indices (n,) int64 on the renderer's device."""
        # flat index = sprite·(32·32) + posX·32 + posY: the three sprite factors come first (posY fastest)
        sprite_id = indices // (SPRITE * SPRITE)
        pos_x, pos_y = (indices // SPRITE) % SPRITE, indices % SPRITE
        top_left = self.positions[pos_y] * 64 + self.positions[pos_x]  # (n,) posY picks the row, posX the column
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
        if imgs.ndim != 3 or imgs.shape[1:] != (64, 64) or len(imgs) == 0:
            raise DataError(f"{path}: 'imgs' has shape {imgs.shape}, expected (N, 64, 64)")
        if classes.shape != (len(imgs), 6):
            raise DataError(f"{path}: 'latents_classes' has shape {classes.shape}, expected ({len(imgs)}, 6)")
        if classes.dtype.kind not in "iu":  # strings or floats would be cast, or fail half-way with a traceback
            raise DataError(f"{path}: 'latents_classes' must hold integer factor classes as in the dSprites "
                            f"release, got {classes.dtype}")
        factors = classes[:, 1:].astype(np.int64)
        sizes = tuple(int(s) for s in factors.max(0) + 1)
        if np.prod(sizes) != len(imgs) or not np.array_equal(factors, index_to_factors(np.arange(len(imgs)), sizes)):
            raise DataError(f"{path}: 'latents_classes' is not a full factor grid in dSprites order (posY fastest)")
        # integers only: a float 0.5 would become a black pixel, NaN anything
        if imgs.dtype.kind not in "biu" or imgs.min(initial=0) < 0 or imgs.max(initial=0) > 1:
            raise DataError(f"{path}: 'imgs' must hold binary 0/1 integer pixels as in the dSprites release, "
                            f"got {imgs.dtype}")
        self.factor_sizes = sizes
        self.num_examples = len(imgs)
        self._imgs = imgs.astype(np.uint8, copy=False)

    def images(self, indices: np.ndarray) -> np.ndarray:
        return (self._imgs[np.asarray(indices)] * np.uint8(255))[:, None]
