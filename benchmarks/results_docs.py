"""Refresh docs/results/ from sweep folders: the sweep report's tables and figures, the matched-reconstruction
test, the FactorVAE vs β-VAE comparison, and the latent traversals of each setting's best seed.

    .venv/bin/python benchmarks/results_docs.py SWEEP_DIR [MORE_SWEEP_DIRS ...] [--out docs/results]

The first folder is the main grid; more folders (the same_batch arm) join its tables and figures. Writes into
OUT: summary.csv and summary.md (a ``variant`` column tells the arms apart), tradeoff_test.csv (the test of
docs/results/README.md at 5,000, 15,000 and 30,000 steps, where every run has reached them), tradeoff.png,
curves.png (the paper's Figure 4 analogue), tc.png (true and discriminator TC against β and γ),
comparison.md (benchmarks/paper_comparison.py, main grid) and traversal-<setting>.png (seed image 0 of the
finished run with the highest final paper metric).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

from factorvae.experiments.report import collect, write_sweep_report
from factorvae.figures.traverse import write_visuals

HERE = Path(__file__).resolve().parent
TEST_STEPS = (5000, 15000, 30000)  # fixed with the test in docs/results/README.md


def best_runs(sweep_dirs: list[Path]) -> dict[str, Path]:
    """Setting label -> its finished run with the highest final paper metric."""
    best: dict[str, tuple[float, Path]] = {}
    for r in (r for d in sweep_dirs for r in collect(d)):
        if r["state"] != "finished" or r["metric"] is None:
            continue
        label = f"{r['model']}-{r['param']}{r['value']:g}" + ("" if r["variant"] == "paper" else f"-{r['variant']}")
        if label not in best or r["metric"] > best[label][0]:
            best[label] = (r["metric"], Path(r["path"]))
    return {label: path for label, (_, path) in sorted(best.items())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dirs", type=Path, nargs="+")
    parser.add_argument("--out", type=Path, default=HERE.parent / "docs" / "results")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    first, *more = args.sweep_dirs
    write_sweep_report(first, also=more, test_steps=TEST_STEPS)
    for name in ("summary.csv", "summary.md", "tradeoff_test.csv", "tradeoff.png", "curves.png", "tc.png"):
        if (first / name).is_file():
            shutil.copyfile(first / name, args.out / name)
    subprocess.run([sys.executable, str(HERE / "paper_comparison.py"), str(first),
                    "--out", str(args.out / "comparison.md")], check=True, stdout=subprocess.DEVNULL)
    chosen = best_runs(args.sweep_dirs)
    for label, path in chosen.items():
        write_visuals(path, seed=0, n_seeds=1)
        shutil.copyfile(path / "figures" / "traversal_seed0.png", args.out / f"traversal-{label}.png")
    (args.out / "best_runs.json").write_text(json.dumps({k: p.name for k, p in chosen.items()}, indent=2) + "\n")
    print(f"wrote {args.out}: " + ", ".join(sorted(p.name for p in args.out.iterdir())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
