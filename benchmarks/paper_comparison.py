"""Does FactorVAE beat β-VAE on dSprites here, as in the paper (§4.1, Fig. 4–6; docs/paper.md §6)?

Reads a sweep folder (``factorvae sweep --model betavae,factorvae ...``) and prints, as markdown:
1. per setting and evaluation step, mean ± sample std over seeds of the paper metric, MIG, the true TC, the
   discriminator's TC estimate and the reconstruction error (the paper's Figure 4 numbers);
2. the comparison at the last step every seed of both settings reached: FactorVAE (γ, default 40) against
   β-VAE (β, default 4) on the paper metric, by Welch's t-test (one-sided: FactorVAE higher) and a bootstrap
   95 % interval of the difference of means, with the reconstruction errors side by side and the paper's
   values beside ours;
3. diagnostics: active dimensions, the discriminator's accuracy, the KL per dimension.

    .venv/bin/python benchmarks/paper_comparison.py SWEEP_DIR [--gamma 40] [--beta 4] [--out FILE.md]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy import stats

from factorvae.figures.plots import read_jsonl  # skips a torn last line of a run still writing

# docs/paper.md §6: 3·10^5 steps, 10 seeds, reconstruction error ≈ 45 nats for both
PAPER = {("factorvae", 40.0): 0.82, ("betavae", 4.0): 0.73}
PAPER_RECON = 45.0


def load_runs(sweep_dir: Path) -> list[dict]:
    """Every run of sweep.json with its evaluations by step and its log lines by step."""
    doc = json.loads((sweep_dir / "sweep.json").read_text())
    runs = []
    for name, r in doc["runs"].items():
        run_dir = sweep_dir / name
        evals = {e["step"]: e for e in read_jsonl(run_dir / "metrics.jsonl")}
        log = {e["step"]: e for e in read_jsonl(run_dir / "log.jsonl") if "recon" in e and not e.get("partial")}
        runs.append({"name": name, "model": r["model"], "value": float(r["value"]), "seed": r["seed"],
                     "evals": evals, "log": log})
    return runs


def score(ev: dict, metric: str) -> float | None:
    if metric == "tc_discriminator":
        return (ev.get("tc") or {}).get("tc_discriminator")
    return (ev.get(metric) or {}).get("score")


def values_at(runs: list[dict], step: int, key: str) -> np.ndarray:
    """One value per run at ``step``: an evaluation metric, or a log quantity (recon, d_acc, ...)."""
    out = []
    for r in runs:
        if key in ("recon", "kl", "d_acc"):  # log.jsonl's "tc" is D's training estimate: not read here
            value = (r["log"].get(step) or {}).get(key)
        else:
            value = score(r["evals"][step], key) if step in r["evals"] else None
        if value is not None:
            out.append(float(value))
    return np.array(out)


def welch_comparison(a: np.ndarray, b: np.ndarray, seed: int = 0) -> dict:
    """Is mean(a) > mean(b)? Welch's t-test (one-sided) and a percentile bootstrap 95 % interval of the
    difference of means (resampling seeds within each group)."""
    t = stats.ttest_ind(a, b, equal_var=False, alternative="greater")
    rng = np.random.default_rng(seed)
    boot = [rng.choice(a, len(a)).mean() - rng.choice(b, len(b)).mean() for _ in range(10_000)]
    low, high = np.percentile(boot, [2.5, 97.5])
    return {"difference": float(a.mean() - b.mean()), "t": float(t.statistic), "p_one_sided": float(t.pvalue),
            "df": float(t.df), "bootstrap_95": (float(low), float(high))}


def pm(values: np.ndarray, digits: int = 3) -> str:
    if len(values) == 0:
        return "–"
    std = f" ± {values.std(ddof=1):.{digits}f}" if len(values) > 1 else ""
    return f"{values.mean():.{digits}f}{std}"


def label(model: str, value: float) -> str:
    return f"FactorVAE γ={value:g}" if model == "factorvae" else ("VAE β=1" if value == 1 else f"β-VAE β={value:g}")


def curves_table(groups: dict[tuple, list[dict]]) -> list[str]:
    lines = ["| setting | step | seeds | paper metric | MIG | true TC (nats) | discriminator TC | recon (nats) |",
             "|---|---|---|---|---|---|---|---|"]
    for (model, value), runs in sorted(groups.items()):
        steps = sorted(set().union(*(r["evals"] for r in runs)))
        for step in steps:
            m = values_at(runs, step, "factorvae")
            lines.append(f"| {label(model, value)} | {step:,} | {len(m)} | {pm(m)} | {pm(values_at(runs, step, 'mig'))}"
                         f" | {pm(values_at(runs, step, 'tc'), 2)} | {pm(values_at(runs, step, 'tc_discriminator'), 2)}"
                         f" | {pm(values_at(runs, step, 'recon'), 1)} |")
    return lines


def comparison(groups: dict[tuple, list[dict]], gamma: float, beta: float) -> list[str]:
    fv, bv = groups.get(("factorvae", gamma), []), groups.get(("betavae", beta), [])
    common = set.intersection(*(set(r["evals"]) for r in fv + bv)) if fv and bv else set()
    if not common:
        return [f"No step scored by every seed of FactorVAE γ={gamma:g} and β-VAE β={beta:g} yet."]
    step = max(common)
    a, b = values_at(fv, step, "factorvae"), values_at(bv, step, "factorvae")
    lines = [f"At step {step:,} (the last scored by all {len(a)} + {len(b)} seeds):", "",
             "| | paper metric | recon (nats) | true TC (nats) | paper (3·10^5 steps, 10 seeds) |",
             "|---|---|---|---|---|"]
    for (model, value), runs in ((("factorvae", gamma), fv), (("betavae", beta), bv)):
        paper = PAPER.get((model, value))
        lines.append(f"| {label(model, value)} | {pm(values_at(runs, step, 'factorvae'))} | "
                     f"{pm(values_at(runs, step, 'recon'), 1)} | {pm(values_at(runs, step, 'tc'), 2)} | "
                     f"{f'≈ {paper:.2f} at ≈ {PAPER_RECON:g} nats' if paper else '–'} |")
    if len(a) > 1 and len(b) > 1:
        w = welch_comparison(a, b)
        lo, hi = w["bootstrap_95"]
        lines += ["", f"FactorVAE − β-VAE on the paper metric: {w['difference']:+.3f}; Welch's t = {w['t']:.2f} "
                  f"(df {w['df']:.1f}), one-sided p = {w['p_one_sided']:.3f}; bootstrap 95 % interval of the "
                  f"difference [{lo:+.3f}, {hi:+.3f}]."]
    return lines


def diagnostics(groups: dict[tuple, list[dict]]) -> list[str]:
    lines = ["| setting | step | active dims | discriminator accuracy | KL per dim (mean over seeds, sorted) |",
             "|---|---|---|---|---|"]
    for (model, value), runs in sorted(groups.items()):
        step = max(set.intersection(*(set(r["evals"]) for r in runs)), default=None)
        if step is None:
            continue
        active = [r["evals"][step]["factorvae"].get("num_active_dims") for r in runs
                  if "factorvae" in r["evals"][step]]
        kl = [sorted(r["log"][step]["kl_per_dim"], reverse=True) for r in runs
              if "kl_per_dim" in r["log"].get(step, {})]
        kl_text = ", ".join(f"{v:.2f}" for v in np.mean(kl, axis=0)) if kl else "–"
        lines.append(f"| {label(model, value)} | {step:,} | {active} | {pm(values_at(runs, step, 'd_acc'))} | "
                     f"{kl_text} |")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("--gamma", type=float, default=40.0)
    parser.add_argument("--beta", type=float, default=4.0)
    parser.add_argument("--out", type=Path, help="also write the markdown here")
    args = parser.parse_args()
    if not (args.sweep_dir / "sweep.json").is_file():
        print(f"error: {args.sweep_dir} has no sweep.json: pass a folder written by factorvae sweep", file=sys.stderr)
        return 2
    groups: dict[tuple, list[dict]] = {}
    for r in load_runs(args.sweep_dir):
        groups.setdefault((r["model"], r["value"]), []).append(r)
    text = "\n".join(["## Over training (mean ± std over seeds)", "", *curves_table(groups), "",
                      "## FactorVAE against β-VAE", "", *comparison(groups, args.gamma, args.beta), "",
                      "## Diagnostics at each setting's last common step", "", *diagnostics(groups)]) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
