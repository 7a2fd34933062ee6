"""The report of a sweep folder: the paper's trade-off study (paper §4.1, Figures 4, 5 and 7).

From the run directories listed in ``sweep.json`` it writes, next to it:
- ``summary.csv`` and ``summary.md``: per setting (model, β or γ), mean ± std over seeds of the
  disentanglement metric (``eval.json``), the reconstruction error (``recon`` of the last log window:
  Bernoulli NLL summed over pixels, nats per image) and the true total correlation (``eval.json`` "tc");
- ``tradeoff_test.csv``: the matched-reconstruction test of :mod:`.tradeoff` at every step count all runs
  reached;
- ``tradeoff.png``, ``curves.png`` and ``tc.png``: the figures below, as files;
- ``report.html``: one self-contained page (figures embedded as base64 PNG, no network) with that table,
  the trade-off figure in the paper's style (reconstruction error on x, the metric on y: one dot per run, a
  mean ± std cross per setting labelled with its β or γ, a line per model through its settings' means), the
  test's table and verdict, the metric and the reconstruction error against training steps for each setting
  (the paper's Figure 4), the true TC and the discriminator's estimate against β and γ (Figure 7), and
  every run's state.

Runs that depart from Algorithm 2 as written (``same_batch``, a precision other than fp32) form settings of
their own, told apart by the ``variant`` column.
Figures are built on :class:`matplotlib.figure.Figure` directly (no pyplot global state).
"""

from __future__ import annotations

import base64
import csv
import html
import io
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from ..figures.plots import figure_to_png, read_json, read_jsonl
from ..files import atomic_write_bytes, atomic_write_text
from .sweep import SWEEP_FILE
from .tradeoff import ARM, COLUMNS, matched_table, variant_of

COLORS = {"betavae": "tab:blue", "factorvae": "tab:red", "vae": "tab:gray", "infowgan-gp": "tab:green"}
LABELS = {"betavae": "β-VAE", "factorvae": "FactorVAE", "vae": "VAE", "infowgan-gp": "InfoWGAN-GP"}
SYMBOL = {"beta": "β", "gamma": "γ"}
# paper §4.1 and Figure 5: the paper's best mean scores on dSprites at full scale (3·10^5 steps, 10 seeds)
PAPER_DSPRITES = "FactorVAE γ=40 ≈ 0.82 and β-VAE β=4 ≈ 0.73, both at reconstruction error ≈ 45"


def _num(value: Any) -> float | None:
    """A finite number read from a file, else None: a damaged or crafted file must neither break the report
    nor put its text where a number goes (every text from a file is escaped in the HTML)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _last_recon(run_dir: Path) -> float | None:
    log = [r for r in read_jsonl(run_dir / "log.jsonl") if _num(r.get("recon")) is not None]
    return float(log[-1]["recon"]) if log else None


def collect(sweep_dir: str | Path, metric: str = "factorvae") -> list[dict[str, Any]]:
    """One row per run of sweep.json: its grid cell, state and final numbers (None where missing)."""
    sweep_dir = Path(sweep_dir)
    doc = read_json(sweep_dir / SWEEP_FILE)
    if doc is None:
        raise FileNotFoundError(f"{sweep_dir / SWEEP_FILE} not found: not a sweep folder")
    rows = []
    runs = doc.get("runs") if isinstance(doc.get("runs"), dict) else {}
    for name, r in runs.items():
        if not isinstance(r, dict):
            continue
        run_dir = sweep_dir / name
        status = read_json(run_dir / "status.json") or {}
        scores = read_json(run_dir / "eval.json") or {}
        config = read_json(run_dir / "config.json") or {}
        steps = config.get("steps")
        if status.get("state") == "finished" and status.get("step") != steps:
            status["state"] = "running"  # between two evaluation segments (older sweeps wrote "finished")
        score = {k: v if isinstance(v, dict) else {} for k, v in scores.items()}
        result = r.get("result") if isinstance(r.get("result"), dict) else {}
        rows.append({
            "name": name, "model": str(r.get("model")), "param": _text(r.get("param")), "value": _num(r.get("value")),
            "seed": _int(r.get("seed")), "state": str(status.get("state", "not started")),
            "step": _int(status.get("step")), "error": _text(status.get("error") or result.get("error")),
            "metric": _num(score.get(metric, {}).get("score")), "tc": _num(score.get("tc", {}).get("score")),
            "recon": _last_recon(run_dir), "mig": _num(score.get("mig", {}).get("score")),
            "tc_discriminator": _num(score.get("tc", {}).get("tc_discriminator")),
            "variant": variant_of(config), "path": str(run_dir),
        })
    return rows


def _stats(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    vals = np.array([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if len(vals) == 0:
        return None, None
    return float(vals.mean()), float(vals.std(ddof=1)) if len(vals) > 1 else None  # sample std over seeds


def summarize(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (model, value): number of scored seeds and mean ± std of the metric, recon, true TC, MIG and the
    discriminator's TC estimate, with the training steps of those runs and their number of seeds.

    Only finished runs count: a run still training has a reconstruction error but not yet its final one.
    ``steps`` is the smallest step among the finished runs (they agree unless a sweep was extended part-way).
    """
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["model"], r["param"], r["value"], r.get("variant", ARM)), []).append(r)
    out = []
    order = sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][3] != ARM, kv[0][3], kv[0][2] or 0))
    for (model, param, value, variant), members in order:
        done = [m for m in members if m["state"] == "finished"]
        row = {"model": model, "param": param or "", "value": value, "runs": len(members),
               "scored": sum(m["metric"] is not None for m in done)}
        for key in ("metric", "recon", "tc", "mig", "tc_discriminator"):
            row[f"{key}_mean"], row[f"{key}_std"] = _stats([m.get(key) for m in done])
        row["steps"] = min((m["step"] for m in done if m.get("step") is not None), default=None)
        row["seeds"] = len({m["seed"] for m in done})
        row["variant"] = variant
        out.append(row)
    return out


def _pm(mean: float | None, std: float | None, digits: int) -> str:
    if mean is None:
        return "–"
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None else "")


def _setting(row: dict[str, Any]) -> str:
    """β=4, γ=40, or γ=40 same_batch for a run of another variant."""
    if row["value"] is None:
        return "–"
    variant = row.get("variant", ARM)
    return f"{SYMBOL.get(row['param'], row['param'])}={row['value']:g}" + (f" {variant}" if variant != ARM else "")


def markdown_table(summary: Sequence[dict[str, Any]], metric: str) -> str:
    head = (f"| model | setting | steps | seeds scored | {metric} metric | reconstruction error (nats) | "
            "true TC (nats) | MIG | discriminator TC (nats) |")
    lines = [head, "|---|---|---|---|---|---|---|---|---|"]
    for s in summary:
        steps = f"{s['steps']:,}" if s.get("steps") is not None else "–"
        lines.append(f"| {LABELS.get(s['model'], s['model'])} | {_setting(s)} | {steps} | {s['scored']}/{s['runs']} | "
                     f"{_pm(s['metric_mean'], s['metric_std'], 3)} | {_pm(s['recon_mean'], s['recon_std'], 1)} | "
                     f"{_pm(s['tc_mean'], s['tc_std'], 3)} | {_pm(s.get('mig_mean'), s.get('mig_std'), 3)} | "
                     f"{_pm(s.get('tc_discriminator_mean'), s.get('tc_discriminator_std'), 3)} |")
    return "\n".join(lines) + "\n"


def _csv(summary: Sequence[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(summary[0]) if summary else ["model"], lineterminator="\n")
    writer.writeheader()
    writer.writerows([{k: "" if v is None else v for k, v in s.items()} for s in summary])
    return buf.getvalue()


def _groups(items: Sequence[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Items by (model, variant), in order of appearance."""
    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for s in items:
        out.setdefault((s["model"], s.get("variant", ARM)), []).append(s)
    return out


def tradeoff_figure(summary: Sequence[dict[str, Any]], metric: str = "factorvae",
                    rows: Sequence[dict[str, Any]] = ()) -> Figure:
    """Reconstruction error (x) against the metric (y): a dot per finished run (``rows``), a mean ± std cross
    per setting labelled with β or γ, and a line per model through its settings' means in order of error."""
    fig = Figure(figsize=(7.2, 5.2), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    dots = _groups([r for r in rows if r["state"] == "finished" and r["metric"] is not None
                    and r["recon"] is not None])
    for (model, variant), pts in _groups(summary).items():
        pts = sorted((p for p in pts if p["metric_mean"] is not None and p["recon_mean"] is not None),
                     key=lambda p: p["recon_mean"])
        if not pts:
            continue
        color = COLORS.get(model, "black")
        style = "-" if variant == ARM else "--"  # another variant of a model: same colour, dashed
        label = LABELS.get(model, model) + ("" if variant == ARM else f" ({variant})")
        x = np.array([p["recon_mean"] for p in pts])
        y = np.array([p["metric_mean"] for p in pts])
        ax.errorbar(x, y, xerr=[p["recon_std"] or 0.0 for p in pts], yerr=[p["metric_std"] or 0.0 for p in pts],
                    fmt="s" + style, color=color, ecolor=color, elinewidth=0.9, capsize=3, ms=5, label=label,
                    markerfacecolor="white" if variant != ARM else color)
        runs = dots.get((model, variant), [])
        ax.scatter([r["recon"] for r in runs], [r["metric"] for r in runs], s=12, color=color, alpha=0.45,
                   linewidths=0)
        for p in pts:  # the paper writes the weight next to each point
            ax.annotate(f"{p['value']:g}" if p["value"] is not None else "", (p["recon_mean"], p["metric_mean"]),
                        textcoords="offset points", xytext=(5, 4), fontsize=8, color=color)
    ax.set_xlabel("reconstruction error (nats per image)")
    ax.set_ylabel(f"disentanglement metric ({metric})")
    ax.set_title("Disentanglement vs reconstruction (dots: runs; crosses: mean ± std over seeds)")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    return fig


def tc_figure(summary: Sequence[dict[str, Any]]) -> Figure | None:
    """The true TC and the discriminator's estimate against β (β-VAE) and γ (FactorVAE): paper Figure 7."""
    panels = [(m, v) for (m, v) in _groups(summary) if m in ("betavae", "factorvae")]
    models = list(dict.fromkeys(m for m, _ in panels))
    if not models:
        return None
    fig = Figure(figsize=(5.2 * len(models), 3.8), dpi=100, layout="constrained")
    axes = fig.subplots(1, len(models), squeeze=False)[0]
    for ax, model in zip(axes, models, strict=True):
        for (m, variant), pts in _groups(summary).items():
            if m != model:
                continue
            pts = sorted((p for p in pts if p["value"] is not None), key=lambda p: p["value"])
            suffix = "" if variant == ARM else f" ({variant})"
            style = "-" if variant == ARM else "--"
            for key, name, marker in (("tc", "true TC", "o"), ("tc_discriminator", "discriminator's TC", "^")):
                got = [p for p in pts if p.get(f"{key}_mean") is not None]
                if got:
                    ax.errorbar([p["value"] for p in got], [p[f"{key}_mean"] for p in got],
                                yerr=[p[f"{key}_std"] or 0.0 for p in got], fmt=marker + style, capsize=3,
                                color=COLORS[model] if key == "tc" else "black", label=name + suffix)
        symbol = SYMBOL["beta" if model == "betavae" else "gamma"]
        ax.set(xscale="log", xlabel=symbol, ylabel="nats", title=f"{LABELS[model]}: total correlation against {symbol}")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    return fig


def _mean_curve(series: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and sample std over the seeds that logged each step (a seed still training has fewer steps)."""
    by_step: dict[int, list[float]] = {}
    for steps, values in series:
        for t, v in zip(steps.tolist(), values.tolist(), strict=True):
            by_step.setdefault(t, []).append(v)
    steps = np.array(sorted(by_step))
    mean = np.array([np.mean(by_step[t]) for t in steps])
    std = np.array([np.std(by_step[t], ddof=1) if len(by_step[t]) > 1 else 0.0 for t in steps])
    return steps, mean, std


def _run_series(run_dir: Path, metric: str) -> tuple[tuple | None, tuple | None]:
    log = [r for r in read_jsonl(run_dir / "log.jsonl") if _num(r.get("recon")) is not None
           and _num(r.get("step")) is not None and not r.get("partial")]
    scored = [r for r in read_jsonl(run_dir / "metrics.jsonl") if isinstance(r.get(metric), dict)
              and _num(r[metric].get("score")) is not None and _num(r.get("step")) is not None]
    recon = (np.array([r["step"] for r in log]), np.array([r["recon"] for r in log])) if log else None
    score = (np.array([r["step"] for r in scored]), np.array([r[metric]["score"] for r in scored])) if scored else None
    return score, recon


def settings_curves_figure(rows: Sequence[dict[str, Any]], metric: str = "factorvae") -> Figure | None:
    """Per model and variant, the metric and the reconstruction error against training steps (the paper's
    Figure 4): one line per setting (mean over seeds, band ± std)."""
    panels = list(_groups(rows))
    if not panels:
        return None
    fig = Figure(figsize=(10, 3.2 * len(panels)), dpi=100, layout="constrained")
    axes = fig.subplots(len(panels), 2, squeeze=False)
    for i, (model, variant) in enumerate(panels):
        mine = [r for r in rows if r["model"] == model and r.get("variant", ARM) == variant]
        values = sorted({r["value"] for r in mine}, key=lambda v: (v is None, v or 0))
        for j, value in enumerate(values):
            color = colormaps["viridis"](0.85 * j / max(1, len(values) - 1))  # light end kept readable on white
            runs = [r for r in mine if r["value"] == value]
            series = [_run_series(Path(r["path"]), metric) for r in runs]
            label = f"{SYMBOL.get(runs[0]['param'], '')}={value:g}" if value is not None else model
            for col, idx in ((0, 0), (1, 1)):
                got = [s[idx] for s in series if s[idx] is not None]
                if got:
                    x, m, sd = _mean_curve(got)
                    axes[i, col].plot(x, m, color=color, label=label, marker="o" if col == 0 else None, ms=3)
                    axes[i, col].fill_between(x, m - sd, m + sd, color=color, alpha=0.15, linewidth=0)
        name = LABELS.get(model, model) + ("" if variant == ARM else f" ({variant})")
        axes[i, 0].set(title=f"{name}: {metric} metric over training", xlabel="step", ylabel="score")
        axes[i, 1].set(title=f"{name}: reconstruction error over training", xlabel="step", ylabel="nats per image",
                       yscale="log")  # it falls from ~2,800 to ~40 nats: a log axis keeps the end readable
        for ax in axes[i]:
            ax.grid(alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7)
    return fig


def _img(fig: Figure | None, alt: str, path: Path) -> str:
    """The figure as an embedded <img>, also saved as ``path`` (PNG files to put in docs or slides)."""
    if fig is None:
        return "<p>(no data yet)</p>"
    png = figure_to_png(fig)
    atomic_write_bytes(path, png)
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _test_html(test: Sequence[dict[str, Any]]) -> str:
    """The matched-reconstruction test: a verdict per step count, a row per FactorVAE setting."""
    if not test:
        return ("<p>Not yet: the test needs two β-VAE settings and a FactorVAE setting scored at one step count "
                "that every run has reached.</p>")
    e = html.escape
    verdicts = "".join(f"<li>step {s:,}: <b>{e(v)}</b></li>"
                       for s, v in dict.fromkeys((r["steps"], r["verdict"]) for r in test))
    body = "".join(
        f"<tr><td>{r['steps']:,}</td><td>{e(_setting(r))}</td><td>{r['seeds']}</td><td>{r['recon_mean']:.1f}</td>"
        f"<td>{r['metric_mean']:.3f}</td><td>{_pm(r['betavae_interpolated'], None, 3)}</td>"
        f"<td>{_pm(r['difference'], None, 3)}</td><td>" + (
            f"[{r['ci_low']:+.3f}, {r['ci_high']:+.3f}] at {100 * r['level']:.1f} %" if r["inside"]
            else "outside β-VAE's range") + "</td></tr>" for r in test)
    return f"""<p>For each FactorVAE setting, β-VAE's score interpolated at that setting's mean reconstruction error
between the two β-VAE settings that bracket it; the difference with a bootstrap interval over seeds, Bonferroni over
the settings inside β-VAE's range (docs/results/README.md states the protocol).</p><ul>{verdicts}</ul>
<table><tr><th>step</th><th>FactorVAE</th><th>seeds</th><th>recon</th><th>metric</th><th>β-VAE interpolated</th>
<th>difference</th><th>interval</th></tr>{body}</table>"""


def _html(sweep_dir: Path, doc: dict, rows: list, summary: list, metric: str, figs: Sequence[str],
          test: Sequence[dict[str, Any]]) -> str:
    e = html.escape
    grids = "".join(f"<li>{e(str(LABELS.get(g.get('model'), g.get('model'))))}: "
                    f"{e(str(SYMBOL.get(g.get('param') or '', '')))} ∈ "
                    f"{e(', '.join(f'{v:g}' if _num(v) is not None else str(v) for v in g.get('values') or []))}; "
                    f"seeds {e(str(g.get('seeds')))}; steps {e(', '.join(str(s) for s in g.get('steps') or []))}</li>"
                    for g in doc.get("grids", []) if isinstance(g, dict))
    table = "".join(
        f"<tr><td>{e(LABELS.get(s['model'], s['model']))}</td><td>{e(_setting(s))}</td><td>{s['scored']}/{s['runs']}"
        f"</td><td>{_pm(s['metric_mean'], s['metric_std'], 3)}</td><td>{_pm(s['recon_mean'], s['recon_std'], 1)}"
        f"</td><td>{_pm(s['tc_mean'], s['tc_std'], 3)}</td></tr>" for s in summary)
    runs = "".join(
        f"<tr><td>{e(r['name'])}</td><td>{e(str(r['state']))}</td><td>{e(_text(r['step']) or '–')}"
        f"</td><td>{_pm(r['metric'], None, 3)}</td><td>{_pm(r['recon'], None, 1)}</td><td>{_pm(r['tc'], None, 3)}"
        f"</td><td>{e(r['error'] or '')}</td></tr>" for r in rows)
    plan = doc.get("eval", {})
    how = f"protocol {plan.get('protocol', '?')}, settings {plan.get('settings') or 'the protocol defaults'}"
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Sweep {e(sweep_dir.name)}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}}
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}
td:first-child,th:first-child{{text-align:left}}img{{max-width:100%}}</style></head><body>
<h1>Sweep {e(sweep_dir.name)}</h1>
<p>Kim &amp; Mnih, <i>Disentangling by Factorising</i> (ICML 2018), §4.1: the disentanglement/reconstruction trade-off.
Written {e(time.strftime('%Y-%m-%d %H:%M:%S'))} from <code>{e(str(sweep_dir))}</code>.</p>
<ul>{grids}</ul>
<p>Metric: {e(metric)}, {e(how)}.
Reconstruction error: the last log window's Bernoulli NLL summed over pixels (nats per image). True TC: Monte Carlo
estimate on the data set. Mean ± sample std over the seeds that have a number.</p>
<p>Paper (full scale, dSprites; §4.1, Figure 5): {e(PAPER_DSPRITES)}.</p>
<h2>Per setting</h2><table><tr><th>model</th><th>setting</th><th>seeds scored</th><th>{e(metric)} metric</th>
<th>reconstruction error</th><th>true TC</th></tr>{table}</table>
<h2>Trade-off</h2>{figs[0]}
<h2>FactorVAE against β-VAE at matched reconstruction</h2>{_test_html(test)}
<h2>Over training</h2>{figs[1]}
<h2>Total correlation</h2>{figs[2]}
<h2>Runs</h2><table><tr><th>run</th><th>state</th><th>step</th><th>metric</th><th>recon</th><th>true TC</th>
<th>error</th></tr>{runs}</table></body></html>
"""


def matched_csv(test: Sequence[dict[str, Any]]) -> str:
    """The matched test's rows as CSV, columns :data:`.tradeoff.COLUMNS` (empty cells where outside)."""
    return _csv([{k: r[k] for k in COLUMNS} for r in test]) if test else ",".join(COLUMNS) + "\n"


def write_sweep_report(sweep_dir: str | Path, metric: str = "factorvae", also: Sequence[str | Path] = (),
                       test_steps: Sequence[int] | None = None) -> Path:
    """Write summary.csv, summary.md, tradeoff_test.csv, tradeoff.png, curves.png, tc.png and the
    self-contained report.html into ``sweep_dir``; returns the HTML's path.

    ``also``: more sweep folders whose runs join this one's (e.g. a ``same_batch`` arm run as a sweep of its
    own). ``test_steps``: the step counts of the matched test (default: every one all runs reached).
    """
    sweep_dir = Path(sweep_dir)
    rows = [r for d in (sweep_dir, *also) for r in collect(d, metric)]
    doc = read_json(sweep_dir / SWEEP_FILE) or {}
    summary = summarize(rows)
    test = matched_table([sweep_dir, *also], steps=test_steps, metric=metric)
    atomic_write_text(sweep_dir / "summary.csv", _csv(summary))
    atomic_write_text(sweep_dir / "summary.md", markdown_table(summary, metric))
    atomic_write_text(sweep_dir / "tradeoff_test.csv", matched_csv(test))
    figs = (_img(tradeoff_figure(summary, metric, rows), "trade-off", sweep_dir / "tradeoff.png"),
            _img(settings_curves_figure(rows, metric), "curves", sweep_dir / "curves.png"),
            _img(tc_figure(summary), "total correlation", sweep_dir / "tc.png"))
    path = sweep_dir / "report.html"
    atomic_write_text(path, _html(sweep_dir, doc, rows, summary, metric, figs, test))
    return path
