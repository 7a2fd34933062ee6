"""benchmarks/paper_comparison.py: the FactorVAE vs β-VAE statement of docs/results, on a sweep with known numbers."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import paper_comparison as pc  # noqa: E402


def test_welch_known_answer():
    w = pc.welch_comparison(np.array([1.0, 2.0, 3.0]), np.array([0.0, 1.0, 2.0]))
    # equal variances 1 and sizes 3: t = 1 / sqrt(1/3 + 1/3), Welch–Satterthwaite df = 4
    assert w["difference"] == pytest.approx(1.0)
    assert w["t"] == pytest.approx(1 / np.sqrt(2 / 3)) and w["df"] == pytest.approx(4.0)
    assert 0.1 < w["p_one_sided"] < 0.2  # t(4) > 1.22: p = 0.144
    low, high = w["bootstrap_95"]
    assert low < 1.0 < high


def _sweep(root: Path) -> Path:
    runs = {}
    for model, value, scores in (("factorvae", 40.0, (0.80, 0.84, 0.82)), ("betavae", 4.0, (0.70, 0.74, 0.72))):
        for seed, final in enumerate(scores):
            name = f"{model}-{value:g}-s{seed}"
            runs[name] = {"model": model, "param": "gamma" if model == "factorvae" else "beta", "value": value,
                          "seed": seed}
            d = root / name
            d.mkdir(parents=True)
            evals = [{"step": s, "factorvae": {"score": final * s / 10, "num_active_dims": 10},
                      "tc": {"score": 2.0, "tc_discriminator": 0.5}} for s in (5, 10)]
            if seed == 2:
                evals = evals[:1]  # a seed still training: the comparison must fall back to step 5
            (d / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in evals) + '{"step": 1')  # torn
            (d / "log.jsonl").write_text("".join(json.dumps({"step": s, "recon": 50.0 - s, "kl_per_dim": [1.0] * 10,
                                                             "d_acc": 0.6}) + "\n" for s in (5, 10)))
    (root / "sweep.json").write_text(json.dumps({"runs": runs}))
    return root


def test_comparison_at_the_last_common_step(tmp_path, capsys, monkeypatch):
    root = _sweep(tmp_path / "sw")
    monkeypatch.setattr(sys, "argv", ["paper_comparison.py", str(root), "--out", str(tmp_path / "c.md")])
    assert pc.main() == 0
    text = (tmp_path / "c.md").read_text()
    assert "At step 5 (the last scored by all 3 + 3 seeds)" in text
    assert "| FactorVAE γ=40 | 0.410 ± 0.010 | 45.0 ± 0.0 | 2.00 ± 0.00 | ≈ 0.82 at ≈ 45 nats |" in text
    assert "FactorVAE − β-VAE on the paper metric: +0.050" in text
    assert "| FactorVAE γ=40 | 10 | 2 | 0.820 ± 0.028 |" in text  # the curve keeps the 2 seeds that reached 10


def test_not_a_sweep_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["paper_comparison.py", str(tmp_path)])
    assert pc.main() == 2
    assert "has no sweep.json" in capsys.readouterr().err
