"""One self-contained HTML page per run: settings, final numbers, metrics and the figures of paper §4.

``write_report(run_dir)`` reads whatever the run directory holds (config.json, log.jsonl, metrics.jsonl,
eval.json, status.json, checkpoint.pt, figures/) and writes ``run_dir/report.html``: images embedded as
base64 data URIs, inline CSS, no scripts and no network, so the file can be mailed or archived alone.
A run missing parts (interrupted, never evaluated, older layout) still gets a report that says what is
missing and which command produces it. Figures are drawn once by :func:`factorvae.figures.traverse.write_visuals`
and reused here; they are redrawn only when the checkpoint (or the log, for the curves) is newer.
"""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path
from typing import Any

from ..files import atomic_write_bytes, atomic_write_text
from .plots import curves_from_run, figure_to_png, read_json, read_jsonl

MODEL_FIGURES = ("traversal_seed0.png", "traversal.gif", "reconstructions.png", "samples.png")
# final-number keys of log.jsonl in reading order, with what they mean (docs/paper.md §1, §7)
FINAL_KEYS = (
    ("step", "training step"),
    ("recon", "reconstruction error (Bernoulli NLL, nats per image)"),
    ("kl", "KL(q(z|x) ‖ p(z)), nats"),
    ("tc", "total correlation, discriminator estimate (nats)"),
    ("d_acc", "discriminator accuracy (0.5 = chance)"),
    ("d_loss", "discriminator loss"),
    ("loss", "training loss"),
    ("critic_loss", "critic loss"),
    ("wasserstein", "Wasserstein estimate"),
    ("gp", "gradient penalty"),
    ("mi", "mutual-information bound"),
    ("steps_per_s", "training speed (steps/s)"),
    ("time", "training time"),
)
CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d1d1f;margin:0;
background:#f6f6f4}
main{max-width:1180px;margin:0 auto;padding:24px 28px 60px;background:#fff;min-height:100vh}
h1{font-size:24px;margin:0 0 4px}h2{font-size:19px;margin:34px 0 10px;border-bottom:2px solid #e4e4e0;
padding-bottom:4px}h3{font-size:15px;margin:18px 0 6px}
.sub{color:#666;margin:0 0 14px}nav a{margin-right:14px;color:#2456a6;text-decoration:none}
table{border-collapse:collapse;margin:6px 0 10px;font-size:14px}td,th{border:1px solid #ddd;padding:4px 9px;
text-align:left;vertical-align:top}th{background:#f1f1ee}td.num{text-align:right;font-variant-numeric:tabular-nums}
.box{border-left:5px solid #d9a400;background:#fff8e0;padding:8px 14px;margin:12px 0}
.box.bad{border-color:#c0392b;background:#fdecea}.box.ok{border-color:#2e8b57;background:#eaf6ef}
.box li{margin:3px 0}code{background:#f1f1ee;padding:1px 4px;border-radius:3px;font-size:13px}
img{max-width:100%;height:auto;display:block;margin:6px 0 14px;border:1px solid #e4e4e0}
img.px{image-rendering:pixelated}figure{margin:0}figcaption{color:#555;font-size:13px;margin-top:-8px}
.cols{display:flex;gap:28px;align-items:flex-start}.cols table{flex:1;margin-top:0}
td.v{word-break:break-word}
.grid td{text-align:right;min-width:2.6em;font-variant-numeric:tabular-nums}
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: Any) -> str:
    """Short human form of a JSON value (numbers to 4 significant digits)."""
    if isinstance(value, bool) or value is None:
        return "—" if value is None else str(value).lower()
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt(v) for v in value) if len(value) <= 12 else f"[{len(value)} values]"
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return str(value)


def _duration(seconds: float) -> str:
    minutes, s = divmod(int(seconds), 60)
    h, m = divmod(minutes, 60)
    return f"{h}h {m:02d}m {s:02d}s" if h else f"{m}m {s:02d}s"


def _table(rows: list[tuple[Any, ...]], head: tuple[str, ...] | None = None) -> str:
    """An HTML table of already-escaped cells (callers escape text; numbers get the ``num`` class)."""
    out = ["<table>"]
    if head:
        out.append("<tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>")
    for row in rows:
        out.append("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>")
    return "".join(out) + "</table>"


def _img(path: Path, alt: str, pixelated: bool = False) -> str:
    mime = "image/gif" if path.suffix == ".gif" else "image/png"
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    cls = ' class="px"' if pixelated else ""
    return f'<img{cls} alt="{_e(alt)}" src="data:{mime};base64,{data}">'


def _stale(target: Path, *sources: Path) -> bool:
    """True when ``target`` is missing or older than any existing source."""
    if not target.exists():
        return True
    mtime = target.stat().st_mtime
    return any(s.exists() and s.stat().st_mtime > mtime for s in sources)


def _refresh_figures(run_dir: Path, model: Any, data_path: str | Path | None = None) -> str | None:
    """Draw missing or outdated figures; return an error message instead of raising (the report goes on)."""
    fig_dir, ckpt = run_dir / "figures", run_dir / "checkpoint.pt"
    error = None
    # eval.json counts too: the traversal row labels name the factors its vote matrix assigns
    sources = (ckpt, run_dir / "eval.json")
    if (model is not None or ckpt.exists()) and any(_stale(fig_dir / f, *sources) for f in MODEL_FIGURES):
        from .traverse import write_visuals  # late import: traversals pull in the model side

        try:
            write_visuals(run_dir, model=model, data_path=data_path)
        except Exception as exc:  # a broken checkpoint must not cost the user the rest of the report
            error = f"{type(exc).__name__}: {exc}"
    # curves need no checkpoint: a run that is still training gets fresh ones every time
    if _stale(fig_dir / "curves.png", run_dir / "log.jsonl", run_dir / "metrics.jsonl"):
        fig = curves_from_run(run_dir)
        if fig is not None:
            atomic_write_bytes(fig_dir / "curves.png", figure_to_png(fig))
    return error


def _missing(run_dir: Path, found: dict[str, bool], figure_error: str | None) -> list[str]:
    """One escaped HTML item per missing part, with the command that produces it."""
    rd = _e(run_dir)
    items = []
    if not found["config.json"]:
        items.append("<b>config.json</b>: this does not look like a run directory; start one with "
                     "<code>factorvae train</code>.")
    if not found["log.jsonl"]:
        items.append("<b>log.jsonl</b>: no training step was logged yet, so there are no curves or final "
                     f"numbers; train or resume with <code>factorvae train --resume {rd}</code>.")
    if not found["status.json"]:
        items.append("<b>status.json</b>: the run's state is unknown (written by training).")
    if not found["checkpoint.pt"]:
        items.append("<b>checkpoint.pt</b>: no trained model, so no traversals, reconstructions or samples; "
                     f"resume training with <code>factorvae train --resume {rd}</code>.")
    if not found["eval.json"]:
        items.append(f"<b>eval.json</b>: no metrics; run <code>factorvae evaluate {rd}</code>.")
    if not found["metrics.jsonl"]:
        items.append("<b>metrics.jsonl</b>: the metric was not tracked during training (optional; set "
                     "<code>--eval-every N</code> when training to get the metric-over-training curve).")
    if figure_error:
        items.append(f"<b>figures</b>: drawing them failed ({_e(figure_error)}); try "
                     f"<code>factorvae traverse {rd}</code> for the full error.")
    return items


def _summary(status: dict | None, last: dict | None, eval_json: dict | None) -> str:
    parts = []
    if status:
        state = str(status.get("state", "unknown"))
        cls = {"finished": "ok", "failed": "bad", "interrupted": ""}.get(state, "")
        msg = f"<b>{_e(state)}</b> at step {_e(status.get('step', '?'))}"
        if status.get("error"):
            msg += f": {_e(status['error'])}"
        parts.append(f'<div class="box {cls}">Run state: {msg}</div>')
    rows = []
    for key, meaning in FINAL_KEYS:
        value = (last or {}).get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            shown = _duration(value) if key == "time" and math.isfinite(value) else _fmt(value)
            rows.append((f"<code>{_e(key)}</code>", _e(meaning), f'<span class="num">{_e(shown)}</span>'))
    tc = (eval_json or {}).get("tc")
    if isinstance(tc, dict) and isinstance(tc.get("tc"), (int, float)):
        rows.append(("<code>tc_true</code>", "total correlation, Monte Carlo estimate at evaluation (nats)",
                     _e(_fmt(tc["tc"]))))
    if rows:
        parts.append("<h3>Last logged step</h3>" + _table(rows, ("key", "meaning", "value")))
    return "".join(parts) or "<p>No training numbers yet.</p>"


def _metrics(eval_json: dict | None) -> str:
    if not eval_json:
        return "<p>No <code>eval.json</code> (see above).</p>"
    rows, extra = [], []
    for name, result in eval_json.items():
        if not isinstance(result, dict):
            extra.append(f"{_e(name)} = {_e(_fmt(result))}")
            continue
        # the TC entry has no score: show its true-TC estimate there, named, so it is not read as one
        key = "score" if "score" in result else "tc" if "tc" in result else None
        score = _fmt(result[key]) + ("" if key == "score" else f" ({key})") if key else "—"
        settings = _settings(result, skip=(key, "protocol", "metric"))
        rows.append((f"<b>{_e(name)}</b>", f'<span class="num">{_e(score)}</span>',
                     _e(result.get("protocol", "—")), _e(", ".join(settings) or "—")))
    out = _table(rows, ("metric", "score", "protocol", "settings")) if rows else ""
    if extra:
        out += "<p>" + "; ".join(extra) + "</p>"
    fv = eval_json.get("factorvae")
    if isinstance(fv, dict) and (fv.get("vote_matrix") or fv.get("train_votes")):
        out += _damaged_ok(_vote_table, fv, "the vote matrix in eval.json")
    return out


def _settings(result: dict, skip: tuple) -> list[str]:
    """``key=value`` for the nested ``settings`` dict first (the protocol's sample sizes), then top-level
    scalars (accuracies, seed, step); lists such as votes or per-dimension stds are left to other tables."""
    nested = result.get("settings") if isinstance(result.get("settings"), dict) else {}
    items = {**nested, **{k: v for k, v in result.items() if k not in skip and k != "settings"}}
    return [f"{k}={_fmt(v)}" for k, v in items.items() if isinstance(v, (int, float, str, bool))][:14]


def _damaged_ok(table, source: dict, what: str) -> str:
    """A table drawn from file contents, or a note when the file does not hold what it should."""
    try:
        return table(source)
    except (TypeError, ValueError, KeyError, IndexError, AttributeError, ZeroDivisionError):
        return f"<p class=sub>({_e(what)} is damaged: this table is left out)</p>"


def _vote_table(result: dict) -> str:
    """The majority-vote classifier's counts (paper §5): rows are code dimensions, columns factors."""
    votes = result.get("vote_matrix") or result["train_votes"]  # the votes the classifier was fitted to
    k = max((len(r) for r in votes), default=0)
    names = list(result.get("factor_names") or [f"factor {j}" for j in range(k)])
    active = result.get("active_dims")
    inactive: set = set()
    if active is not None and len(active) == len(votes):
        rows_dims = list(active)  # rows are the active dimensions (all of them, or a matrix over those only)
    else:
        rows_dims = list(range(len(votes)))
        inactive = set() if active is None else set(rows_dims) - set(active)
    peak = max((v for r in votes for v in r), default=0) or 1
    body = []
    for d, row in zip(rows_dims, votes, strict=True):
        cells = []
        for v in row:
            alpha = 0.08 + 0.8 * v / peak if v else 0.0  # colour strength ∝ votes: the argmax stands out
            cells.append(f'<td style="background:rgba(36,86,166,{alpha:.2f})">{_e(v)}</td>')
        mark = " (pruned)" if d in inactive else ""
        body.append(f"<tr><th>z{_e(d)}{mark}</th>{''.join(cells)}</tr>")
    head = "<tr><th>dim</th>" + "".join(f"<th>{_e(n)}</th>" for n in names[:k]) + "</tr>"
    note = "Each dimension is assigned the factor it got most votes for; the score is that classifier's "
    note += "accuracy on a separate set of votes."
    if inactive:
        note += f" Active dimensions: {_fmt(list(active))}; the others collapsed and were pruned."
    return ("<h3>FactorVAE metric: votes per code dimension and factor</h3>"
            f'<table class="grid">{head}{"".join(body)}</table><p class=sub>{_e(note)}</p>')


def _figures(run_dir: Path) -> str:
    fig_dir = run_dir / "figures"
    meta = read_json(fig_dir / "traversal.json") or {}
    out = ["<h2 id=curves>Training curves</h2>"]
    curves = fig_dir / "curves.png"
    out.append(_img(curves, "training curves") if curves.exists() else "<p>No curves: no log.jsonl data.</p>")
    out.append("<h2 id=traversals>Latent traversals</h2>")
    # by number (seed 10 after seed 9), and only as many as the last drawing made: older extras are stale
    count = meta.get("n_seeds")
    present = len(list(fig_dir.glob("traversal_seed*.png")))
    count = min(count, present) if isinstance(count, int) else present  # a damaged file cannot ask for 10^12
    seeds = [p for i in range(count) if (p := fig_dir / f"traversal_seed{i}.png").exists()]
    if not seeds:
        out.append("<p>No traversals (they need checkpoint.pt).</p>")
        return "".join(out)
    out.append(f"<p class=sub>{_e(_traversal_caption(meta))}</p>")
    out += [_img(p, f"traversal of {p.stem}", pixelated=True) for p in seeds]
    if (fig_dir / "traversal.gif").exists():
        out.append("<h3>Animated: every dimension swept at once (rows: seed images)</h3>")
        out.append(_img(fig_dir / "traversal.gif", "animated traversal", pixelated=True))
    if meta.get("order"):
        out.append("<h3>Code dimensions, most informative first</h3>"
                   + _damaged_ok(_dims_table, meta, "figures/traversal.json"))
    for name, title, caption in (
        ("reconstructions.png", "Reconstructions", "Inputs above, decoded posterior means below."),
        ("samples.png", "Samples from the prior", "Decoded codes drawn from p(z)."),
    ):
        if (fig_dir / name).exists():
            out.append(f"<h2 id={name.split('.')[0]}>{title}</h2><p class=sub>{caption}</p>")
            out.append(_img(fig_dir / name, title.lower(), pixelated=True))
    return "".join(out)


def _dims_table(meta: dict) -> str:
    kl, factors = meta.get("kl"), meta.get("factors") or {}
    rows = [(f"z{_e(d)}", '<span class="num">' + (_e(f"{kl[d]:.3f}") if kl else "—") + "</span>",
             _e(factors.get(str(d), "—"))) for d in meta["order"]]
    return _table(rows, ("dimension", "average KL (nats)", "factor with most votes"))


def _traversal_caption(meta: dict) -> str:
    if meta.get("kind") == "gan":
        return ("Each row sweeps one code c_d over [−1, 1] (the codes are uniform) while the others keep Q's "
                "estimate for the seed image; rows in code order.")
    sweep = ("z_d = μ_d + offset" if meta.get("mode") == "posterior" else "z_d over [−limit, limit]")
    return (f"Each row sweeps one dimension ({sweep}, limit = {_fmt(meta.get('limit'))}) while the others "
            "keep the seed's posterior mean. Rows are sorted by average KL per dimension over 1000 images; "
            "dimensions with KL ≈ 0 are unused. '→ factor' is the factor the dimension won most votes for "
            "in the FactorVAE metric (paper §5).")


def _config(config: dict | None) -> str:
    if not config:
        return "<p>No config.json.</p>"
    rows = [(f"<code>{_e(k)}</code>", f'<span class="v">{_e(_fmt(v))}</span>') for k, v in config.items()]
    half = math.ceil(len(rows) / 2)
    return f'<div class="cols">{_table(rows[:half])}{_table(rows[half:])}</div>'


def _model_on(run_dir: Path, data_path: str | Path) -> Any:
    """The run's model on the data at ``data_path``, loaded up front: data asked for by name that does not
    load is an error (DataError, RunError), not a note inside the page."""
    if not (run_dir / "checkpoint.pt").exists():
        if not Path(data_path).exists():
            raise FileNotFoundError(f"--data-path {data_path} not found")
        return None
    from ..run.trained import load  # late: the model side loads only when asked for

    return load(run_dir, data_path=data_path)


def write_report(run_dir: str | Path, *, model: Any = None, data_path: str | Path | None = None) -> Path:
    """Write ``run_dir/report.html`` (self-contained) and return its path.

    Figures missing or older than the checkpoint are drawn first with
    :func:`factorvae.figures.traverse.write_visuals` (``model`` is passed through, else loaded from the run).
    """
    run_dir = Path(run_dir)
    log = read_jsonl(run_dir / "log.jsonl")  # first: a damaged log is refused before any file is written
    read_jsonl(run_dir / "metrics.jsonl")
    if data_path is not None and model is None:
        model = _model_on(run_dir, data_path)
    figure_error = _refresh_figures(run_dir, model, data_path)
    config = read_json(run_dir / "config.json")
    status, eval_json = read_json(run_dir / "status.json"), read_json(run_dir / "eval.json")
    found = {name: (run_dir / name).exists() for name in
             ("config.json", "log.jsonl", "status.json", "checkpoint.pt", "eval.json", "metrics.jsonl")}
    found["log.jsonl"] = found["log.jsonl"] and bool(log)
    missing = _missing(run_dir, found, figure_error)
    cfg = config or {}
    title = f"{run_dir.resolve().name}: {cfg.get('model', '?')} on {cfg.get('dataset', '?')}"
    body = [
        f"<h1>{_e(title)}</h1>",
        f"<p class=sub>{_e(run_dir.resolve())} · FactorVAE (Kim &amp; Mnih, ICML 2018)</p>",
        '<nav><a href="#summary">Summary</a><a href="#metrics">Metrics</a><a href="#curves">Curves</a>'
        '<a href="#traversals">Traversals</a><a href="#config">Configuration</a></nav>',
    ]
    if missing:
        body.append('<div class="box"><b>Missing from this run directory</b><ul>'
                    + "".join(f"<li>{m}</li>" for m in missing) + "</ul></div>")
    body += [
        "<h2 id=summary>Summary</h2>", _summary(status, log[-1] if log else None, eval_json),
        "<h2 id=metrics>Disentanglement metrics (eval.json)</h2>", _metrics(eval_json),
        _figures(run_dir),
        "<h2 id=config>Configuration (config.json)</h2>", _config(config),
    ]
    page = ("<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_e(title)}</title><style>{CSS}</style></head><body><main>"
            + "\n".join(body) + "</main></body></html>\n")
    path = run_dir / "report.html"
    atomic_write_text(path, page)
    return path
