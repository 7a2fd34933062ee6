"""The paper's trade-off claim as a test: FactorVAE against β-VAE at matched reconstruction (paper §4.1, Fig. 5).

The paper's claim is that at the *same* reconstruction error FactorVAE reaches a higher disentanglement score
than β-VAE. Two single settings compared side by side rarely sit at the same error, so the test compares a
FactorVAE setting with β-VAE's frontier at that setting's error:

1. x_f, the FactorVAE setting's mean reconstruction error over seeds; (R_b, M_b), each β-VAE setting's mean
   error and mean score.
2. x_f outside [min R_b, max R_b]: *outside*, no difference (no extrapolation).
3. Otherwise the two β-VAE settings that bracket x_f most tightly (largest R_b ≤ x_f, smallest R_b ≥ x_f)
   give the interpolated β-VAE score, linear in the error; the difference is M_f minus it.
4. A percentile bootstrap interval at level 1 − α/k (Bonferroni over the k settings inside the range):
   every setting's seeds are resampled on their own, a seed's error and score kept together, and the
   difference recomputed with the *same* bracketing pair, so that it is a smooth function of the means.
5. The verdict over the tested arm's inside settings: "holds at this budget" if one interval lies above 0,
   "fails" if all lie below 0, "undecided" otherwise (k = 0 included).

Settings of other variants (e.g. ``same_batch``) get rows at the same level but take no part in k or the
verdict. docs/results/README.md states this protocol in words; it was fixed before its runs had numbers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..figures.plots import read_json, read_jsonl

ARM = "paper"  # the variant whose settings decide the verdict: Algorithm 2 as the paper gives it
HOLDS, FAILS, UNDECIDED = "holds at this budget", "fails", "undecided"
COLUMNS = ("model", "variant", "param", "value", "steps", "seeds", "recon_mean", "metric_mean", "betavae_low",
           "betavae_high", "betavae_interpolated", "difference", "level", "ci_low", "ci_high", "inside", "verdict")


@dataclass(frozen=True)
class Setting:
    """One setting's per-seed numbers at one step count: ``recon[i]`` and ``metric[i]`` belong to one seed."""

    model: str
    value: float
    recon: np.ndarray = field(repr=False)
    metric: np.ndarray = field(repr=False)
    param: str = ""
    variant: str = ARM

    def __post_init__(self) -> None:
        if len(self.recon) != len(self.metric) or len(self.recon) == 0:
            raise ValueError(f"{self.model} {self.value:g}: needs one (recon, metric) pair per seed, at least one")


def bracket(errors: np.ndarray, x: float) -> tuple[int, int] | None:
    """Indices (lo, hi) of the β-VAE settings whose mean errors bracket ``x`` most tightly, or None outside."""
    below, above = np.flatnonzero(errors <= x), np.flatnonzero(errors >= x)
    if len(below) == 0 or len(above) == 0:
        return None
    return int(below[np.argmax(errors[below])]), int(above[np.argmin(errors[above])])


def _line(r_lo: np.ndarray, m_lo: np.ndarray, r_hi: np.ndarray, m_hi: np.ndarray, x: np.ndarray) -> np.ndarray:
    """β-VAE's score at error x on the line through (r_lo, m_lo) and (r_hi, m_hi); m_lo where they coincide."""
    span = r_hi - r_lo
    safe = np.where(span == 0, 1.0, span)
    return np.where(span == 0, m_lo, m_lo + (m_hi - m_lo) * (x - r_lo) / safe)


def _resampled_means(s: Setting, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(n,) bootstrap means of recon and metric: seeds drawn with replacement, pairs kept together."""
    idx = rng.integers(0, len(s.recon), size=(n, len(s.recon)))
    return np.asarray(s.recon)[idx].mean(axis=1), np.asarray(s.metric)[idx].mean(axis=1)


def _verdict(rows: Sequence[dict[str, Any]]) -> str:
    tested = [r for r in rows if r["variant"] == ARM and r["inside"]]
    if any(r["ci_low"] > 0 for r in tested):
        return HOLDS
    if tested and all(r["ci_high"] < 0 for r in tested):
        return FAILS
    return UNDECIDED


def matched_test(betavae: Sequence[Setting], factorvae: Sequence[Setting], steps: int | None = None,
                 alpha: float = 0.05, resamples: int = 10_000, seed: int = 0) -> list[dict[str, Any]]:
    """One row per FactorVAE setting (columns :data:`COLUMNS`), every row carrying the verdict at this step."""
    if len(betavae) < 2:
        raise ValueError("the matched test needs at least two β-VAE settings to interpolate between")
    if not 0 < alpha < 1 or resamples < 1:
        raise ValueError(f"alpha must lie in (0, 1) and resamples be positive, got {alpha} and {resamples}")
    rng = np.random.default_rng(seed)
    errors = np.array([b.recon.mean() for b in betavae])
    scores = np.array([b.metric.mean() for b in betavae])
    boot = [_resampled_means(b, rng, resamples) for b in betavae]
    pairs = [bracket(errors, float(np.mean(f.recon))) for f in factorvae]
    k = sum(p is not None for f, p in zip(factorvae, pairs, strict=True) if f.variant == ARM)
    level = 1 - alpha / max(k, 1)
    rows = []
    for f, pair in zip(factorvae, pairs, strict=True):
        x, m = float(np.mean(f.recon)), float(np.mean(f.metric))
        row = dict.fromkeys(COLUMNS, None) | {
            "model": f.model, "variant": f.variant, "param": f.param, "value": f.value, "steps": steps,
            "seeds": len(f.recon), "recon_mean": x, "metric_mean": m, "inside": pair is not None}
        if pair is not None:
            lo, hi = pair
            interpolated = float(_line(errors[lo], scores[lo], errors[hi], scores[hi], np.array(x)))
            fx, fm = _resampled_means(f, rng, resamples)
            diffs = fm - _line(boot[lo][0], boot[lo][1], boot[hi][0], boot[hi][1], fx)
            tail = 100 * (1 - level) / 2
            row |= {"betavae_low": betavae[lo].value, "betavae_high": betavae[hi].value, "level": level,
                    "betavae_interpolated": interpolated, "difference": m - interpolated,
                    "ci_low": float(np.percentile(diffs, tail)), "ci_high": float(np.percentile(diffs, 100 - tail))}
        rows.append(row)
    verdict = _verdict(rows)
    return [r | {"verdict": verdict} for r in rows]


def variant_of(config: dict[str, Any]) -> str:
    """The training variant a run's config.json names: ``paper`` (Algorithm 2 as written) unless it departs."""
    parts = ["same_batch"] if config.get("same_batch") else []
    if config.get("precision", "fp32") != "fp32":
        parts.append(str(config["precision"]))
    return "+".join(parts) or ARM


def _finite(value: Any) -> float | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


def runs_at(sweep_dirs: Sequence[str | Path], metric: str = "factorvae") -> list[dict[str, Any]]:
    """Every run of the sweep folders with its per-step numbers: ``{step: (recon, score)}`` where both exist.

    The score is the metric recorded at that step in ``metrics.jsonl``; the reconstruction error is the
    ``recon`` of the log record at the same step (the mean over that log window's minibatches).
    """
    out = []
    for sweep_dir in map(Path, sweep_dirs):
        doc = read_json(sweep_dir / "sweep.json") or {}
        for name, spec in (doc.get("runs") or {}).items():
            run_dir = sweep_dir / name
            recon = {r["step"]: _finite(r.get("recon")) for r in read_jsonl(run_dir / "log.jsonl")
                     if not r.get("partial") and isinstance(r.get("step"), int)}
            score = {r["step"]: _finite((r.get(metric) or {}).get("score"))
                     for r in read_jsonl(run_dir / "metrics.jsonl")
                     if isinstance(r.get("step"), int) and isinstance(r.get(metric), dict)}
            both = {s: (recon[s], score[s]) for s in score if score[s] is not None and recon.get(s) is not None}
            out.append({"name": name, "model": spec.get("model"), "param": spec.get("param") or "",
                        "value": _finite(spec.get("value")), "seed": spec.get("seed"),
                        "variant": variant_of(read_json(run_dir / "config.json") or {}), "at": both})
    return out


def complete_steps(runs: Sequence[dict[str, Any]]) -> list[int]:
    """The step counts every run has numbers for (the test compares like with like)."""
    steps = [set(r["at"]) for r in runs if r["model"] in ("betavae", "factorvae")]
    return sorted(set.intersection(*steps)) if steps else []


def settings_at(runs: Sequence[dict[str, Any]], step: int) -> tuple[list[Setting], list[Setting]]:
    """(β-VAE settings, FactorVAE settings) from the runs that have numbers at ``step``, sorted by value."""
    groups: dict[tuple, list[tuple[float, float]]] = {}
    for r in runs:
        if step in r["at"] and r["value"] is not None:
            groups.setdefault((r["model"], r["variant"], r["param"], r["value"]), []).append(r["at"][step])
    made = {key: Setting(key[0], key[3], np.array([p[0] for p in pts]), np.array([p[1] for p in pts]),
                         param=key[2], variant=key[1]) for key, pts in sorted(groups.items())}
    betavae = [s for (model, variant, _, _), s in made.items() if model == "betavae" and variant == ARM]
    factorvae = [s for (model, *_), s in made.items() if model == "factorvae"]
    return betavae, sorted(factorvae, key=lambda s: (s.variant != ARM, s.variant, s.value))


def matched_table(sweep_dirs: Sequence[str | Path], steps: Sequence[int] | None = None,
               metric: str = "factorvae", resamples: int = 10_000, seed: int = 0) -> list[dict[str, Any]]:
    """The matched test at each of ``steps`` that all runs reached (default: every such step), rows concatenated.

    A step count with fewer than two β-VAE settings or no FactorVAE setting is skipped.
    """
    runs = runs_at(sweep_dirs, metric)
    rows = []
    complete = complete_steps(runs)
    for step in complete if steps is None else [s for s in steps if s in complete]:
        betavae, factorvae = settings_at(runs, step)
        if len(betavae) >= 2 and factorvae:
            rows += matched_test(betavae, factorvae, steps=step, resamples=resamples, seed=seed)
    return rows
