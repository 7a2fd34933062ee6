"""The self-contained HTML report: embedded figures, escaping, partial run directories, a real browser."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from factorvae.figures.report import write_report

SIDE, D = 32, 5
FACTORS = ("posX", "posY", "scale")


class BlobData:
    """32×32 grey blobs whose x, y and size are the factors: enough for readable figures in a screenshot."""

    observation_shape = (1, SIDE, SIDE)
    num_examples = 1000
    has_factors = True
    factor_names = FACTORS

    def sample_observations(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return render(rng.uniform(-1.5, 1.5, (n, D)))


def render(z: np.ndarray) -> np.ndarray:
    yy, xx = np.mgrid[0:SIDE, 0:SIDE]
    cx, cy = 16 + 5 * z[:, 0, None, None], 16 + 5 * z[:, 1, None, None]
    r = 4 + 1.2 * np.clip(z[:, 2, None, None], -2, 2)
    return (((xx - cx) ** 2 + (yy - cy) ** 2) < r**2).astype(np.float32)[:, None]


class BlobModel:
    """Encodes a blob's centre and size back into z0–z2; z3, z4 are unused (KL ≈ 0, rows sink)."""

    kind, latent_dim = "vae", D

    def __init__(self) -> None:
        self.data = BlobData()
        self.config = SimpleNamespace(to_dict=lambda: {"latent_dim": D})

    def encode(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        img = x[:, 0]
        mass = img.sum((1, 2)) + 1e-6
        yy, xx = np.mgrid[0:SIDE, 0:SIDE]
        mu = np.zeros((len(x), D))
        mu[:, 0] = ((img * xx).sum((1, 2)) / mass - 16) / 5
        mu[:, 1] = ((img * yy).sum((1, 2)) / mass - 16) / 5
        mu[:, 2] = (np.sqrt(mass / np.pi) - 4) / 1.2
        logvar = np.tile([-3.0, -3.0, -2.0, 0.0, 0.0], (len(x), 1))
        return mu, logvar

    def decode(self, z: np.ndarray) -> np.ndarray:
        return render(z)


def _full_run(run: Path, config_extra: dict | None = None) -> Path:
    run.mkdir(parents=True, exist_ok=True)
    config = {"model": "factorvae", "dataset": "dsprites", "latent_dim": D, "gamma": 40.0, "seed": 0,
              "adam_betas": [0.9, 0.999], **(config_extra or {})}
    (run / "config.json").write_text(json.dumps(config))
    rng = np.random.default_rng(0)
    log = [{"step": 100 * i, "time": 2.0 * i, "steps_per_s": 50.0, "recon": 60 + 400 / (i + 1) + rng.normal(),
            "kl": 18 + rng.normal(), "kl_per_dim": list(np.abs(rng.normal(size=D))), "loss": 80.0, "tc": 0.4,
            "d_loss": 0.68, "d_acc": 0.55} for i in range(120)]
    (run / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
    metrics = [{"step": 4000 * i, "factorvae": {"score": 0.5 + 0.05 * i}, "tc_true": 3.0 - 0.3 * i}
               for i in range(4)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in metrics))
    (run / "eval.json").write_text(json.dumps({
        "factorvae": {"score": 0.82, "protocol": "paper", "L": 100, "n_train": 500, "n_eval": 300,
                      "vote_matrix": [[90, 3, 1], [2, 88, 4], [1, 2, 70], [0, 0, 0], [0, 0, 0]],
                      "active_dims": [0, 1, 2, 3, 4], "factor_names": list(FACTORS)},
        "tc": {"tc": 1.7, "tc_discriminator": 0.4}}))
    (run / "status.json").write_text(json.dumps({"step": 11900, "state": "finished", "error": None}))
    (run / "checkpoint.pt").write_bytes(b"stand-in")  # figures are drawn from the model passed in
    return run


def _attr_urls(page: str) -> list[str]:
    return re.findall(r'(?:src|href)\s*=\s*"([^"]*)"', page)


@pytest.fixture(scope="module")
def full_report(tmp_path_factory) -> Path:
    """One complete run and its report, shared by the tests that only read them (drawing costs seconds)."""
    return write_report(_full_run(tmp_path_factory.mktemp("full") / "run"), model=BlobModel())


def test_full_report_embeds_every_figure_and_no_network(full_report):
    path, run = full_report, full_report.parent
    page = path.read_text()
    assert path == run / "report.html"
    # curves, 3 seed traversals, reconstructions, samples as PNG; the animated traversal as GIF
    assert page.count('src="data:image/png;base64,') == 6 and page.count('src="data:image/gif;base64,') == 1
    assert not [u for u in _attr_urls(page) if u.startswith(("http:", "https:", "//"))]
    assert "<script" not in page.lower()
    for text in ("0.82", "paper", "L=100", "posX", "finished", "0.55", ">posY<", "1.7 (tc)", "Configuration"):
        assert text in page, text
    assert "Missing from this run directory" not in page


def test_report_escapes_text(tmp_path):
    run = tmp_path / "run<i>"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"model": "vae", "extra": {"note": "<script>x</script> & co"}}))
    (run / "status.json").write_text(json.dumps({"step": 5, "state": "failed", "error": "<b>boom</b>"}))
    (run / "eval.json").write_text(json.dumps({"<img src=x>": {"score": 0.1, "protocol": "<u>p</u>"}}))
    page = write_report(run).read_text()
    for raw in ("<script>x", "<b>boom</b>", "<img src=x>", "<u>p</u>", "run<i>"):
        assert raw not in page, raw
    for escaped in ("&lt;b&gt;boom&lt;/b&gt;", "&amp; co", "&lt;img src=x&gt;", "run&lt;i&gt;"):
        assert escaped in page, escaped


def test_report_from_config_only_lists_what_is_missing(tmp_path):
    run = tmp_path / "fresh"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"model": "betavae", "dataset": "dsprites", "beta": 4.0}))
    page = write_report(run).read_text()
    missing = page.split("Missing from this run directory")[1].split("</div>")[0]
    for name in ("log.jsonl", "checkpoint.pt", "eval.json", "status.json"):
        assert name in missing, name
    assert f"factorvae evaluate {run}" in missing
    assert "data:image" not in page and "betavae" in page
    assert not (run / "figures").exists()


def test_report_survives_an_unreadable_checkpoint_and_an_empty_folder(tmp_path):
    run = _full_run(tmp_path / "run")
    page = write_report(run).read_text()  # the stand-in checkpoint cannot be loaded
    assert "drawing them failed" in page and page.count("data:image/png") == 1  # the curves still show
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "config.json" in write_report(empty).read_text()


def test_report_reuses_fresh_figures_and_redraws_curves_for_a_newer_log(tmp_path, full_report):
    run = shutil.copytree(full_report.parent, tmp_path / "run")  # copy2 keeps the mtimes
    model = BlobModel()
    traversal = run / "figures" / "traversal_seed0.png"
    before = traversal.stat().st_mtime_ns
    with (run / "log.jsonl").open("a") as f:
        f.write(json.dumps({"step": 99999, "recon": 1.0, "kl": 1.0}) + "\n")
    page = write_report(run, model=model).read_text()
    assert traversal.stat().st_mtime_ns == before  # the model figures were not drawn again
    assert (run / "figures" / "curves.png").stat().st_mtime >= (run / "log.jsonl").stat().st_mtime
    assert "99999" in page


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]
    return subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=90)


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary on PATH")
def test_report_renders_in_a_real_browser(tmp_path, full_report):
    report = full_report
    shot = tmp_path / "shot.png"
    _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1200,3000", report.as_uri())
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape[:2] == (3000, 1200)
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 200  # text, plots and images, not a blank page
    # the report itself has no script; a copy with one reports how each image decoded
    probe = tmp_path / "probe.html"
    probe.write_text(report.read_text().replace(
        "</body>", "<script>window.addEventListener('load',()=>{document.title='sizes:'+"
        "[...document.images].map(i=>i.complete?i.naturalWidth:-1).join(',')})</script></body>"))
    dom = _chromium(tmp_path, "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()).stdout
    sizes = re.search(r"<title>sizes:([\d,-]*)</title>", dom)
    assert sizes, dom[:500]
    widths = [int(w) for w in sizes.group(1).split(",")]
    assert len(widths) == 7 and min(widths) > 100
