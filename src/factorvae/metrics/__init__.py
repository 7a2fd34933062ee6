"""Disentanglement metrics (paper §5) and the true total correlation of q(z) (paper §4, Fig. 7).

Every metric is a function ``name(data, represent, seed=0, *, protocol="paper", pool=None,
batch_size=2048, exhaustive=False, **settings) -> dict``. ``data`` is any :class:`GroundTruthData` (its
observations need not be images) and ``represent`` maps observations (n, ...) to codes (n, D). Metrics know
nothing about models: no torch here. Each result holds "score", "protocol", every "settings" value and the
metric's details (vote matrix, importance matrix, per-factor values...), all JSON-ready.

:func:`evaluate_metrics` runs several metrics on one :class:`CodePool`, so the random (factors, codes)
samples that the FactorVAE metric's global variance, MIG, DCI and SAP all need are encoded once.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tqdm.auto import tqdm

from ..data import GroundTruthData
from . import betavae_score as _betavae_score
from . import dci as _dci
from . import factorvae_score as _factorvae_score
from . import mig as _mig
from . import sap as _sap
from .betavae_score import betavae_score
from .dci import dci
from .factorvae_score import factorvae_score
from .mig import mig
from .pool import CodePool, Represent, require_factors
from .protocol import PROTOCOLS, resolve_settings
from .sap import sap
from .tc import estimate_total_correlation, total_correlation

__all__ = [
    "METRICS", "PROTOCOLS", "CodePool", "betavae_score", "dci", "estimate_total_correlation",
    "check_settings", "evaluate_metrics", "factorvae_score", "mig", "sap", "total_correlation",
]

# name -> metric function; the names are what configs, the CLI and eval.json use
METRICS: dict[str, Callable[..., dict[str, Any]]] = {
    "factorvae": factorvae_score,
    "betavae": betavae_score,
    "mig": mig,
    "dci": dci,
    "sap": sap,
}

# name -> {protocol: default settings}, so settings can be checked before anything is encoded
METRIC_PROTOCOLS: dict[str, Mapping[str, Mapping[str, Any]]] = {
    "factorvae": _factorvae_score.PROTOCOLS,
    "betavae": _betavae_score.PROTOCOLS,
    "mig": _mig.PROTOCOLS,
    "dci": _dci.PROTOCOLS,
    "sap": _sap.PROTOCOLS,
}


def check_settings(protocol: str, settings: Mapping[str, Mapping[str, Any]] | None) -> None:
    """Raise ValueError/TypeError for an unknown metric, setting name, protocol or ill-typed value."""
    for name, overrides in (settings or {}).items():
        if name not in METRIC_PROTOCOLS:
            raise ValueError(f"unknown metric '{name}' in settings; choose from: {', '.join(METRICS)}")
        resolve_settings(name, METRIC_PROTOCOLS[name], protocol, overrides)


def evaluate_metrics(
    data: GroundTruthData,
    represent: Represent,
    names: Sequence[str] = tuple(METRICS),
    protocol: str = "paper",
    seed: int = 0,
    *,
    batch_size: int = 2048,
    exhaustive: bool = False,
    settings: Mapping[str, Mapping[str, Any]] | None = None,
    progress: bool | None = None,
    pool: CodePool | None = None,
) -> dict[str, dict[str, Any]]:
    """Run the metrics ``names`` on one shared :class:`CodePool`: {name: result}.

    ``settings`` overrides per metric, e.g. ``{"dci": {"predictor": "gbt"}}``. Each result equals what the
    metric gives when run alone with the same seed (every metric draws from its own random stream, and the
    shared samples are prefixes of one seeded stream). ``progress`` None: a bar only on a terminal.
    ``pool``: reuse one built earlier for the same data, representation and seed (e.g. an exhaustive
    table for a second protocol); ``batch_size`` and ``exhaustive`` then come from it.
    """
    require_factors(data)
    unknown = [n for n in names if n not in METRICS] + [n for n in (settings or {}) if n not in names]
    if unknown:
        raise ValueError(f"unknown or unrequested metric(s) {unknown}; choose from: {', '.join(METRICS)}")
    check_settings(protocol, settings)  # fail before encoding anything
    show = sys.stderr.isatty() if progress is None else progress
    if pool is None:
        pool = CodePool(data, represent, seed, batch_size, exhaustive, progress=show)
    pool = CodePool.get(pool, data, represent, seed, batch_size, exhaustive)
    results: dict[str, dict[str, Any]] = {}
    for name in tqdm(names, desc="metrics", disable=not show):
        overrides = dict((settings or {}).get(name, {}))
        results[name] = METRICS[name](data, represent, seed, protocol=protocol, pool=pool, **overrides)
    return results
