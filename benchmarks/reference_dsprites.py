"""How closely the built-in dSprites matches the real release (paper §4 "2D Shapes"; docs/paper.md §8).

The release's animation (``../shared/reference/dsprites-release.gif``, 320 binary frames of real images) holds,
for the top-left position, each shape's scale sweep at orientation 0 and its orientation sweep at scale 1, then
the heart's position sweeps. This prints the IoU of our image against each of those frames (targets: scale
sweeps ≥ 0.9 on average and ≥ 0.8 each), the pixel areas beside the release's, and the orientation sweeps'
IoU with our turning direction and with the opposite one (the direction that matches is the release's).

    .venv/bin/python benchmarks/reference_dsprites.py [--reference ../shared/reference] [--png OUT.png]

``--png`` also writes a side-by-side picture: for each shape a row of release frames above the same
images drawn by us (the six scales, then every fifth orientation), 32×32 top-left crops.

Exits 0 with a message when the reference folder is absent.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from factorvae.data.dsprites import DSprites
from factorvae.data.factors import factors_to_index

SHAPE_INDEX = {"square": 0, "ellipse": 1, "heart": 2}
# first frame of each sweep in the GIF: 6 scales at orientation 0, then (after the sweep back down and up
# again) 40 orientations at scale 1; the heart then sweeps posY 0 -> 31 from the top-left corner
SCALE_SWEEPS = {"heart": 0, "ellipse": 192, "square": 256}
ORIENTATION_SWEEPS = {"heart": 18, "ellipse": 210, "square": 274}
POSITION_SWEEP = 58  # heart, scale 1, orientation 0, posX 0, posY 0..31
TARGET_MEAN, TARGET_EACH = 0.9, 0.8


def release_frames(reference: Path) -> np.ndarray:
    """The GIF's 320 frames as bool (320, 64, 64)."""
    from PIL import Image, ImageSequence

    with Image.open(reference / "dsprites-release.gif") as gif:
        return np.stack([np.asarray(f.convert("L")) > 127 for f in ImageSequence.Iterator(gif)])


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def ours(data: DSprites, shape: int, scale: int, orientation: int, pos_x: int = 0, pos_y: int = 0) -> np.ndarray:
    index = factors_to_index(np.array([[shape, scale, orientation, pos_x, pos_y]]), data.factor_sizes)
    return data.images(index)[0, 0] > 0


def scale_table(data: DSprites, frames: np.ndarray) -> list[tuple[str, int, int, int, float]]:
    """(shape, scale index, release area, our area, IoU) for the 18 scale-sweep frames."""
    rows = []
    for name, first in SCALE_SWEEPS.items():
        for c in range(6):
            mine, real = ours(data, SHAPE_INDEX[name], c, 0), frames[first + c]
            rows.append((name, c, int(real.sum()), int(mine.sum()), iou(mine, real)))
    return rows


def orientation_ious(data: DSprites, frames: np.ndarray, name: str, reverse: bool = False) -> np.ndarray:
    """IoU over the 40 orientation frames; ``reverse`` turns ours the other way (index o -> 39 - o)."""
    out = [iou(ours(data, SHAPE_INDEX[name], 5, 39 - o if reverse else o), frames[ORIENTATION_SWEEPS[name] + o])
           for o in range(40)]
    return np.array(out)


def side_by_side(data: DSprites, frames: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8: per shape, release crops above ours, at the 6 scales and 8 orientations."""
    from factorvae.data.preview import tile

    rows = []
    for name in SCALE_SWEEPS:
        picks = [(c, 0, SCALE_SWEEPS[name] + c) for c in range(6)]
        picks += [(5, o, ORIENTATION_SWEEPS[name] + o) for o in range(0, 40, 5)]
        release = [frames[i][:32, :32] for _, _, i in picks]
        mine = [ours(data, SHAPE_INDEX[name], c, o)[:32, :32] for c, o, _ in picks]
        rows += [np.stack(release)[:, None].astype(np.uint8) * 255, np.stack(mine)[:, None].astype(np.uint8) * 255]
    return tile(rows, 14)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "reference")
    parser.add_argument("--png", type=Path, help="also write the side-by-side picture here")
    args = parser.parse_args()
    if not (args.reference / "dsprites-release.gif").is_file():
        print(f"no reference frames at {args.reference}: nothing to compare (pass --reference DIR)")
        return 0
    frames, data = release_frames(args.reference), DSprites()

    rows = scale_table(data, frames)
    print("scale sweeps at orientation 0, top-left position")
    print(f"{'shape':8s} {'scale':>5s} {'release px':>10s} {'ours px':>8s} {'IoU':>6s}")
    for name, c, real, mine, score in rows:
        print(f"{name:8s} {c:5d} {real:10d} {mine:8d} {score:6.3f}")
    scores = np.array([r[-1] for r in rows])
    ok = scores.mean() >= TARGET_MEAN and scores.min() >= TARGET_EACH
    print(f"mean IoU {scores.mean():.3f} (target {TARGET_MEAN}), worst {scores.min():.3f} (target {TARGET_EACH}):"
          f" {'ok' if ok else 'BELOW TARGET'}")

    print("\norientation sweeps at scale 1 (40 frames each): IoU mean / worst")
    for name in ORIENTATION_SWEEPS:
        same, other = orientation_ious(data, frames, name), orientation_ious(data, frames, name, reverse=True)
        print(f"{name:8s} our direction {same.mean():.3f} / {same.min():.3f}   "
              f"opposite direction {other.mean():.3f} / {other.min():.3f}")

    pos = np.array([iou(ours(data, 2, 5, 0, 0, p), frames[POSITION_SWEEP + p]) for p in range(32)])
    print(f"\nheart posY sweep (32 frames): IoU mean {pos.mean():.3f}, worst {pos.min():.3f}")
    if args.png:
        from factorvae.data.preview import save_png

        print(f"wrote {save_png(side_by_side(data, frames), args.png, zoom=3)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
