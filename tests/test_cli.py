"""The command line: one-line errors with exit status 2 and nothing overwritten."""

import json
import subprocess
import sys

import numpy as np
import pytest

from factorvae.cli import main

SMALL = ["--batch-size", "8", "--set", "d_hidden=64", "--set", "log_every=2", "--quiet"]


def _err(capsys, argv):
    with pytest.raises(SystemExit) as exit_info:
        code = main(argv)
        raise SystemExit(code)
    err = capsys.readouterr().err.strip()
    return exit_info.value.code, err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--model", "foo"], "unknown model 'foo'; choose one of: vae, betavae, factorvae, infowgan-gp"),
        (["train", "--dataset", "mnist"], "unknown data set 'mnist'; choose one of:"),
        (["train", "--steps", "0"], "steps must be a positive integer, got 0"),
        (["train", "--steps", "-5"], "steps must be a positive integer, got -5"),
        (["train", "--batch-size", "0"], "batch_size must be a positive integer, got 0"),
        (["train", "--batch-size", "1"], "FactorVAE needs batch_size >= 2"),
        (["train", "--set", "gamma"], "--set expects key=value, got 'gamma'"),
        (["train", "--set", "colour=red"], "unknown setting(s) colour"),
        (["train", "--steps", "ten"], "argument --steps: invalid int value: 'ten'"),
        (["train", "--gamma", "-1"], "gamma must be a finite number >= 0"),
        (["evaluate", "/nonexistent/run"], "is not a run directory"),
        (["evaluate", "/nonexistent/run", "--set", "dcii.forest_trees=3"], "unknown metric 'dcii'; choose from:"),
        (["evaluate", "/nonexistent/run", "--set", "forest_trees=3"], "--set expects METRIC.KEY=VALUE"),
        (["evaluate", "/nonexistent/run", "--set", "mig.num_bin=3"], "mig: unknown setting(s) ['num_bin']"),
        (["evaluate", "/nonexistent/run", "--set", "mig.num_bins=abc"],
         "mig: setting num_bins must be an integer >= 1 (default 20), got 'abc'"),
        (["evaluate", "/nonexistent/run", "--set", "tc.num_data=0"], "tc: setting num_data must be an integer >= 1"),
        (["evaluate", "/nonexistent/run", "--set", "tc.all_data=3"], "tc: setting all_data must be true or false"),
        (["evaluate", "/nonexistent/run", "--protocol", "dlib", "--set", "sap.svm_c=inf"],
         "sap: setting svm_c must be a finite number"),
        (["sweep", "--model", "factorvae", "--gamma", "10", "--out", "/nonexistent/sweep",
          "--eval-set", "dci.predictor=5"], "dci: setting predictor must be a string"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, argv, message):
    code, err = _err(capsys, argv)
    assert code == 2
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_bad_data_path_variants(capsys, tmp_path):
    (tmp_path / "text.npz").write_text("hello")
    np.savez(tmp_path / "wrong.npz", pictures=np.zeros((2, 64, 64), np.uint8))
    np.savez(tmp_path / "shape.npz", imgs=np.zeros((2, 32, 32), np.uint8), latents_classes=np.zeros((2, 6)))
    cases = {"missing.npz": "not found", "text.npz": "not a readable .npz", "wrong.npz": "missing array(s)",
             "shape.npz": "expected (N, 64, 64)"}
    for name, message in cases.items():
        code, err = _err(capsys, ["train", "--data-path", str(tmp_path / name), "--out", str(tmp_path / "r")])
        assert code == 2 and message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_out_on_existing_run_and_resume_rules(capsys, tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--steps", "2", "--out", str(run), *SMALL]) == 0
    capsys.readouterr()
    before = (run / "checkpoint.pt").read_bytes()
    code, err = _err(capsys, ["train", "--steps", "4", "--out", str(run), *SMALL])
    assert code == 2 and f"{run} already holds a run; continue it with --resume {run}" in err
    assert (run / "checkpoint.pt").read_bytes() == before
    code, err = _err(capsys, ["train", "--resume", str(run), "--gamma", "10"])
    assert code == 2 and "only --steps may change" in err
    code, err = _err(capsys, ["train", "--resume", str(tmp_path)])
    assert code == 2 and "no run there" in err
    assert main(["train", "--resume", str(run), "--steps", "4", "--quiet"]) == 0
    assert json.loads((run / "status.json").read_text())["step"] == 4


def test_python_dash_m_entry_point():
    out = subprocess.run([sys.executable, "-m", "factorvae", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "train" in out.stdout
