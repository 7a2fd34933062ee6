"""How closely the built-in 3D Shapes matches the real release (paper §4 "3D Shapes"; docs/paper.md §8).

The release's animation (``../shared/reference/3dshapes-release.gif``) is 53 frames, each one real 64×64 image
upscaled in a white frame: the cube's 15 orientations, the other shapes, the capsule's 8 scales, then sweeps
of the three hues. Each frame is cut out and box-filtered back to 64×64; its hues are read from probe pixels
that every geometry leaves in one region (floor low left, wall at mid height on the left edge, object at the
image centre just below the horizon), rounded to the nearest of the 10 hues, and its geometry is the
(scale, shape, orientation) whose image drawn by us is closest. This prints, over all frames:

- the sky colour per channel (release mean and spread across frames, ours, difference), and how far our
  sky's lower edge (the walls' top edge, with the room corner's dip) lies from the release's, per column;
- the hue error in degrees of the floor, the walls and the object, measured the same way in the release's
  frame and in ours (the circular mean hue of the region's pixels away from its edges, from our region map),
  and the release's measured hues against its nominal values (h × 360°).

    .venv/bin/python benchmarks/reference_shapes3d.py [--reference ../shared/reference] [--png OUT.png]

``--png`` also writes a side-by-side picture: release frames above ours at the same factors. Exits 0 with a
message when the reference folder is absent.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from factorvae.data.factors import factors_to_index
from factorvae.data.shapes3d import SKY_RGB, Shapes3D

GIF = "3dshapes-release.gif"
PROBES = {"floor": (62, 4), "wall": (24, 4), "object": (46, 32)}  # (row, col): in that region in every image
REGIONS = ("floor", "wall", "object")  # region labels 0, 1, 2 of Shapes3D.labels; 3 is the sky
SIDE_BY_SIDE = (0, 3, 7, 11, 14, 15, 16, 17, 20, 24, 27, 30, 34, 37, 44, 50)  # frames shown by --png


def release_cells(reference: Path) -> np.ndarray:
    """The GIF's frames as uint8 (n, 64, 64, 3): the picture inside the white frame and its grey rim."""
    from PIL import Image, ImageSequence

    cells = []
    with Image.open(reference / GIF) as gif:
        for frame in ImageSequence.Iterator(gif):
            rgb = np.asarray(frame.convert("RGB"))
            rows, cols = np.nonzero((rgb < 250).any(2))
            inner = rgb[rows.min() + 1 : rows.max(), cols.min() + 1 : cols.max()]  # drop the 1-px grey rim
            cells.append(np.asarray(Image.fromarray(inner).resize((64, 64), Image.BOX)))
    return np.stack(cells)


def hsv(images: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 RGB -> float (..., 3) HSV, hue in [0, 1)."""
    rgb = images.astype(float) / 255
    v, lo = rgb.max(-1), rgb.min(-1)
    c = v - lo
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    safe = np.where(c > 0, c, 1.0)
    h = np.where(v == r, (g - b) / safe, np.where(v == g, 2 + (b - r) / safe, 4 + (r - g) / safe))
    return np.stack([(h / 6) % 1.0, np.where(v > 0, c / np.where(v > 0, v, 1.0), 0.0), v], -1)


def identify(data: Shapes3D, cells: np.ndarray) -> np.ndarray:
    """Factor classes (n, 6) of each release frame: hues from the probes, then the (scale, shape, orientation)
    whose image in those hues is closest to the frame once every pixel is divided by its value (HSV V): the
    comparison then sees where each colour is, not how it is shaded, so a lighting difference cannot pick a
    wrong geometry, and anti-aliased edges count alike in both images."""
    out = []
    for cell in cells:
        h = hsv(cell)
        hues = [int(np.rint(h[r, c, 0] * 10)) % 10 for r, c in PROBES.values()]
        first = factors_to_index(np.array([[*hues, 0, 0, 0]]), data.factor_sizes)[0]
        candidates = data.images(first + np.arange(480)).transpose(0, 2, 3, 1)  # (480, H, W, 3)
        err = np.abs(_unshaded(candidates) - _unshaded(cell)).mean((1, 2, 3))
        out.append([*hues, *np.unravel_index(int(err.argmin()), data.factor_sizes[3:])])
    return np.array(out, dtype=np.int64)


def _unshaded(images: np.ndarray) -> np.ndarray:
    """RGB (..., 3) divided by its largest channel: the colour at full value."""
    rgb = images.astype(np.float32)
    return rgb / np.maximum(rgb.max(-1, keepdims=True), 1.0)


def sky_rows(image: np.ndarray) -> np.ndarray:
    """Sky rows per column (W,) of an (H, W, 3) image: the leading sky-coloured pixels plus the sky's share
    of the first other one, read on the line from the sky colour to the colour two rows further down."""
    gap = np.abs(image.astype(float) - 255 * SKY_RGB).max(-1)  # (H, W)
    lead = np.argmax(gap >= 20, axis=0)  # first row that is not sky
    cols = np.arange(image.shape[1])
    below = gap[np.minimum(lead + 2, image.shape[0] - 1), cols]
    return lead + np.clip(1 - gap[lead, cols] / np.maximum(below, 1.0), 0.0, 1.0)


def _inner(mask: np.ndarray) -> np.ndarray:
    """The pixels of a mask whose 8 neighbours are in it too: away from the region's anti-aliased edge."""
    padded = np.pad(mask, 1)
    out = mask.copy()
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            out &= padded[1 + dr : 65 + dr, 1 + dc : 65 + dc]
    return out


def region_hues(image: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Circular mean hue in degrees (3,) of floor, wall and object in an (H, W, 3) image, NaN if too few."""
    h = hsv(image)
    out = np.full(3, np.nan)
    for r in range(3):
        pick = _inner(labels == r) & (h[..., 1] > 0.5) & (h[..., 2] > 0.3)  # dark GIF pixels: coarse hue
        if pick.sum() >= 10:
            angle = 2 * np.pi * h[..., 0][pick]
            out[r] = np.degrees(np.arctan2(np.sin(angle).mean(), np.cos(angle).mean())) % 360
    return out


def hue_gap(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Signed circular difference a − b of hues in degrees, in [−180, 180)."""
    return (a - b + 180) % 360 - 180


def measure(data: Shapes3D, cells: np.ndarray) -> dict:
    """The figures: factors (n, 6), release/our/nominal region hues (n, 3) and sky colours (n, 3)."""
    factors = identify(data, cells)
    index = factors_to_index(factors, data.factor_sizes)
    ours = data.images(index).transpose(0, 2, 3, 1)
    labels = data.labels[index % 480]
    release_hues = np.stack([region_hues(c, lab) for c, lab in zip(cells, labels, strict=True)])
    our_hues = np.stack([region_hues(o, lab) for o, lab in zip(ours, labels, strict=True)])
    sky = np.stack([cell[_inner(lab == 3)].mean(0) for cell, lab in zip(cells, labels, strict=True)])
    our_sky = np.stack([o[_inner(lab == 3)].mean(0) for o, lab in zip(ours, labels, strict=True)])
    edge = np.stack([sky_rows(o) - sky_rows(c) for o, c in zip(ours, cells, strict=True)])[:, 2:-2]
    return {"factors": factors, "release": release_hues, "ours": our_hues, "nominal": factors[:, :3] * 36.0,
            "sky": sky, "our_sky": our_sky, "sky_edge": edge, "images": ours}


def report(m: dict) -> list[str]:
    lines = ["sky RGB      release mean (spread over frames)   ours (spread)   ours - release"]
    for k, name in enumerate("RGB"):
        rel, us = m["sky"][:, k], m["our_sky"][:, k]
        lines.append(f"  {name}          {rel.mean():6.1f} ({np.ptp(rel):4.1f})"
                     f"                    {us.mean():6.1f} ({np.ptp(us):3.1f})   {us.mean() - rel.mean():+6.1f}")
    lines.append(f"  target sky: {np.rint(SKY_RGB * 255).astype(int).tolist()}")
    edge = np.abs(m["sky_edge"])
    lines.append(f"sky edge (walls' top, object outline above it): ours - release {edge.mean():.2f} px mean |.|, "
                 f"{edge.max():.2f} px max, over columns 2..61 of every frame")
    lines.append("hue error (degrees)  ours - release: mean |.|, max |.|   release - nominal: mean |.|, max |.|")
    for r, name in enumerate(REGIONS):
        ours_gap = np.abs(hue_gap(m["ours"][:, r], m["release"][:, r]))
        nominal_gap = np.abs(hue_gap(m["release"][:, r], m["nominal"][:, r]))
        n = int(np.isfinite(ours_gap).sum())
        lines.append(f"  {name:7s} ({n:2d} frames)       {np.nanmean(ours_gap):5.2f}  {np.nanmax(ours_gap):5.2f}"
                     f"                     {np.nanmean(nominal_gap):5.2f}  {np.nanmax(nominal_gap):5.2f}")
    return lines


def side_by_side(cells: np.ndarray, ours: np.ndarray, frames: tuple[int, ...] = SIDE_BY_SIDE) -> np.ndarray:
    """(H, W, 3) uint8: rows of 8 release frames, each row above the same factors drawn by us."""
    from factorvae.data.preview import tile

    rows = []
    for start in range(0, len(frames), 8):
        picks = list(frames[start : start + 8])
        rows += [cells[picks].transpose(0, 3, 1, 2), ours[picks].transpose(0, 3, 1, 2)]
    return tile(rows, n_cols=8)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "reference")
    parser.add_argument("--png", type=Path, default=None)
    args = parser.parse_args()
    if not (args.reference / GIF).is_file():
        print(f"no {GIF} in {args.reference}: nothing to compare (skipped)")
        return 0
    cells, data = release_cells(args.reference), Shapes3D()
    m = measure(data, cells)
    print(f"{len(cells)} release frames; factors identified (floor, wall, object hue, scale, shape, orientation):")
    for start in range(0, len(cells), 10):
        print("  " + "  ".join("{}{}{}:{}:{}:{:2d}".format(*f) for f in m["factors"][start : start + 10]))
    print("\n".join(report(m)))
    if args.png:
        from factorvae.data.preview import save_png

        print(f"wrote {save_png(side_by_side(cells, m['images']), args.png, zoom=2)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
