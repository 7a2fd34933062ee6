"""Two sweep folders of the same grid and seeds, compared step by step (paper §4.1's scores; docs/performance.md).

Made to ask whether ``precision=bf16`` changes what training reaches: sweep A (e.g. fp32) and sweep B
(e.g. bf16), same settings and seeds; A may hold more grid cells than B, and B's are compared. For each
grid cell (model, β or γ), each chosen step and each quantity (the disentanglement metric and the true
TC from ``metrics.jsonl``; the reconstruction error and the KL of the log window ending at that step,
from ``log.jsonl``) it gives the mean over seeds in A and in B, the difference B − A, and beside it the
seed-to-seed spread (the sample std over seeds in A and in B). A difference larger than the larger of
the two spreads is flagged: the change is then beyond what another seed gives. One figure shows the
curves of both sweeps (mean over seeds, band ± std).

    python -m factorvae.experiments.compare FP32_SWEEP BF16_SWEEP --steps 2500,5000 --out DIR
writes DIR/compare.md, DIR/compare.json and DIR/compare.png, and prints the table.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from ..figures.plots import figure_to_png, read_json, read_jsonl
from ..files import atomic_write_bytes, atomic_write_text
from .sweep import SWEEP_FILE

QUANTITIES = ("metric", "recon", "kl", "tc")  # the metric named by --metric; recon and KL in nats; true TC
Cell = tuple[str, str, float]  # (model, param, value)


class CompareError(ValueError):
    """The two folders cannot be compared (not sweeps, other grids or seeds, steps never reached)."""


def _number(value: Any) -> float | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


def run_curves(run_dir: Path, metric: str) -> dict[str, dict[int, float]]:
    """{quantity: {step: value}} of one run directory (missing files give empty curves)."""
    curves: dict[str, dict[int, float]] = {q: {} for q in QUANTITIES}
    for record in read_jsonl(run_dir / "log.jsonl"):
        step = record.get("step")
        if isinstance(step, int) and not record.get("partial"):
            for q in ("recon", "kl"):
                if _number(record.get(q)) is not None:
                    curves[q][step] = float(record[q])
    for record in read_jsonl(run_dir / "metrics.jsonl"):
        step = record.get("step")
        if not isinstance(step, int):
            continue
        score = record.get(metric)
        if isinstance(score, dict) and _number(score.get("score")) is not None:
            curves["metric"][step] = float(score["score"])
        if _number(record.get("tc_true")) is not None:
            curves["tc"][step] = float(record["tc_true"])
    return curves


def sweep_curves(sweep_dir: str | Path, metric: str) -> dict[Cell, dict[int, dict[str, dict[int, float]]]]:
    """{(model, param, value): {seed: run_curves}} of every run listed in a sweep folder's sweep.json."""
    sweep_dir = Path(sweep_dir)
    doc = read_json(sweep_dir / SWEEP_FILE)
    if not isinstance(doc, dict) or not isinstance(doc.get("runs"), dict):
        raise CompareError(f"{sweep_dir} is not a sweep folder ({SWEEP_FILE} missing or unreadable)")
    cells: dict[Cell, dict[int, dict]] = {}
    for name, run in doc["runs"].items():
        if isinstance(run, dict) and isinstance(run.get("seed"), int):
            cell = (str(run.get("model")), str(run.get("param")), _number(run.get("value")) or 0.0)
            cells.setdefault(cell, {})[run["seed"]] = run_curves(sweep_dir / name, metric)
    return cells


def _stats(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and sample std (None for fewer than 2 values)."""
    if not values:
        return None, None
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else None


def compare(a_dir: str | Path, b_dir: str | Path, steps: Sequence[int], metric: str = "factorvae") -> list[dict]:
    """One row per (cell, step, quantity) with both means, B − A, both seed stds and whether the
    difference is beyond the spread. Every cell of B must be in A, with the same seeds."""
    a, b = sweep_curves(a_dir, metric), sweep_curves(b_dir, metric)
    missing = [f"{m} {p}={v:g}" for m, p, v in sorted(b) if (m, p, v) not in a]
    if missing:
        raise CompareError(f"{a_dir} has no runs of {', '.join(missing)}, which {b_dir} holds")
    rows = []
    for cell in sorted(b):  # A may hold a larger grid (e.g. the full fp32 sweep): B's cells are compared
        if sorted(a[cell]) != sorted(b[cell]):
            raise CompareError(f"{cell[0]} {cell[1]}={cell[2]:g}: seeds {sorted(a[cell])} vs {sorted(b[cell])}")
        for step in steps:
            for q in QUANTITIES:
                va = [c[q][step] for c in a[cell].values() if step in c[q]]
                vb = [c[q][step] for c in b[cell].values() if step in c[q]]
                if not va and not vb:
                    continue
                (mean_a, std_a), (mean_b, std_b) = _stats(va), _stats(vb)
                diff = None if mean_a is None or mean_b is None else mean_b - mean_a
                spread = max((s for s in (std_a, std_b) if s is not None), default=None)
                rows.append({"model": cell[0], "param": cell[1], "value": cell[2], "step": step, "quantity": q,
                             "seeds_a": len(va), "seeds_b": len(vb), "mean_a": mean_a, "mean_b": mean_b,
                             "std_a": std_a, "std_b": std_b, "diff": diff,
                             "beyond_spread": None if diff is None or spread is None else abs(diff) > spread})
    if not rows:
        raise CompareError(f"no run of either sweep logged any of the steps {', '.join(map(str, steps))}")
    return rows


def _fmt(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def markdown(rows: Sequence[dict], labels: tuple[str, str], metric: str) -> str:
    a, b = labels
    lines = [f"| setting | step | quantity | {a} mean ± std | {b} mean ± std | {b} − {a} | beyond spread |",
             "|---|---:|---|---:|---:|---:|---|"]
    for r in rows:
        name = metric if r["quantity"] == "metric" else r["quantity"]
        flag = {None: "–", True: "**yes**", False: "no"}[r["beyond_spread"]]
        lines.append(f"| {r['model']} {r['param']}={r['value']:g} | {r['step']} | {name} | "
                     f"{_fmt(r['mean_a'])} ± {_fmt(r['std_a'])} (n={r['seeds_a']}) | "
                     f"{_fmt(r['mean_b'])} ± {_fmt(r['std_b'])} (n={r['seeds_b']}) | {_fmt(r['diff'])} | {flag} |")
    return "\n".join(lines) + "\n"


def curves_figure(a_dir: str | Path, b_dir: str | Path, labels: tuple[str, str], metric: str) -> Figure:
    """Rows: grid cells; columns: the four quantities; both sweeps' curves, mean over seeds ± std."""
    sweeps = [sweep_curves(a_dir, metric), sweep_curves(b_dir, metric)]
    cells = sorted(sweeps[1])
    fig = Figure(figsize=(14, 2.8 * max(1, len(cells))), dpi=100, layout="constrained")
    axes = fig.subplots(max(1, len(cells)), len(QUANTITIES), squeeze=False)
    for i, cell in enumerate(cells):
        for j, q in enumerate(QUANTITIES):
            ax = axes[i, j]
            for sweep, label, color in zip(sweeps, labels, ("tab:blue", "tab:red"), strict=True):
                by_step: dict[int, list[float]] = {}
                for curves in sweep.get(cell, {}).values():
                    for step, v in curves[q].items():
                        by_step.setdefault(step, []).append(v)
                if by_step:
                    x = np.array(sorted(by_step))
                    m = np.array([np.mean(by_step[s]) for s in x])
                    sd = np.array([np.std(by_step[s], ddof=1) if len(by_step[s]) > 1 else 0.0 for s in x])
                    ax.plot(x, m, color=color, label=label, marker="o" if q in ("metric", "tc") else None, ms=3)
                    ax.fill_between(x, m - sd, m + sd, color=color, alpha=0.15, linewidth=0)
            name = {"metric": f"{metric} metric", "recon": "recon (nats)", "kl": "KL (nats)", "tc": "true TC"}[q]
            ax.set(title=f"{cell[0]} {cell[1]}={cell[2]:g}: {name}", xlabel="step")
            if q == "recon":
                ax.set_yscale("log")  # it falls from ~2,800 to ~40 nats
            ax.grid(alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7)
    return fig


def write_comparison(a_dir: str | Path, b_dir: str | Path, out: str | Path, steps: Sequence[int],
                     metric: str = "factorvae", labels: tuple[str, str] = ("fp32", "bf16")) -> str:
    """compare.md, compare.json and compare.png in ``out``; returns the markdown table."""
    rows = compare(a_dir, b_dir, steps, metric)  # raises before anything is written
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table = markdown(rows, labels, metric)
    atomic_write_text(out / "compare.md", f"{labels[0]}: {a_dir}\n\n{labels[1]}: {b_dir}\n\n" + table)
    atomic_write_text(out / "compare.json", json.dumps({"a": str(a_dir), "b": str(b_dir), "labels": list(labels),
                                                        "metric": metric, "rows": rows}, indent=1) + "\n")
    atomic_write_bytes(out / "compare.png", figure_to_png(curves_figure(a_dir, b_dir, labels, metric)))
    return table


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", help="the reference sweep folder (e.g. fp32)")
    parser.add_argument("b", help="the sweep folder compared with it (e.g. bf16), same grid and seeds")
    parser.add_argument("--steps", default="2500,5000", help="comma-separated steps (default 2500,5000)")
    parser.add_argument("--metric", default="factorvae", help="the metric of metrics.jsonl (default factorvae)")
    parser.add_argument("--labels", default="fp32,bf16", help="names of A and B (default fp32,bf16)")
    parser.add_argument("--out", required=True, help="folder for compare.md, compare.json, compare.png")
    args = parser.parse_args(argv)
    try:
        steps = [int(s) for s in args.steps.split(",") if s.strip()]
        labels = tuple(s.strip() for s in args.labels.split(","))
        if len(labels) != 2:
            raise CompareError(f"--labels needs two names, got '{args.labels}'")
        print(write_comparison(args.a, args.b, args.out, steps, args.metric, labels), end="")  # type: ignore[arg-type]
    except (CompareError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
