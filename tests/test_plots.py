"""Figures and traversals (paper §4) against a fake model whose answers are known in closed form."""

from __future__ import annotations

import io
import json
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from factorvae.figures import plots, traverse

D, SIDE = 4, 8
# per-dimension log-variances chosen so the KL ranking is known: KL_d = 0.5 (e^lv - lv - 1) (+ tiny mu² term)
LOGVAR = np.array([0.0, -2.0, -0.5, -4.0])
KL_CLOSED = 0.5 * (np.exp(LOGVAR) - LOGVAR - 1.0)  # 0, 0.568, 0.053, 1.509
KL_ORDER = [3, 1, 2, 0]


class FakeData:
    observation_shape = (1, SIDE, SIDE)
    num_examples = 50
    has_factors = True
    factor_names = ("shape", "scale", "posX")

    def __init__(self) -> None:
        shape = (self.num_examples, 1, SIDE, SIDE)
        self._pool = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)

    def images(self, indices: np.ndarray) -> np.ndarray:
        return self._pool[indices]

    def sample_observations(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return self.images(rng.integers(0, self.num_examples, n)).astype(np.float32) / 255


class FakeModel:
    """Encoder: mu = 0.1·(first D pixels), fixed logvar. Decoder: pixel p = σ(w_p z_{owner(p)} + b_p)."""

    latent_dim = D

    def __init__(self, kind: str = "vae") -> None:
        self.kind = kind
        self.data = FakeData()
        self.config = SimpleNamespace(to_dict=lambda: {"model": "factorvae", "latent_dim": D})
        rng = np.random.default_rng(0)
        self.owner = np.arange(SIDE * SIDE) % D  # each pixel depends on exactly one code dimension
        self.w = rng.choice([-1.0, 1.0], SIDE * SIDE) * rng.uniform(0.5, 1.5, SIDE * SIDE)
        self.b = rng.normal(0, 0.3, SIDE * SIDE)
        self.decode_calls = 0

    def encode(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        mu = 0.1 * x.reshape(len(x), -1)[:, :D]
        return (mu, None) if self.kind == "gan" else (mu, np.broadcast_to(LOGVAR, mu.shape).copy())

    def decode(self, z: np.ndarray) -> np.ndarray:
        self.decode_calls += 1
        logits = z[:, self.owner] * self.w + self.b
        return (1 / (1 + np.exp(-logits))).reshape(len(z), 1, SIDE, SIDE).astype(np.float32)


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return Image.open(io.BytesIO(data)).size


def _images_per_axes(fig) -> list[int]:
    return [len(ax.images) for ax in fig.axes]


# ---- plots ------------------------------------------------------------------------------------------


def test_tile_images_layout_and_uint8():
    imgs = np.zeros((5, 1, 4, 6), np.uint8)
    imgs[3] = 255
    out = plots.tile_images(imgs, ncols=3, pad=2, pad_value=0.5)
    assert out.shape == (2 * 4 + 2, 3 * 6 + 2 * 2, 3)
    assert (out[6:10, 0:6] == 1.0).all()  # image 3 = row 1, column 0
    assert (out[6:10, 16:22] == 0.5).all()  # the unused sixth cell stays padding


def test_traversal_figure_rows_and_exact_pixels():
    grid = np.random.default_rng(0).random((4, 5, 1, SIDE, SIDE))
    fig = plots.traversal_figure(grid, [f"z{d}  KL=1.00  → posX" for d in range(4)], scale=3,
                                 col_labels=[str(v) for v in range(5)], title="t")
    assert _images_per_axes(fig) == [1] * 4
    png = plots.figure_to_png(fig)
    w_in, h_in = fig.get_size_inches()
    assert _png_size(png) == (round(w_in * fig.dpi), round(h_in * fig.dpi))
    fig.canvas.draw()
    box = fig.axes[0].get_window_extent()
    # integer zoom, no resampling: each strip is exactly (S·W + (S−1)·pad)·scale pixels wide
    assert round(box.width) == (5 * SIDE + 4 * plots.PAD) * 3 and round(box.height) == SIDE * 3
    with_header = plots.traversal_figure(grid, None, header=grid[0, :2])
    assert len(with_header.axes) == 5


def test_traversal_figure_rejects_bad_shapes():
    with pytest.raises(ValueError):
        plots.traversal_figure(np.zeros((3, 1, SIDE, SIDE)))
    with pytest.raises(ValueError):
        plots.traversal_figure(np.zeros((3, 2, 1, SIDE, SIDE)), ["only one"])


def test_reconstruction_and_samples_figures():
    x = np.random.default_rng(0).random((12, 3, SIDE, SIDE)).astype(np.float32)
    fig = plots.reconstruction_figure(x, 1 - x, ncols=5)
    assert _images_per_axes(fig) == [1] * 6  # 3 chunks of 5, each an input row above a reconstruction row
    assert fig.axes[0].images[0].get_array().shape == (SIDE, 5 * SIDE + 4 * plots.PAD, 3)
    samples = plots.samples_figure(x)
    assert _images_per_axes(samples) == [1]
    mosaic = samples.axes[0].images[0].get_array()
    assert mosaic.shape[:2] == (3 * SIDE + 2 * plots.PAD, 4 * SIDE + 3 * plots.PAD)  # 12 images on 3 × 4
    with pytest.raises(ValueError):
        plots.reconstruction_figure(x, x[:3])


def test_traversal_gif_frames():
    grids = np.random.default_rng(0).random((2, 3, 6, 1, SIDE, SIDE))
    gif = plots.traversal_gif(grids, ["z0", "z1", "z2"], scale=2)
    im = Image.open(io.BytesIO(gif))
    assert im.format == "GIF" and im.n_frames == 2 * 6 - 2
    assert im.size[0] == (3 * SIDE + 2 * plots.PAD) * 2
    one = Image.open(io.BytesIO(plots.traversal_gif(grids[0], scale=1, pingpong=False)))
    assert one.n_frames == 6 and one.size == (3 * SIDE + 2 * plots.PAD, SIDE)
    rgb = Image.open(io.BytesIO(plots.traversal_gif(np.random.default_rng(1).random((3, 4, 3, SIDE, SIDE)))))
    assert rgb.n_frames == 6


def _log(n: int, gan: bool = False, factor: bool = True) -> list[dict]:
    rng = np.random.default_rng(0)
    if gan:
        return [{"step": i, "time": i, "critic_loss": -rng.random(), "gp": rng.random(), "wasserstein": 1.0,
                 "mi": rng.random()} for i in range(n)]
    out = []
    for i in range(n):
        rec = {"step": 100 * i, "time": i, "steps_per_s": 10.0, "recon": 90 / (i + 1), "kl": 20.0,
               "kl_per_dim": list(rng.random(D)), "loss": 1.0}
        if factor:
            rec |= {"tc": 0.3, "d_loss": 0.69, "d_acc": 0.55}
        out.append(rec)
    return out


def test_curves_panels_follow_the_data():
    assert len(plots.curves_figure(_log(80, factor=False)).axes) == 3  # recon, KL, KL per dim
    metrics = [{"step": 0, "factorvae": {"score": 0.5}, "tc_true": 2.0},
               {"step": 500, "factorvae": {"score": 0.7}}]
    full = plots.curves_figure(_log(80), metrics)
    titles = [ax.get_title() for ax in full.axes]
    assert len(titles) == 6
    assert any("Total correlation" in t for t in titles) and any("metric" in t for t in titles)
    tc_ax = next(ax for ax in full.axes if "Total correlation" in ax.get_title())
    assert len(tc_ax.get_legend().get_texts()) == 2  # discriminator estimate next to the true TC
    gan = plots.curves_figure(_log(10, gan=True))
    assert sorted(ax.get_title() for ax in gan.axes) == sorted(
        ["Critic loss", "Wasserstein estimate", "Gradient penalty", "Mutual-information bound"])
    assert plots.curves_figure([]) is None
    assert _png_size(plots.figure_to_png(full))[0] > 500


def test_read_jsonl_skips_a_torn_last_line(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text('{"step": 1, "recon": 2.0}\n{"step": 2, "rec')
    assert plots.read_jsonl(path) == [{"step": 1, "recon": 2.0}]
    assert plots.read_jsonl(tmp_path / "absent.jsonl") == [] and plots.read_json(tmp_path / "x.json") is None


# ---- traversals -------------------------------------------------------------------------------------


def test_kl_per_dim_closed_form():
    mu, logvar = np.array([[1.0, 0.0]]), np.array([[0.0, np.log(2.0)]])
    assert np.allclose(traverse.kl_per_dim(mu, logvar), [0.5, 0.5 * (2 - np.log(2) - 1)])


def test_traversal_rows_sorted_by_kl_and_each_row_moves_only_its_dimension():
    model = FakeModel()
    seeds = model.data.sample_observations(2, np.random.default_rng(0))
    tr = traverse.traversal_grid(model, seeds, n_steps=7, limit=2.0)
    assert tr.grid.shape == (2, D, 7, 1, SIDE, SIDE)
    assert tr.order.tolist() == KL_ORDER
    assert np.allclose(tr.kl, KL_CLOSED, atol=0.01)  # the mu² term adds at most 0.005
    assert np.allclose(tr.values[0, 0], np.linspace(-2, 2, 7))
    for n in range(2):
        for r, d in enumerate(tr.order):
            changed = tr.grid[n, r].std(axis=0).reshape(-1) > 1e-7  # pixels that move along row r
            assert (changed == (model.owner == d)).all()


def test_posterior_mode_centres_on_the_seed_and_gan_sweeps_unit_box():
    model = FakeModel()
    seed = model.data.sample_observations(1, np.random.default_rng(3))
    tr = traverse.traversal_grid(model, seed, n_steps=5, limit=1.0, mode="posterior")
    mu = model.encode(seed)[0][0]
    assert np.allclose(tr.values[0, :, 2], mu[tr.order])  # the middle column is the seed's own code
    gan = traverse.traversal_grid(FakeModel("gan"), seed, n_steps=5)
    assert gan.kl is None and gan.order.tolist() == list(range(D))
    assert np.allclose(gan.values[0, 1], np.linspace(-1, 1, 5))
    assert traverse.row_labels(gan, {1: "posX"}, prefix="c")[1] == "c1  → posX"
    with pytest.raises(ValueError):
        traverse.traversal_grid(model, seed, mode="sideways")


def test_factor_of_dim_labels_only_voted_active_dims():
    result = {"vote_matrix": [[0, 9, 1], [0, 0, 0], [7, 1, 0], [0, 0, 5]], "active_dims": [0, 1, 2]}
    assert traverse.factor_of_dim(result, ("shape", "scale", "posX")) == {0: "scale", 2: "shape"}
    over_active = {"vote_matrix": [[3, 0], [0, 4]], "active_dims": [1, 5], "factor_names": ["a", "b"]}
    assert traverse.factor_of_dim(over_active) == {1: "a", 5: "b"}
    assert traverse.factor_of_dim(None) == {} and traverse.factor_of_dim({"score": 1.0}) == {}
    # eval.json as factorvae.evaluate writes it: the trained classifier (−1: no vote) beside the votes
    written = {"classifier": [2, -1, 0, 1], "train_votes": [[0, 1, 9], [0, 0, 0], [4, 0, 0], [0, 3, 0]],
               "active_dims": [0, 1, 2, 3], "factor_names": ["shape", "scale", "posX"]}
    assert traverse.factor_of_dim(written) == {0: "posX", 2: "shape", 3: "scale"}


def test_reconstructions_and_samples_shapes():
    model = FakeModel()
    x, r = traverse.reconstructions(model, 5, seed=0)
    assert x.shape == r.shape == (5, 1, SIDE, SIDE)
    assert traverse.prior_samples(model, 7, seed=0).shape == (7, 1, SIDE, SIDE)
    assert np.array_equal(traverse.prior_samples(model, 3, seed=4), traverse.prior_samples(model, 3, seed=4))


def test_write_visuals_writes_every_figure(tmp_path):
    (tmp_path / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _log(30)))
    votes = [[0, 0, 4], [5, 0, 0], [0, 0, 0], [0, 6, 0]]
    (tmp_path / "eval.json").write_text(json.dumps({"factorvae": {"score": 0.9, "vote_matrix": votes}}))
    paths = traverse.write_visuals(tmp_path, n_seeds=2, model=FakeModel())
    names = sorted(p.name for p in paths)
    assert names == sorted(["traversal_seed0.png", "traversal_seed1.png", "traversal.gif",
                            "reconstructions.png", "samples.png", "curves.png", "traversal.json"])
    assert all(p.stat().st_size > 0 for p in paths)
    assert not list((tmp_path / "figures").glob(".*tmp"))  # no temporary files left behind
    meta = json.loads((tmp_path / "figures" / "traversal.json").read_text())
    assert meta["order"] == KL_ORDER
    assert meta["labels"][0].startswith("z3  KL=1.5") and meta["labels"][0].endswith("→ scale")
    assert meta["labels"][-1] == "z0  KL=0.00  → posX"


def test_write_visuals_for_a_gan_has_no_kl_and_code_labels(tmp_path):
    traverse.write_visuals(tmp_path, n_seeds=1, model=FakeModel("gan"))
    meta = json.loads((tmp_path / "figures" / "traversal.json").read_text())
    assert meta["kl"] is None and meta["order"] == list(range(D)) and meta["labels"][0] == "c0"
    assert not (tmp_path / "figures" / "curves.png").exists()  # no log.jsonl: nothing to draw
