"""Refresh docs/results/ from a sweep folder (issue 13): the sweep report's table and figures, the FactorVAE
vs β-VAE comparison, and the latent traversals of each setting's best seed.

    .venv/bin/python benchmarks/results_docs.py SWEEP_DIR [--out docs/results]

Writes into OUT: summary.csv, summary.md, tradeoff.png, curves.png (the paper's Figure 4 analogue: metric
and reconstruction error against steps, mean ± std bands), comparison.md (benchmarks/paper_comparison.py)
and traversal-<setting>.png (seed image 0 of the finished run with the highest final paper metric).
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


def best_runs(sweep_dir: Path) -> dict[str, str]:
    """Setting label -> name of its finished run with the highest final paper metric."""
    best: dict[str, tuple[float, str]] = {}
    for r in collect(sweep_dir):
        if r["state"] != "finished" or r["metric"] is None:
            continue
        label = f"{r['model']}-{r['param']}{r['value']:g}"
        if label not in best or r["metric"] > best[label][0]:
            best[label] = (r["metric"], r["name"])
    return {label: name for label, (_, name) in sorted(best.items())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("--out", type=Path, default=HERE.parent / "docs" / "results")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    write_sweep_report(args.sweep_dir)
    for name in ("summary.csv", "summary.md", "tradeoff.png", "curves.png"):
        if (args.sweep_dir / name).is_file():
            shutil.copyfile(args.sweep_dir / name, args.out / name)
    subprocess.run([sys.executable, str(HERE / "paper_comparison.py"), str(args.sweep_dir),
                    "--out", str(args.out / "comparison.md")], check=True, stdout=subprocess.DEVNULL)
    chosen = best_runs(args.sweep_dir)
    for label, name in chosen.items():
        write_visuals(args.sweep_dir / name, seed=0, n_seeds=1)
        shutil.copyfile(args.sweep_dir / name / "figures" / "traversal_seed0.png", args.out / f"traversal-{label}.png")
    (args.out / "best_runs.json").write_text(json.dumps(chosen, indent=2) + "\n")
    print(f"wrote {args.out}: " + ", ".join(sorted(p.name for p in args.out.iterdir())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
