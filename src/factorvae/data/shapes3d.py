"""3D Shapes (paper §4; paper-notes §8): a built-in renderer of the exact factor grid and a reader for the
original ``3dshapes.h5``.

Factors, in storage order (orientation fastest): floor hue 10, wall hue 10, object hue 10 (hues 0.0..0.9),
scale 8, shape 4 (cube, cylinder, sphere, capsule), orientation 15 (−30°..30°): 480,000 images.

The renderer ray-casts a small room (a floor, a back wall, one object standing in the middle, one point light
with hard shadows) seen by a camera that orbits the room by the orientation angle. Turning the camera rather
than the object is what makes orientation visible for every shape, the round ones included: the floor/wall
edge tilts, and the light and the shadow move across the object. Colour enters only at the end, so the
geometry is cast once for the 8 × 4 × 15 = 480 (scale, shape, orientation) combinations, with 2×2
supersampling, as four weight maps per combination: floor, wall and object (coverage × shading) and a white
specular highlight. An image is then a weighted sum of four colours, which is one gather and a few
vectorised operations per batch. The weights keep the hue exact because RGB is linear in the HSV value.
"""

from __future__ import annotations

import colorsys
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .factors import DataError, GroundTruthData, index_to_factors

if TYPE_CHECKING:
    import h5py

FACTOR_NAMES = ("floor_hue", "wall_hue", "object_hue", "scale", "shape", "orientation")
FACTOR_SIZES = (10, 10, 10, 8, 4, 15)
SHAPES = ("cube", "cylinder", "sphere", "capsule")
HUES = np.linspace(0.0, 0.9, 10)  # linspace(0, 1, 10, endpoint=False): the release's label values
SCALES = np.linspace(0.75, 1.25, 8)  # [open]: the release's labels; its README says "[0, 1]"
ORIENTATIONS = np.linspace(-30.0, 30.0, 15)  # degrees
SATURATION = 0.8  # [open]: saturated but not neon colours, close to the release's look
SIZE = 64
SUPERSAMPLE = 2  # 2×2 rays per pixel: smooth edges, and small scale steps still change pixel values

# The scene, in world units; y is up, the object stands on the floor at the origin.
WALL_Z = -2.0  # back wall plane z = WALL_Z
CAMERA_DISTANCE, CAMERA_HEIGHT, LOOK_AT_HEIGHT = 4.0, 1.6, 0.55
FIELD_OF_VIEW = np.radians(40.0)  # vertical = horizontal (square image)
LIGHT = np.array([-2.0, 4.5, 3.0])  # a point light above, left and in front: shadows fall back-right
AMBIENT, DIFFUSE, SPECULAR, SHININESS = 0.3, 0.7, 0.45, 40.0
REGIONS = ("floor", "wall", "object", "highlight")


def _normalise(v: np.ndarray) -> np.ndarray:
    return v / np.sqrt(_dot(v, v))[:, None]


def _dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise dot product of (n, 3) arrays; einsum is several times faster than (a * b).sum(1) here."""
    return np.einsum("ij,ij->i", a, b)


def camera_rays(azimuth_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """Origin (3,) and unit directions (S*S, 3) of the supersampled camera rays, rows top to bottom."""
    a = np.radians(azimuth_deg)
    origin = np.array([CAMERA_DISTANCE * np.sin(a), CAMERA_HEIGHT, CAMERA_DISTANCE * np.cos(a)])
    forward = np.array([0.0, LOOK_AT_HEIGHT, 0.0]) - origin
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, [0.0, 1.0, 0.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    n = SIZE * SUPERSAMPLE
    s = (np.arange(n) + 0.5) / n * 2 - 1  # sample centres in (-1, 1)
    v, u = np.meshgrid(-s, s, indexing="ij")  # v: +1 at the top row
    half = np.tan(FIELD_OF_VIEW / 2)
    dirs = forward + half * (u.reshape(-1, 1) * right + v.reshape(-1, 1) * up)
    return origin, _normalise(dirs)


# Each intersector takes ray origins o (n, 3) and unit directions d (n, 3) in the unit object's frame (the
# object scaled to 1, standing on y = 0) and returns the nearest hit distance t (n,) (inf: a miss) and the
# normals (n, 3). All four shapes are convex: facing away from the light is all the self-shadowing there is.
EPS = 1e-6


def _hit_box(o: np.ndarray, d: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / d
        t0, t1 = (lo - o) * inv, (hi - o) * inv
    near, far = np.minimum(t0, t1), np.maximum(t0, t1)
    t_in, t_out = near.max(1), far.min(1)
    t = np.where((t_in <= t_out) & (t_in > EPS), t_in, np.inf)
    axis = near.argmax(1)  # the slab entered last is the face hit
    rows = np.arange(len(d))
    normal = np.zeros_like(d)
    normal[rows, axis] = -np.sign(d[rows, axis])
    return t, normal


def _hit_sphere(o: np.ndarray, d: np.ndarray, centre: np.ndarray, r: float) -> tuple[np.ndarray, np.ndarray]:
    oc = o - centre
    b = _dot(oc, d)
    disc = b * b - _dot(oc, oc) + r * r
    t = -b - np.sqrt(np.maximum(disc, 0.0))
    t = np.where((disc >= 0) & (t > EPS), t, np.inf)
    return t, (oc + np.where(np.isfinite(t), t, 0.0)[:, None] * d) / r


def _hit_side(o: np.ndarray, d: np.ndarray, r: float, y0: float, y1: float) -> tuple[np.ndarray, np.ndarray]:
    """The curved side of an upright cylinder x² + z² = r², y0 <= y <= y1."""
    a = d[:, 0] ** 2 + d[:, 2] ** 2
    b = o[:, 0] * d[:, 0] + o[:, 2] * d[:, 2]
    c = o[:, 0] ** 2 + o[:, 2] ** 2 - r * r
    disc = b * b - a * c
    t = (-b - np.sqrt(np.maximum(disc, 0.0))) / np.maximum(a, 1e-12)
    y = o[:, 1] + t * d[:, 1]
    t = np.where((disc >= 0) & (a > 1e-12) & (t > EPS) & (y >= y0) & (y <= y1), t, np.inf)
    tf = np.where(np.isfinite(t), t, 0.0)
    x, z = o[:, 0] + tf * d[:, 0], o[:, 2] + tf * d[:, 2]
    return t, np.stack([x / r, np.zeros_like(x), z / r], 1)


def _hit_cap(o: np.ndarray, d: np.ndarray, r: float, y: float, ny: float) -> tuple[np.ndarray, np.ndarray]:
    """The disc x² + z² <= r² at height y, facing ny (+1 up, -1 down)."""
    t = (y - o[:, 1]) / np.where(np.abs(d[:, 1]) > 1e-12, d[:, 1], 1e-12)
    x, z = o[:, 0] + t * d[:, 0], o[:, 2] + t * d[:, 2]
    t = np.where((t > EPS) & (x * x + z * z <= r * r), t, np.inf)
    return t, np.broadcast_to(np.array([0.0, ny, 0.0]), d.shape)


def _nearest(*hits: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    t, normal = hits[0][0].copy(), hits[0][1].copy()
    for t_k, n_k in hits[1:]:
        closer = t_k < t
        t[closer], normal[closer] = t_k[closer], n_k[closer]
    return t, normal


def hit_object(shape: str, o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest hit of rays with a unit-scale shape: about 1 unit tall and wide, standing on the floor."""
    if shape == "cube":
        return _hit_box(o, d, np.array([-0.45, 0.0, -0.45]), np.array([0.45, 0.9, 0.45]))
    if shape == "cylinder":
        return _nearest(_hit_side(o, d, 0.45, 0.0, 1.0), _hit_cap(o, d, 0.45, 1.0, 1.0))
    if shape == "sphere":
        return _hit_sphere(o, d, np.array([0.0, 0.5, 0.0]), 0.5)
    if shape == "capsule":  # an upright pill: a cylinder between two hemispheres
        r, lo, hi = 0.35, 0.35, 0.85
        return _nearest(
            _hit_side(o, d, r, lo, hi),
            _hit_sphere(o, d, np.array([0.0, lo, 0.0]), r),
            _hit_sphere(o, d, np.array([0.0, hi, 0.0]), r),
        )
    raise ValueError(f"unknown shape {shape!r}")


# Every unit shape lies inside this sphere; rays that miss it skip the exact test (most of the image).
BOUND_CENTRE, BOUND_RADIUS = np.array([0.0, 0.5, 0.0]), 0.8


class _RaysToBound:
    """Rays o + t·d against the bounding sphere scaled by s: the dot products that do not depend on s are
    computed once per camera orientation, so testing all 32 (shape, scale) pairs is a few multiplications."""

    def __init__(self, o: np.ndarray, d: np.ndarray) -> None:
        o = np.broadcast_to(o, d.shape)
        self.od, self.cd = _dot(o, d), d @ BOUND_CENTRE
        self.oo, self.oc = _dot(o, o), o @ BOUND_CENTRE

    def near(self, scale: float) -> np.ndarray:
        """Indices of the rays that pass through the sphere of centre s·c and radius s·R."""
        b = self.od - scale * self.cd
        oc2 = self.oo - 2 * scale * self.oc + scale**2 * (BOUND_CENTRE @ BOUND_CENTRE)
        return np.flatnonzero(b * b - oc2 + (BOUND_RADIUS * scale) ** 2 > 0)


def _light(point: np.ndarray, normal: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit directions to the light (n, 3), its distances (n,) and the diffuse intensity (n,).

    A gentle fall-off with distance gives the floor and wall the depth gradient of a lit room; it is
    normalised to 1 at distance 5, about the light's distance from the object.
    """
    to_light = LIGHT - point
    dist = np.sqrt(_dot(to_light, to_light))
    to_light /= dist[:, None]
    falloff = (1.0 + 0.012 * 25.0) / (1.0 + 0.012 * dist**2)
    return to_light, dist, DIFFUSE * np.maximum(_dot(normal, to_light), 0.0) * falloff


class _View:
    """What one camera orientation sees without the object: rays, floor/wall hits and their lighting."""

    def __init__(self, azimuth_deg: float) -> None:
        self.origin, self.dirs = camera_rays(azimuth_deg)
        d = self.dirs
        # every ray of this camera goes down to the floor y = 0 or back to the wall z = WALL_Z
        t_floor = np.where(d[:, 1] < 0, -self.origin[1] / np.minimum(d[:, 1], -1e-12), np.inf)
        t_wall = np.where(d[:, 2] < 0, (WALL_Z - self.origin[2]) / np.minimum(d[:, 2], -1e-12), np.inf)
        self.region = np.where(t_floor <= t_wall, 0, 1)  # 0 floor, 1 wall
        self.t = np.minimum(t_floor, t_wall)
        self.point = self.origin + self.t[:, None] * d
        normal = np.where(self.region[:, None] == 0, [0.0, 1.0, 0.0], [0.0, 0.0, 1.0])
        self.shadow_origin = self.point + 1e-4 * normal  # off the surface, so it cannot shadow itself
        self.to_light, self.light_dist, self.diffuse = _light(self.point, normal)
        self.camera_bound = _RaysToBound(self.origin, d)
        self.shadow_bound = _RaysToBound(self.shadow_origin, self.to_light)


def render_geometry(view: _View, shape: str, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Weights (4, H, W) of floor, wall, object and highlight colour, and the region labels (H, W) uint8.

    Labels: 0 floor, 1 wall, 2 object (the majority of the pixel's supersamples).
    """
    n = len(view.dirs)
    region, diffuse = view.region.copy(), view.diffuse.copy()
    # hard shadows: the object blocks the path from a floor or wall point to the light
    near = view.shadow_bound.near(scale)
    t_block, _ = hit_object(shape, view.shadow_origin[near] / scale, view.to_light[near])
    diffuse[near[t_block * scale < view.light_dist[near]]] = 0.0
    # the object in front of the background
    near = view.camera_bound.near(scale)
    t_obj, normal = hit_object(shape, np.broadcast_to(view.origin / scale, (len(near), 3)), view.dirs[near])
    seen = np.isfinite(t_obj)
    idx, normal, d = near[seen], normal[seen], view.dirs[near[seen]]
    to_light, _, diffuse[idx] = _light(view.origin + (t_obj[seen] * scale)[:, None] * d, normal)
    region[idx] = 2
    half = _normalise(to_light - d)  # Blinn-Phong: the half vector between the light and the eye
    spec = np.zeros(n)
    spec[idx] = SPECULAR * np.maximum(_dot(normal, half), 0.0) ** SHININESS
    shade = (AMBIENT + diffuse) * (1.0 - spec)
    weights = np.zeros((4, n))
    for r in range(3):
        weights[r] = np.where(region == r, shade, 0.0)
    weights[3] = spec
    cover = np.stack([region == r for r in range(3)]).astype(float)
    return _pixels(weights).astype(np.float32), _pixels(cover).argmax(0).astype(np.uint8)


def _pixels(samples: np.ndarray) -> np.ndarray:
    """Average each pixel's S×S supersamples: (k, (H*S)*(W*S)) -> (k, H, W)."""
    s = SUPERSAMPLE
    grid = samples.reshape(len(samples), SIZE, s, SIZE, s)
    out = np.zeros((len(samples), SIZE, SIZE))
    for i in range(s):  # strided slices: much faster than a numpy mean over the two interleaved axes
        for j in range(s):
            out += grid[:, :, i, :, j]
    return out / (s * s)


def palette(saturation: float = SATURATION) -> np.ndarray:
    """RGB (10, 3) of the ten hues at full value."""
    return np.array([colorsys.hsv_to_rgb(h, saturation, 1.0) for h in HUES], dtype=np.float32)


class Shapes3D(GroundTruthData):
    """The built-in 3D Shapes: 480,000 RGB 64×64 images rendered on demand from factor indices."""

    name = "shapes3d"
    factor_names = FACTOR_NAMES
    factor_sizes = FACTOR_SIZES
    observation_shape = (3, SIZE, SIZE)
    num_examples = int(np.prod(FACTOR_SIZES))

    def __init__(self) -> None:
        n_geo = len(SCALES) * len(SHAPES) * len(ORIENTATIONS)  # 480; geometry index = image index % 480
        self.weights = np.empty((n_geo, 4, SIZE * SIZE), dtype=np.float32)
        self.labels = np.empty((n_geo, SIZE, SIZE), dtype=np.uint8)
        views = [_View(angle) for angle in ORIENTATIONS]
        g = 0
        for scale in SCALES:
            for shape in SHAPES:
                for view in views:
                    w, self.labels[g] = render_geometry(view, shape, scale)
                    self.weights[g] = w.reshape(4, -1)
                    g += 1
        self.palette = palette()

    def images(self, indices: np.ndarray) -> np.ndarray:
        f = index_to_factors(indices, self.factor_sizes)  # (n, 6)
        n = len(f)
        geo = (f[:, 3] * 4 + f[:, 4]) * 15 + f[:, 5]
        w = self.weights[geo]  # (n, 4, H*W)
        colours = np.ones((n, 4, 3), dtype=np.float32)  # region -> RGB; the highlight stays white
        colours[:, :3] = self.palette[f[:, :3]]
        # an explicit sum over the four regions, not a BLAS matmul, so the bytes never depend on the BLAS
        out = w[:, 0, None] * colours[:, 0, :, None]  # (n, 3, H*W)
        for r in range(1, 4):
            out += w[:, r, None] * colours[:, r, :, None]
        out *= 255.0
        out += 0.5
        np.clip(out, 0.0, 255.0, out=out)
        return out.astype(np.uint8).reshape(n, 3, SIZE, SIZE)


IN_MEMORY_LIMIT = 1 << 30  # bytes; smaller image arrays are read into memory once, larger ones per batch


class Shapes3DFile(GroundTruthData):
    """The original ``3dshapes.h5`` (or a smaller file in the same format), read with h5py.

    ``labels`` (float64, N×6) are mapped to class indices column by column (the sorted distinct values of a
    column are its classes), which gives the factor sizes; the rows must form the full grid in the release's
    order (orientation fastest) so that index sampling and factor lookups agree.

    The release's images take 5.9 GB, so by default they stay on disk and each batch is read from the file:
    an uncompressed, unchunked ``images`` dataset (as in the release) is memory-mapped with numpy at its byte
    offset in the file, which lets the OS page cache do the work; a chunked or compressed one is read through
    h5py. Arrays under ``IN_MEMORY_LIMIT`` bytes, or any with ``in_memory=True``, are read into memory once.
    """

    name = "shapes3d"
    factor_names = FACTOR_NAMES
    observation_shape = (3, SIZE, SIZE)

    def __init__(self, path: str | Path, in_memory: bool | None = None) -> None:
        import h5py  # imported here so the built-in renderer does not need it

        self.path = Path(path)
        if not self.path.is_file():
            raise DataError(f"3D Shapes file not found: {self.path} (pass 3dshapes.h5 from the release)")
        if not h5py.is_hdf5(self.path):
            raise DataError(f"{self.path} is not an HDF5 file; pass 3dshapes.h5 from the 3D Shapes release")
        try:
            with h5py.File(self.path, "r") as h5:
                missing = [k for k in ("images", "labels") if not isinstance(h5.get(k), h5py.Dataset)]
                if missing:
                    raise DataError(
                        f"{self.path} is missing dataset(s) {missing}; expected 3dshapes.h5 with 'images' and 'labels'"
                    )
                images, labels = h5["images"], h5["labels"][()]
                n = len(images)
                if images.shape != (n, SIZE, SIZE, 3) or images.dtype != np.uint8:
                    raise DataError(
                        f"{self.path}: 'images' is {images.dtype} {images.shape}; expected uint8 (N, 64, 64, 3)"
                    )
                if labels.shape != (n, 6):
                    raise DataError(f"{self.path}: 'labels' has shape {labels.shape}, expected ({n}, 6)")
                self._imgs: np.ndarray | None = None
                if in_memory or (in_memory is None and images.size <= IN_MEMORY_LIMIT):
                    self._imgs = images[()]
                # the byte offset of a contiguous, unfiltered dataset; None when h5py must decode chunks
                plain = images.chunks is None and not images.compression
                self._offset = images.id.get_offset() if plain else None
        except OSError as exc:  # h5py's error for a damaged file
            raise DataError(f"{self.path} is not a readable HDF5 file ({exc})") from exc
        columns = [np.unique(labels[:, k], return_inverse=True) for k in range(6)]
        self.factor_values = tuple(values for values, _ in columns)  # the label value of each class
        self.factor_sizes = tuple(len(values) for values in self.factor_values)
        factors = np.stack([inverse.ravel() for _, inverse in columns], 1)
        if np.prod(self.factor_sizes) != n or not np.array_equal(
            factors, index_to_factors(np.arange(n), self.factor_sizes)
        ):
            raise DataError(f"{self.path}: 'labels' is not a full factor grid in 3D Shapes order (orientation fastest)")
        self.num_examples = n
        self._h5 = None
        self._pid = -1

    def images(self, indices: np.ndarray) -> np.ndarray:
        indices = np.asarray(indices, dtype=np.int64)
        if self._imgs is None and self._offset is not None:
            shape = (self.num_examples, SIZE, SIZE, 3)
            self._imgs = np.memmap(self.path, dtype=np.uint8, mode="r", offset=self._offset, shape=shape)
        if self._imgs is not None:
            batch = self._imgs[indices]
        else:
            # h5py selects strictly increasing indices only: read each distinct image once, then reorder
            unique, inverse = np.unique(indices, return_inverse=True)
            batch = self._file()["images"][unique][inverse.ravel()]
        return np.ascontiguousarray(batch.transpose(0, 3, 1, 2))  # (n, H, W, C) -> (n, C, H, W)

    def _file(self) -> h5py.File:
        import h5py

        # one handle per process: an HDF5 handle must not be shared across fork (data loader workers)
        if self._h5 is None or self._pid != os.getpid():
            self._h5, self._pid = h5py.File(self.path, "r"), os.getpid()
        return self._h5

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_h5"], state["_pid"] = None, -1  # open handles cannot be pickled; reopened on first use
        if isinstance(self._imgs, np.memmap):
            state["_imgs"] = None  # would pickle all 5.9 GB; mapped again on first use
        return state
