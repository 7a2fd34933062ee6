"""Run directory -> representation -> metrics -> ``eval.json`` (paper §4–5, Fig. 7).

The representation scored is the encoder mean (a GAN's Q prediction for InfoWGAN-GP). Besides the
disentanglement metrics, "tc" reports the true total correlation of q(z) (exact-mixture Monte Carlo) and,
for FactorVAE, the discriminator's estimate on the same number of codes, so the two can be compared as in
the paper's Figure 7.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import ConfigError
from .data import DataError, GroundTruthData
from .files import atomic_write_text, json_safe
from .losses import reparameterize, tc_from_logits
from .methods import inference_encode
from .metrics import METRICS, check_settings, estimate_total_correlation, evaluate_metrics
from .metrics.protocol import metric_rng, resolve_settings
from .run.rundir import RunError
from .run.trained import load

ALL_METRICS = (*METRICS, "tc")
TC_SAMPLES = 10_000  # data points in the mixture and Monte-Carlo samples of the true-TC estimate
# "tc" settings: num_data as above; all_data: the mixture over the whole (finite) data set instead, with
# num_data Monte-Carlo samples and num_data components for each 1-D marginal (metrics/tc.py)
TC_DEFAULTS = {"num_data": TC_SAMPLES, "all_data": False}


def check_metric_names(names: Sequence[str]) -> list[str]:
    names = [n.strip() for n in names if n.strip()]
    unknown = [n for n in names if n not in ALL_METRICS]
    if unknown or not names:
        raise DataError(f"unknown metric(s) {unknown or names}; choose from: {', '.join(ALL_METRICS)}")
    return names


def check_eval_settings(protocol: str, settings: Mapping[str, Mapping[str, Any]] | None) -> None:
    """Refuse unknown metrics, setting names and ill-typed values (DataError) before any model is loaded."""
    settings = dict(settings or {})
    tc = settings.pop("tc", None)
    try:
        check_settings(protocol, settings)
        if tc is not None:
            resolve_settings("tc", {protocol: TC_DEFAULTS}, protocol, tc)
    except (TypeError, ValueError) as exc:
        raise DataError(str(exc)) from None


def _encode_fn(method, device: torch.device):
    """numpy observations -> (mu, logvar) numpy, in inference mode on the method's device.

    Built per evaluation (``inference_encode``), so periodic evaluation during training sees the current
    weights.
    """
    forward = inference_encode(method)

    def encode(obs: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        with torch.inference_mode():
            mu, logvar = forward(torch.from_numpy(np.ascontiguousarray(obs, dtype=np.float32)).to(device))
        return mu.cpu().numpy(), None if logvar is None else logvar.cpu().numpy()

    return encode


def discriminator_tc(method, data: GroundTruthData, device: torch.device, n: int, seed: int) -> float:
    """The discriminator's TC estimate, mean(logit_0 − logit_1), over n codes z ~ q(z|x)."""
    rng = metric_rng(seed, "tc/discriminator")
    gen = torch.Generator(device=device).manual_seed(seed)
    encode = inference_encode(method)
    total = 0.0
    with torch.inference_mode():
        for start in range(0, n, 2048):
            x = torch.from_numpy(data.observations(data.sample_factors(min(2048, n - start), rng))).to(device)
            mu, logvar = encode(x)
            total += float(tc_from_logits(method.discriminator(reparameterize(mu, logvar, gen)))) * len(x)
    return total / n


def evaluate_method(
    method, data: GroundTruthData, device: torch.device, names: Sequence[str], protocol: str = "paper",
    seed: int = 0, exhaustive: bool = False, progress: bool | None = None,
    settings: Mapping[str, Mapping[str, Any]] | None = None, tc_samples: int = TC_SAMPLES,
) -> dict[str, Any]:
    """{metric name: result} for a method object (used by training's periodic evaluation and by the CLI).

    ``settings`` overrides metric settings by name (e.g. ``{"factorvae": {"num_train": 100}}``;
    ``{"tc": {"num_data": n}}`` sets the true-TC estimate's size, else ``tc_samples``: mixture components
    (``{"tc": {"all_data": True}}``: the whole data set's mixture, num_data for the marginals)
    and Monte-Carlo samples alike).
    """
    names = check_metric_names(names)
    check_eval_settings(protocol, settings)
    encode = _encode_fn(method, device)
    metric_names = [n for n in names if n != "tc"]
    results: dict[str, Any] = {}
    if metric_names:
        chosen = {k: v for k, v in (settings or {}).items() if k in metric_names}
        results.update(evaluate_metrics(data, lambda obs: encode(obs)[0], metric_names, protocol, seed,
                                        exhaustive=exhaustive, settings=chosen, progress=progress))
    if "tc" in names:
        if method.kind != "vae":
            results["tc"] = {"metric": "tc", "score": None, "note": "no posterior q(z|x) for a GAN: TC is undefined"}
        else:
            tc_settings = {**TC_DEFAULTS, "num_data": tc_samples, **(settings or {}).get("tc", {})}
            tc_samples = int(tc_settings["num_data"])
            tc = estimate_total_correlation(data, encode, tc_samples, tc_samples, seed,
                                            all_data=bool(tc_settings["all_data"]))
            tc.update(metric="tc", score=tc["tc"])
            if hasattr(method, "discriminator"):
                tc["tc_discriminator"] = discriminator_tc(method, data, device, tc_samples, seed)
            results["tc"] = tc
    return results


def evaluate_run(
    run_dir: str | Path, names: Sequence[str] = ALL_METRICS, protocol: str = "paper", seed: int = 0,
    exhaustive: bool = False, device: str = "cpu", progress: bool | None = None,
    settings: Mapping[str, Mapping[str, Any]] | None = None, tc_samples: int = TC_SAMPLES,
    data_path: str | Path | None = None,
) -> dict[str, Any]:
    """Score the run's latest checkpoint and merge the results into ``run_dir/eval.json`` (atomically).

    ``data_path``: the run's data set read from there instead of where it was trained (the data moved).
    """
    names = check_metric_names(names)
    check_eval_settings(protocol, settings)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed must be an integer >= 0, got {seed!r}")
    model = load(run_dir, device=device, data_path=data_path)
    if not model.data.has_factors:
        raise DataError(f"data set '{model.data.name}' has no ground-truth factors, so there is nothing to score; "
                        f"look at the run with `factorvae traverse {run_dir}` instead")
    results = evaluate_method(model.method, model.data, model.device, names, protocol, seed, exhaustive, progress,
                              settings, tc_samples)
    write_eval(run_dir, model.step, results)
    return {name: {**r, "step": model.step} for name, r in results.items()}


def write_eval(run_dir: str | Path, step: int, results: dict[str, Any]) -> None:
    """Merge ``results`` (stamped with ``step``) into ``run_dir/eval.json``, atomically."""
    path = Path(run_dir) / "eval.json"
    try:
        merged = json.loads(path.read_bytes().decode()) if path.exists() else {}
    except ValueError as exc:  # never silently replace earlier results by these
        raise RunError(f"cannot merge into {path} ({exc}); move it away and evaluate again") from None
    if not isinstance(merged, dict):
        raise RunError(f"cannot merge into {path}: it is not a JSON object; move it away and evaluate again")
    merged.update({name: {**r, "step": step} for name, r in results.items()})
    atomic_write_text(path, json.dumps(json_safe(merged), indent=1) + "\n")


def format_table(results: dict[str, Any]) -> str:
    """A readable table: metric, score, protocol and the settings that matter most."""
    rows = [("metric", "score", "protocol", "details")]
    for name, r in results.items():
        score = "n/a" if r.get("score") is None else f"{r['score']:.4f}"
        if "note" in r:
            details = r["note"]
        elif name == "tc":
            details = f"true TC (nats), {r.get('num_data', '?')} points"
            if "tc_discriminator" in r:
                details += f"; discriminator estimate {r['tc_discriminator']:.4f}"
        else:
            s = r.get("settings", {})
            details = ", ".join(f"{k}={v}" for k, v in list(s.items())[:4])
        rows.append((name, score, r.get("protocol", "-"), details))
    widths = [max(len(str(row[i])) for row in rows) for i in range(3)]
    return "\n".join(
        "  ".join(str(c).ljust(w) for c, w in zip(row[:3], widths, strict=True)) + "  " + row[3] for row in rows
    )


def print_table(results: dict[str, Any]) -> None:
    print(format_table(results), file=sys.stdout)
