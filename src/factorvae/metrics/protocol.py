"""Named metric protocols and the result record every metric returns (paper §5; docs/paper.md §5).

The numbers a disentanglement metric gives depend on its sample sizes, and the paper's implementation and
disentanglement_lib (dlib) chose different ones. Each metric therefore declares its settings once per
protocol name ("paper", "dlib"), any of them can be overridden by keyword, and every result records the
protocol and the full, resolved settings so that a number can always be traced to how it was measured.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np

PROTOCOLS = ("paper", "dlib")


def resolve_settings(
    metric: str, protocols: Mapping[str, Mapping[str, Any]], protocol: str, overrides: Mapping[str, Any]
) -> dict[str, Any]:
    """The protocol's settings with ``overrides`` applied; unknown names fail loudly (no silent typos)."""
    if protocol not in protocols:
        raise ValueError(f"{metric}: unknown protocol '{protocol}'; choose one of: {', '.join(protocols)}")
    settings = dict(protocols[protocol])
    unknown = sorted(set(overrides) - set(settings))
    if unknown:
        raise TypeError(f"{metric}: unknown setting(s) {unknown}; valid settings: {sorted(settings)}")
    for name, value in overrides.items():
        _check_value(metric, name, value, settings[name])
    settings.update(overrides)
    return settings


def _check_value(metric: str, name: str, value: Any, default: Any) -> None:
    """An override must have its default's type: counts are ints >= 1, rates finite numbers, names strings."""
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 1
    elif isinstance(default, float):
        ok = isinstance(value, (int, float, np.number)) and not isinstance(value, bool) and np.isfinite(value)
    else:
        ok = isinstance(value, type(default))
    if not ok:
        kind = {bool: "true or false", int: "an integer >= 1", float: "a finite number"}.get(type(default), "a string")
        raise ValueError(f"{metric}: setting {name} must be {kind} (default {default!r}), got {value!r}")


def metric_rng(seed: int, purpose: str) -> np.random.Generator:
    """An independent random stream per (seed, purpose).

    Each metric draws its votes from its own stream, so a metric gives the same number whether it runs
    alone or together with others, in any order, sharing one pool of codes.
    """
    return np.random.default_rng([int(seed), zlib.crc32(purpose.encode())])


def make_result(
    metric: str, score: float, protocol: str, settings: Mapping[str, Any], seed: int, **details: Any
) -> dict[str, Any]:
    """The common record: metric name, score, protocol, settings, seed, then metric-specific details.

    Everything is converted to plain Python types so the record can go straight into a JSON file.
    """
    record = {"metric": metric, "score": float(score), "protocol": protocol, "seed": int(seed),
              "settings": dict(settings)}
    record.update(details)
    return _plain(record)


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    return value
