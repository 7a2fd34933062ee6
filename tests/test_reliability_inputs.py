"""Issue 17, continued: bad input anywhere is one line and exit 2 with nothing changed on disk; reports escape
every value from a file; metrics refuse NaN codes; moved data; per-folder caches; Ray on 127.0.0.1 only."""

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from factorvae.cli import main
from factorvae.config import ConfigError, make_config
from factorvae.data import DataError, index_to_factors, load
from factorvae.training.loop import train
from helpers import cli_error_line

SMALL = ["--batch-size", "8", "--set", "d_hidden=64", "--set", "log_every=2", "--quiet"]
pytestmark = pytest.mark.usefixtures("one_thread")  # in-process training beside other jobs: see conftest


def _npz(path: Path, imgs=None, sizes=(3, 2, 2, 2, 2)) -> Path:
    n = int(np.prod(sizes))
    classes = np.concatenate([np.zeros((n, 1), np.int64), index_to_factors(np.arange(n), sizes)], 1)
    if imgs is None:
        imgs = np.zeros((n, 64, 64), np.uint8)
        imgs[np.arange(n), np.arange(n) % 64, 3] = 1
    np.savez(path, imgs=imgs, latents_classes=classes[: len(imgs)])
    return path


# ---- 7. bad input: one line, exit 2 ----------------------------------------------------------------------


@pytest.mark.parametrize("argv, message", [
    (["--set", "lr_d=nan"], "lr_d must be a finite number > 0, got nan"),
    (["--set", "lr=inf"], "lr must be a finite number > 0"),
    (["--set", "adam_betas=0.9,1.5"], "adam_betas must be two numbers in [0, 1)"),
    (["--set", "adam_betas=0.9"], "adam_betas must be two numbers in [0, 1)"),
    (["--set", "adam_betas_d=a,b"], "adam_betas_d must be comma-separated numbers, got 'a,b'"),
    (["--set", "threads=-1"], "threads must be a positive integer, got -1"),
    (["--set", "fc_width=0"], "fc_width must be a positive integer, got 0"),
    (["--set", "fc_width=-3"], "fc_width must be a positive integer, got -3"),
    (["--set", "d_hidden=-1"], "d_hidden must be a positive integer, got -1"),
    (["--set", "d_layers=0"], "d_layers must be a positive integer, got 0"),
    (["--set", "noise_dim=-2"], "noise_dim must be a positive integer, got -2"),
    (["--seed", "-1"], "seed must be an integer >= 0, got -1"),
    (["--set", "d_slope=nan"], "d_slope must be a finite number >= 0"),
    (["--steps", "2", "--set", "steps=3"], "steps is given twice, as --steps 2 and --set steps=3"),
    (["--dataset", "chairs", "--data-path", "/nonexistent/chairs"], "not found"),
])
def test_bad_training_settings(capsys, tmp_path, argv, message):
    err = cli_error_line(capsys, ["train", "--out", str(tmp_path / "r"), *argv])
    assert message in err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("imgs, message", [
    (np.full((48, 64, 64), 0.5, np.float32), "binary 0/1 integer pixels"),  # would have become black
    (np.full((48, 64, 64), np.nan), "binary 0/1 integer pixels"),
    (np.full((48, 64, 64), -1, np.int8), "binary 0/1 integer pixels"),
    (np.zeros((0, 64, 64), np.uint8), "expected (N, 64, 64)"),  # an empty file
])
def test_bad_npz_pixels_are_refused(tmp_path, capsys, imgs, message):
    path = _npz(tmp_path / "d.npz", imgs)
    err = cli_error_line(capsys, ["train", "--data-path", str(path), "--out", str(tmp_path / "r")])
    assert message in err and not (tmp_path / "r").exists()


@pytest.mark.parametrize("images", [np.zeros((0, 64, 64, 3), np.uint8), np.uint8(7)])  # empty, scalar
def test_empty_and_scalar_h5_are_refused(tmp_path, images):
    with h5py.File(tmp_path / "s.h5", "w") as h5:
        h5["images"] = images
        h5["labels"] = np.zeros((0, 6)) if np.ndim(images) else np.float64(1)
    with pytest.raises(DataError, match="expected uint8 \\(N, 64, 64, 3\\)"):
        load("shapes3d", tmp_path / "s.h5")


def test_bad_output_paths_and_limits(tmp_path, capsys):
    (tmp_path / "file").write_text("not a folder")
    err = cli_error_line(capsys, ["sweep", "--model", "factorvae", "--gamma", "10", "--out", str(tmp_path / "file")])
    assert "is a file, not a sweep folder" in err
    err = cli_error_line(capsys, ["data", "preview", "dsprites", "--out", str(tmp_path)])
    assert "is a folder; give the name of the file to write" in err
    err = cli_error_line(capsys, ["data", "preview", "dsprites", "--out", str(tmp_path / "no" / "x.png")])
    assert "does not exist" in err
    err = cli_error_line(capsys, ["traverse", str(tmp_path), "--limit", "nan"])
    assert "--limit a finite number > 0" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_corrupt_or_crafted_checkpoints_and_files(tmp_path, small, capsys):
    import torch

    run = train(make_config(steps=2, **small), tmp_path / "r", progress=False)
    torch.save({"step": 2, "config": json.dumps({"steps": 2}), "modules": {"encoder": {"w": torch.zeros(3)}}},
               run / "checkpoint.pt")  # loads with weights_only, but holds the wrong networks
    for argv in (["evaluate", str(run), "--metrics", "mig"], ["traverse", str(run)]):
        assert "cannot load the networks of" in cli_error_line(capsys, argv)
    (run / "checkpoint.pt").write_bytes(b"PK\x03\x04 garbage")
    for argv in (["evaluate", str(run), "--metrics", "mig"], ["traverse", str(run)]):
        assert "cannot read" in cli_error_line(capsys, argv)
    (run / "eval.json").write_bytes(b"\xff not utf-8")
    assert not (run / "figures").exists()


# ---- 9. moved data, caches, non-finite codes -------------------------------------------------------------


def test_a_run_can_be_pointed_at_data_that_moved(tmp_path, capsys):
    data = _npz(tmp_path / "a.npz")
    run = tmp_path / "r"
    assert main(["train", "--data-path", str(data), "--steps", "2", "--out", str(run), *SMALL]) == 0
    moved = tmp_path / "elsewhere.npz"
    shutil.move(data, moved)
    metric = ["--metrics", "mig", "--set", "mig.num_train=200"]
    assert "not found" in cli_error_line(capsys, ["evaluate", str(run), *metric])
    assert main(["evaluate", str(run), *metric, "--data-path", str(moved)]) == 0
    assert json.loads((run / "eval.json").read_text())["mig"]["step"] == 2
    assert main(["traverse", str(run), "--seeds", "1", "--data-path", str(moved)]) == 0
    assert (run / "figures" / "traversal_seed0.png").exists()
    assert main(["report", str(run), "--data-path", str(moved)]) == 0


def test_image_folders_sharing_factorvae_cache_keep_their_own_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("FACTORVAE_CACHE", str(tmp_path / "cache"))
    folders = []
    for k in range(2):
        folder = tmp_path / f"chairs{k}"
        folder.mkdir()
        for i in range(2 + k):
            Image.new("RGB", (64, 64), (50 * i, 100 * k, 30)).save(folder / f"{i}.png")
        folders.append(folder)
    first, second = (load("chairs", f) for f in folders)
    assert first.cache_file.exists() and second.cache_file.exists()  # the second did not evict the first
    assert first.cache_file.parent != second.cache_file.parent
    assert load("chairs", folders[0]).num_examples == 2


def test_nan_codes_are_refused_by_every_metric(tmp_path):
    from factorvae.metrics import METRICS, estimate_total_correlation, total_correlation
    from helpers import FactorGrid

    data = FactorGrid((4, 5))

    def nan(obs):  # a diverged encoder
        return np.full((len(obs), 3), np.nan)

    for metric in METRICS.values():
        with pytest.raises(DataError, match="non-finite codes"):
            metric(data, nan, 0)
    with pytest.raises(DataError, match="non-finite means"):
        estimate_total_correlation(data, lambda obs: (nan(obs), np.zeros((len(obs), 3))), 50, 50)
    one = total_correlation(np.zeros((5, 2)), np.zeros((5, 2)), num_samples=1)
    assert one["stderr"] is None  # was NaN: not valid JSON


# ---- 6. every value from a file is escaped ---------------------------------------------------------------


SCRIPT = "<script>alert(1)</script>"


def _write(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def test_reports_escape_every_value_from_a_file(tmp_path):
    from factorvae.experiments.report import write_sweep_report
    from factorvae.figures.report import write_report

    sweep = tmp_path / "sw"
    name = "factorvae-gamma40-s0"
    _write(sweep / "sweep.json", {"runs": {name: {"model": SCRIPT, "param": SCRIPT, "value": SCRIPT, "seed": SCRIPT,
                                                  "result": {"error": SCRIPT}}},
                                  "grids": [{"model": SCRIPT, "param": SCRIPT, "values": [SCRIPT],
                                             "seeds": [SCRIPT], "steps": [SCRIPT]}],
                                  "eval": {"protocol": SCRIPT, "settings": {SCRIPT: SCRIPT}}})
    run = sweep / name
    _write(run / "status.json", {"step": SCRIPT, "state": SCRIPT, "error": SCRIPT})
    _write(run / "config.json", {SCRIPT: SCRIPT, "model": SCRIPT, "dataset": SCRIPT, "steps": SCRIPT})
    _write(run / "eval.json", {SCRIPT: {"score": SCRIPT, SCRIPT: SCRIPT},
                               "factorvae": {"score": SCRIPT, "vote_matrix": [[SCRIPT]], "factor_names": [SCRIPT]}})
    (run / "log.jsonl").write_text(json.dumps({"step": SCRIPT, "recon": SCRIPT, SCRIPT: 1.0, "time": 1e308}) + "\n")
    _write(run / "figures" / "traversal.json", {"order": [SCRIPT], "kl": SCRIPT, "n_seeds": 10**12, "mode": SCRIPT})
    pages = [write_sweep_report(sweep).read_text(), write_report(run).read_text()]
    for page in pages:
        assert "<script" not in page.lower() and "&lt;script&gt;" in page


# ---- 5. a local Ray instance listens on 127.0.0.1 only ---------------------------------------------------


def _listening() -> set[tuple[str, str]]:
    """(address, port) of every listening TCP socket on this machine (hex, as /proc/net lists them)."""
    out = set()
    for name in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{name}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":  # LISTEN
                out.add(tuple(fields[1].split(":")))
    return out


LOOPBACK = {"0100007F", "00000000000000000000000001000000", "0000000000000000FFFF00000100007F"}


def test_a_local_ray_instance_listens_on_loopback_only():
    ray = pytest.importorskip("ray")
    from factorvae.experiments.backends import init_local_ray

    if not Path("/proc/net/tcp").exists():
        pytest.skip("needs Linux's /proc/net to list sockets")
    before = _listening()
    init_local_ray(ray, 1)
    try:
        opened = _listening() - before
        assert {n["NodeManagerAddress"] for n in ray.nodes()} == {"127.0.0.1"}
    finally:
        ray.shutdown()
    assert opened and {address for address, _ in opened} <= LOOPBACK, opened


def test_config_rejects_bad_values_from_python_too():
    with pytest.raises(ConfigError, match="seed must be an integer >= 0"):
        make_config(seed=2**64)
    with pytest.raises(ConfigError, match="steps must be a positive integer"):
        make_config(steps=[3])
    with pytest.raises(ConfigError, match="device must be a name"):
        make_config(device=3)


# ---- 10. the last tracebacks and wrong inputs accepted ----------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    cfg = make_config(steps=2, batch_size=8, d_hidden=64, log_every=2, checkpoint_every=2)
    return train(cfg, tmp_path_factory.mktemp("trained") / "r", progress=False)


def _strings_npz(path: Path) -> Path:
    np.savez(path, imgs=np.zeros((48, 64, 64), np.uint8), latents_classes=np.full((48, 6), "a"))
    return path


TINY_SWEEP = ["sweep", "--model", "factorvae", "--gamma", "10", "--steps", "2", "--metrics", "none"]  # were it run


@pytest.mark.parametrize("argv, message", [
    (["evaluate", "RUN", "--seed", "-1", "--metrics", "mig"], "seed must be an integer >= 0, got -1"),
    (["evaluate", "RUN", "--device", "foo", "--metrics", "mig"], "unknown device 'foo'; use auto, cpu or cuda"),
    ([*TINY_SWEEP, "--workers", "-1", "--out", "TMP/s"], "--workers must be a positive integer, got -1"),
    ([*TINY_SWEEP, "--workers", "0", "--out", "TMP/s"], "--workers must be a positive integer, got 0"),
    ([*TINY_SWEEP, "--threads", "0", "--out", "TMP/s"], "--threads must be a positive integer, got 0"),
    ([*TINY_SWEEP, "--out", "RUN"], "--out RUN holds a run (config.json), not a sweep"),
    (["data", "preview", "dsprites", "--out", "TMP/x"], "TMP/x: cannot write a picture of type 'none'"),
    (["data", "preview", "dsprites", "--out", "TMP/x.jpgx"], "cannot write a picture of type '.jpgx'"),
    (["data", "preview", "dsprites", "--out", "TMP/x.png", "--seed", "-1"], "seed must be an integer >= 0, got -1"),
    (["data", "preview", "dsprites", "--out", "TMP/x.png", "--zoom", "0"], "zoom must be an integer >= 1, got 0"),
    (["data", "preview", "dsprites", "--out", "TMP/x.png", "--zoom", "-3"], "zoom must be an integer >= 1, got -3"),
    (["data", "info", "dsprites", "--data-path", "TMP/s.npz"], "'latents_classes' must hold integer factor classes"),
    (["train", "--data-path", "TMP/s.npz", "--out", "TMP/t"], "'latents_classes' must hold integer factor classes"),
    (["train", "--set", "latent_dim=100000000", "--out", "TMP/t"],
     "the networks of these settings do not fit in memory (one tensor alone needs 102.4 GB)"),
    (["export", "RUN", "TMP/missing/x.safetensors"], "folder TMP/missing does not exist"),
    (["report", "RUN", "--data-path", "TMP/missing.npz"], "dSprites file not found: TMP/missing.npz"),
])
def test_the_last_bad_inputs_are_one_line_and_change_nothing(tmp_path, capsys, trained, argv, message):
    _strings_npz(tmp_path / "s.npz")
    before = {p: p.read_bytes() for p in trained.rglob("*") if p.is_file()}
    argv = [a.replace("RUN", str(trained)).replace("TMP", str(tmp_path)) for a in argv]
    assert message.replace("TMP", str(tmp_path)).replace("RUN", str(trained)) in cli_error_line(capsys, argv)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.npz"]
    assert {p: p.read_bytes() for p in trained.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize("name", ["log.jsonl", "metrics.jsonl"])
@pytest.mark.parametrize("command", ["traverse", "report"])
def test_a_log_that_is_not_utf8_is_one_line_for_traverse_and_report(tmp_path, capsys, trained, name, command):
    run = tmp_path / "r"
    shutil.copytree(trained, run)
    (run / name).write_bytes(b'{"step": 2, "recon": 1.0}\n\xff\xfe not utf-8\n')
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    err = cli_error_line(capsys, [command, str(run)])
    assert f"{run / name} is not UTF-8 text" in err
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before  # no figure, no page


def test_a_resume_reads_data_that_moved_checked_against_the_run(tmp_path, capsys):
    data, run = _npz(tmp_path / "a.npz"), tmp_path / "r"
    assert main(["train", "--data-path", str(data), "--steps", "2", "--out", str(run), *SMALL]) == 0
    moved = tmp_path / "b.npz"
    shutil.move(data, moved)
    assert "not found" in cli_error_line(capsys, ["train", "--resume", str(run), "--steps", "4", "--quiet"])
    other = _npz(tmp_path / "other.npz", sizes=(3, 2, 2, 2, 4))
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    err = cli_error_line(capsys, ["train", "--resume", str(run), "--data-path", str(other), "--steps", "4", "--quiet"])
    assert (f"--data-path {other} is not the data set {run} was trained on: its factor sizes (3, 2, 2, 2, 4), the "
            "run's (3, 2, 2, 2, 2); give the run's own data set") in err
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    assert main(["train", "--resume", str(run), "--data-path", str(moved), "--steps", "4", "--quiet"]) == 0
    assert json.loads((run / "config.json").read_text())["data_path"] == str(moved)
    assert json.loads((run / "status.json").read_text()) == {"step": 4, "state": "finished", "error": None}
