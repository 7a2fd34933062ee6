"""The wheel installs and runs on its own: a missing package file or an undeclared dependency
fails here, not on a user's machine.

``python -m build`` makes the wheel; a fresh virtual environment installs it with the constraints file (so
torch is the pinned CPU build); from a folder outside the checkout, ``factorvae --help`` and a 5-step
``factorvae train`` must work. About two minutes, most of it installing torch and its neighbours.
"""

import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(args, cwd, timeout=900):
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(map(str, args))} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    return done.stdout


@pytest.mark.slow
def test_wheel_installs_into_a_fresh_venv_and_trains(tmp_path):
    # setuptools stages files in ROOT/build and never prunes it: a module deleted from src/ would still ship
    shutil.rmtree(ROOT / "build", ignore_errors=True)
    _run([sys.executable, "-m", "build", "--wheel", "--outdir", tmp_path / "dist", ROOT], cwd=tmp_path)
    (wheel,) = (tmp_path / "dist").glob("factorvae-*.whl")
    venv.create(tmp_path / "venv", with_pip=True)
    bin_dir = tmp_path / "venv" / "bin"
    _run([bin_dir / "python", "-m", "pip", "install", "-q", "-c", ROOT / "constraints.txt", wheel], cwd=tmp_path)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    assert "train" in _run([bin_dir / "factorvae", "--help"], cwd=outside)
    _run([bin_dir / "factorvae", "train", "--steps", "5", "--batch-size", "8", "--out", "run", "--quiet"],
         cwd=outside)
    assert (outside / "run" / "checkpoint.pt").is_file() and (outside / "run" / "config.json").is_file()
    # the installed package is the wheel's, not the checkout's
    where = _run([bin_dir / "python", "-c", "import factorvae; print(factorvae.__file__)"], cwd=outside)
    assert str(tmp_path / "venv") in where
