"""3D Shapes (paper §4; docs/paper.md §8): a built-in renderer of the exact factor grid (the reader of the
original ``3dshapes.h5`` is in shapes3d_file.py).

Factors, in storage order (orientation fastest): floor hue 10, wall hue 10, object hue 10 (hues 0.0..0.9),
scale 8, shape 4 (cube, cylinder, sphere, capsule), orientation 15 (−30°..30°): 480,000 images.

The renderer ray-casts the release's scene, calibrated on its published frames (docs/data.md): a room of
three walls on a floor under a light-blue sky, one object in the middle. The camera looks horizontally at
the object and orbits it by the orientation angle, so the room corner slides sideways; the lights turn with
it. Shading is soft (headlight, key light with an area-light shadow, no specular term) and clipped at full
value. Colour enters only at the end: the 8 × 4 × 15 = 480 (scale, shape, orientation) geometries are cast
once, 2×2 supersampled, as four weight maps each (floor, wall, object: coverage × shading; sky: coverage),
and an image is a weighted sum of four colours, one gather per batch. The hue stays exact because RGB is
linear in the HSV value.
"""

from __future__ import annotations

import colorsys

import numpy as np

from .factors import GroundTruthData, index_to_factors

FACTOR_NAMES = ("floor_hue", "wall_hue", "object_hue", "scale", "shape", "orientation")
FACTOR_SIZES = (10, 10, 10, 8, 4, 15)
SHAPES = ("cube", "cylinder", "sphere", "capsule")
HUES = np.linspace(0.0, 0.9, 10)  # linspace(0, 1, 10, endpoint=False): the release's label values
SCALES = np.linspace(0.75, 1.25, 8)  # [open]: the release's labels; its README says "[0, 1]"
ORIENTATIONS = np.linspace(-30.0, 30.0, 15)  # degrees
SATURATION = 1.0  # the release's regions are fully saturated (HSV saturation 1 in its frames)
SKY_RGB = np.array([154, 226, 249]) / 255  # the release's sky, the same in every frame
SIZE = 64
SUPERSAMPLE = 2  # 2×2 rays per pixel: smooth edges, and small scale steps still change pixel values

# The scene in world units (the camera's distance from the object is 1); y is up, the object stands on the
# floor at the origin. Fitted to the wall edges and corner positions of the release's 15 orientation
# frames (residual 0.13 px) and to the objects' bottom edge.
CAMERA_DISTANCE, CAMERA_HEIGHT = 1.0, 0.29
FIELD_OF_VIEW = np.radians(48.4)  # vertical = horizontal (square image)
BACK_WALL_Z, SIDE_WALL_X, WALL_HEIGHT = -1.4, 1.37, 0.79
# The lights, in the frame of the camera at orientation 0 (camera on +z looking at −z), turned with it.
KEY_LIGHT = np.array([-0.4, 2.6, -0.65])  # above, a little left and behind: the shadow falls right and forward
KEY_RADIUS = 0.2  # an area light: the shadow's edge is soft
# (ambient, headlight, key light) per material, matched to the release's HSV values: back wall facing the
# camera about 0.95, side walls about 0.7 (lit by the headlight only: the key is a spot on the floor and the
# object), floor over-exposed to 1 outside a shadow of about 0.3, object 0.95 facing the camera, 0.7 at its
# outline.
ROOM_LIGHT, OBJECT_LIGHT = (0.06, 0.9, 0.8), (0.5, 0.45, 0.25)
REGIONS = ("floor", "wall", "object", "sky")

# Object proportions at scale 1 (world units), measured on the release's frames at scale index 0 and on
# its capsule at every scale: cube half side, cylinder radius and half height, sphere radius, capsule
# radius and half length of its straight part.
CUBE_HALF = 0.134
CYLINDER_RADIUS, CYLINDER_HALF = 0.14, 0.142
SPHERE_RADIUS = 0.163
CAPSULE_RADIUS, CAPSULE_HALF = 0.125, 0.125


def _normalise(v: np.ndarray) -> np.ndarray:
    return v / np.sqrt(_dot(v, v))[:, None]


def _dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise dot product of (n, 3) arrays; einsum is several times faster than (a * b).sum(1) here."""
    return np.einsum("ij,ij->i", a, b)


def _turn(v: np.ndarray, azimuth_deg: float) -> np.ndarray:
    """Rotate points (..., 3) about the vertical axis: (0, 0, 1) goes to (sin a, 0, cos a)."""
    a = np.radians(azimuth_deg)
    x, y, z = v[..., 0], v[..., 1], v[..., 2]
    return np.stack([x * np.cos(a) + z * np.sin(a), y, z * np.cos(a) - x * np.sin(a)], -1)


def camera_rays(azimuth_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """Origin (3,) and unit directions (S*S, 3) of the supersampled camera rays, rows top to bottom.

    The camera looks horizontally (the release's vertical edges stay vertical and its horizon is at the
    image centre) at the object's axis from the orbit angle ``azimuth_deg``.
    """
    origin = _turn(np.array([0.0, CAMERA_HEIGHT, CAMERA_DISTANCE]), azimuth_deg)
    forward = _turn(np.array([0.0, 0.0, -1.0]), azimuth_deg)
    right = _turn(np.array([1.0, 0.0, 0.0]), azimuth_deg)
    up = np.array([0.0, 1.0, 0.0])
    n = SIZE * SUPERSAMPLE
    s = (np.arange(n) + 0.5) / n * 2 - 1  # sample centres in (-1, 1)
    v, u = np.meshgrid(-s, s, indexing="ij")  # v: +1 at the top row
    half = np.tan(FIELD_OF_VIEW / 2)
    dirs = forward + half * (u.reshape(-1, 1) * right + v.reshape(-1, 1) * up)
    return origin, _normalise(dirs)


# Each intersector takes ray origins o (n, 3) and unit directions d (n, 3) in the unit object's frame (the
# object at scale 1, standing on y = 0) and returns the nearest hit distance t (n,) (inf: a miss) and the
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
    """Nearest hit of rays with a shape at scale 1, standing upright on the floor at the origin."""
    if shape == "cube":
        return _hit_box(o, d, np.array([-CUBE_HALF, 0.0, -CUBE_HALF]), np.array([CUBE_HALF, 2 * CUBE_HALF, CUBE_HALF]))
    if shape == "cylinder":
        r, top = CYLINDER_RADIUS, 2 * CYLINDER_HALF
        return _nearest(_hit_side(o, d, r, 0.0, top), _hit_cap(o, d, r, top, 1.0))
    if shape == "sphere":
        return _hit_sphere(o, d, np.array([0.0, SPHERE_RADIUS, 0.0]), SPHERE_RADIUS)
    if shape == "capsule":  # an upright pill: a cylinder between two hemispheres
        r, lo = CAPSULE_RADIUS, CAPSULE_RADIUS
        hi = lo + 2 * CAPSULE_HALF
        return _nearest(
            _hit_side(o, d, r, lo, hi),
            _hit_sphere(o, d, np.array([0.0, lo, 0.0]), r),
            _hit_sphere(o, d, np.array([0.0, hi, 0.0]), r),
        )
    raise ValueError(f"unknown shape {shape!r}")


# Each shape at scale 1 lies inside a sphere centred on its axis, (centre height, radius); rays that miss it
# skip the exact test (most of the image).
BOUNDS = {
    "cube": (CUBE_HALF, np.sqrt(3) * CUBE_HALF),
    "cylinder": (CYLINDER_HALF, np.hypot(CYLINDER_RADIUS, CYLINDER_HALF)),
    "sphere": (SPHERE_RADIUS, SPHERE_RADIUS),
    "capsule": (CAPSULE_RADIUS + CAPSULE_HALF, CAPSULE_RADIUS + CAPSULE_HALF),
}


class _RaysToBound:
    """Rays o + t·d against a shape's bounding sphere scaled by s: the dot products that depend on neither
    the shape nor s are computed once per camera orientation, so testing all 32 (shape, scale) pairs is a
    few multiplications."""

    def __init__(self, o: np.ndarray, d: np.ndarray) -> None:
        o = np.broadcast_to(o, d.shape)
        self.od, self.oo = _dot(o, d), _dot(o, o)
        self.dy, self.oy = d[:, 1].copy(), o[:, 1].copy()  # the centres lie on the y axis

    def near(self, shape: str, scale: float) -> np.ndarray:
        """Indices of the rays that pass through the sphere of centre s·c and radius s·R."""
        cy, radius = BOUNDS[shape]
        cy, radius = cy * scale, radius * scale
        b = self.od - cy * self.dy
        oc2 = self.oo - 2 * cy * self.oy + cy**2
        return np.flatnonzero(b * b - oc2 + radius**2 > 0)


def _lighting(
    point: np.ndarray, normal: np.ndarray, d: np.ndarray, key: np.ndarray, light: tuple[float, float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """(ambient + headlight) (n,) and the unshadowed key light (n,) at surface points seen along d."""
    ambient, head, key_strength = light
    base = ambient + head * np.maximum(-_dot(normal, d), 0.0)
    return base, key_strength * np.maximum(_dot(normal, _normalise(key - point)), 0.0)


def _background(origin: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Region (0 floor, 1 wall, 3 sky), hit distance and normal of every ray in the empty room.

    The camera is inside the convex room, so a ray leaves it through the nearest plane in front of it:
    the floor y = 0, a wall (x = ±SIDE_WALL_X, z = BACK_WALL_Z), or over a wall's top into the sky.
    """
    with np.errstate(divide="ignore"):
        planes = np.stack([
            np.where(d[:, 1] < 0, -origin[1] / d[:, 1], np.inf),
            np.where(d[:, 0] < 0, (-SIDE_WALL_X - origin[0]) / d[:, 0], np.inf),
            np.where(d[:, 0] > 0, (SIDE_WALL_X - origin[0]) / d[:, 0], np.inf),
            np.where(d[:, 2] < 0, (BACK_WALL_Z - origin[2]) / d[:, 2], np.inf),
        ])
    which = planes.argmin(0)
    t = planes.min(0)
    normals = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    region = np.where(which == 0, 0, 1)
    region[(which > 0) & (origin[1] + t * d[:, 1] > WALL_HEIGHT)] = 3
    return region, np.where(region == 3, 1.0, t), normals[which]


class _View:
    """What one camera orientation sees without the object: rays, floor/wall/sky hits and their lighting."""

    def __init__(self, azimuth_deg: float) -> None:
        self.origin, self.dirs = camera_rays(azimuth_deg)
        self.region, t, normal = _background(self.origin, self.dirs)
        point = self.origin + t[:, None] * self.dirs
        self.key = _turn(KEY_LIGHT, azimuth_deg)  # the lights turn with the camera
        self.base, self.key_light = _lighting(point, normal, self.dirs, self.key, ROOM_LIGHT)
        self.key_light[self.region != 0] = 0.0  # the key is a spot on the floor and the object
        # shadows fall only where the key light reaches, the floor; the area light is a centre and a ring of
        # points, and the share of them in sight makes the shadow's edge soft
        self.floor = np.flatnonzero(self.region == 0)
        self.shadow_origin = point[self.floor] + 1e-4 * normal[self.floor]  # off the floor: no self-shadow
        ring = [(KEY_RADIUS * np.cos(q), 0.0, KEY_RADIUS * np.sin(q)) for q in np.arange(6) * np.pi / 3]
        self.shadow = []
        for offset in [(0.0, 0.0, 0.0), *ring]:
            to_light = self.key + np.array(offset) - self.shadow_origin
            dist = np.sqrt(_dot(to_light, to_light))
            to_light /= dist[:, None]
            self.shadow.append((to_light, dist, _RaysToBound(self.shadow_origin, to_light)))
        self.camera_bound = _RaysToBound(self.origin, self.dirs)


def render_geometry(view: _View, shape: str, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Weights (4, H, W) of floor, wall, object and sky colour, and the region labels (H, W) uint8.

    Labels: 0 floor, 1 wall, 2 object, 3 sky (the majority of the pixel's supersamples).
    """
    region, lit = view.region.copy(), np.ones(len(view.dirs))
    for to_light, dist, bound in view.shadow:  # soft shadow: the share of the light's points in sight
        near = bound.near(shape, scale)
        t_block, _ = hit_object(shape, view.shadow_origin[near] / scale, to_light[near])
        lit[view.floor[near[t_block * scale < dist[near]]]] -= 1.0 / len(view.shadow)
    shade = view.base + view.key_light * lit
    near = view.camera_bound.near(shape, scale)  # the object in front of the background
    t_obj, normal = hit_object(shape, np.broadcast_to(view.origin / scale, (len(near), 3)), view.dirs[near])
    seen = np.isfinite(t_obj)
    idx, d = near[seen], view.dirs[near[seen]]
    point = view.origin + (t_obj[seen] * scale)[:, None] * d
    base, key = _lighting(point, normal[seen], d, view.key, OBJECT_LIGHT)
    shade[idx], region[idx] = base + key, 2
    shade = np.where(region == 3, 1.0, np.minimum(shade, 1.0))  # clipped like the release's floor
    cover = np.stack([region == r for r in range(4)]).astype(float)
    weights = cover * shade
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
        colours = np.empty((n, 4, 3), dtype=np.float32)  # region -> RGB; the sky is the same everywhere
        colours[:, :3] = self.palette[f[:, :3]]
        colours[:, 3] = SKY_RGB
        # an explicit sum over the four regions, not a BLAS matmul, so the bytes never depend on the BLAS
        out = w[:, 0, None] * colours[:, 0, :, None]  # (n, 3, H*W)
        for r in range(1, 4):
            out += w[:, r, None] * colours[:, r, :, None]
        out *= 255.0
        out += 0.5
        np.clip(out, 0.0, 255.0, out=out)
        return out.astype(np.uint8).reshape(n, 3, SIZE, SIZE)
