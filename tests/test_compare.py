"""Two sweep folders compared step by step (experiments/compare.py): known means, stds and differences."""

import json
import math

import pytest

from factorvae.experiments.compare import CompareError, compare, main, write_comparison


def _write(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def _sweep(root, shift=0.0, seeds=(0, 1, 2), cells=(("betavae", "beta", 4.0), ("factorvae", "gamma", 40.0))):
    """β-VAE β=4 and FactorVAE γ=40; seed s scores 0.5 + 0.1·s (+ shift) at step 20, recon 40 + s, KL 20,
    true TC 1 + s / 10; step 10 has a log line and no score."""
    runs = {}
    for model, param, value in cells:
        for s in seeds:
            name = f"{model}-{param}{value:g}-s{s}"
            runs[name] = {"model": model, "param": param, "value": value, "seed": s}
            log = [{"step": 10, "recon": 100.0, "kl": 10.0}, {"step": 20, "recon": 40.0 + s, "kl": 20.0},
                   {"step": 20, "recon": 1e6, "kl": 1e6, "partial": True}]
            (root / name).mkdir(parents=True)
            (root / name / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
            record = {"step": 20, "factorvae": {"score": 0.5 + 0.1 * s + shift}, "tc": {"score": 1 + s / 10},
                      "tc_true": 1 + s / 10}
            (root / name / "metrics.jsonl").write_text(json.dumps(record) + "\n")
    _write(root / "sweep.json", {"format": 1, "runs": runs})
    return root


def test_means_differences_and_spreads_are_the_known_answers(tmp_path):
    rows = compare(_sweep(tmp_path / "a"), _sweep(tmp_path / "b", shift=0.05), steps=[10, 20])
    by = {(r["model"], r["step"], r["quantity"]): r for r in rows}
    assert ("betavae", 10, "metric") not in by  # nothing scored at step 10
    early = by["betavae", 10, "recon"]
    assert (early["mean_a"], early["std_a"], early["diff"], early["beyond_spread"]) == (100.0, 0.0, 0.0, False)
    score = by["factorvae", 20, "metric"]
    assert score["mean_a"] == pytest.approx(0.6) and score["mean_b"] == pytest.approx(0.65)
    assert score["std_a"] == pytest.approx(0.1) and score["diff"] == pytest.approx(0.05)
    assert score["beyond_spread"] is False and score["seeds_a"] == score["seeds_b"] == 3
    recon = by["betavae", 20, "recon"]  # the partial line (1e6) is not a log window
    assert recon["mean_a"] == 41.0 and recon["std_a"] == pytest.approx(1.0)
    assert by["betavae", 20, "tc"]["mean_b"] == pytest.approx(1.1)


def test_a_shift_beyond_the_seed_spread_is_flagged(tmp_path):
    rows = compare(_sweep(tmp_path / "a"), _sweep(tmp_path / "b", shift=-0.2), steps=[20])
    metric = [r for r in rows if r["quantity"] == "metric"]
    assert all(r["beyond_spread"] and r["diff"] == pytest.approx(-0.2) for r in metric)
    assert not any(r["beyond_spread"] for r in rows if r["quantity"] != "metric")


def test_files_table_and_figure_are_written(tmp_path, capsys):
    a, b = _sweep(tmp_path / "a"), _sweep(tmp_path / "b", shift=0.05)
    assert main([str(a), str(b), "--steps", "20", "--out", str(tmp_path / "out")]) == 0
    table = capsys.readouterr().out
    assert "| factorvae gamma=40 | 20 | factorvae | 0.600 ± 0.100 (n=3) | 0.650 ± 0.100 (n=3) | 0.050 | no |" in table
    assert (tmp_path / "out" / "compare.png").read_bytes()[:4] == b"\x89PNG"
    doc = json.loads((tmp_path / "out" / "compare.json").read_text())
    assert doc["labels"] == ["fp32", "bf16"] and len(doc["rows"]) == 2 * 4
    assert math.isclose(doc["rows"][0]["mean_a"], 0.6)


def test_folders_that_cannot_be_compared_are_refused_in_one_line(tmp_path, capsys):
    a = _sweep(tmp_path / "a")
    with pytest.raises(CompareError, match=r"seeds \[0, 1, 2\] vs \[0, 1\]"):
        compare(a, _sweep(tmp_path / "b", seeds=(0, 1)), steps=[20])
    with pytest.raises(CompareError, match="has no runs of factorvae gamma=40, which"):
        compare(_sweep(tmp_path / "c", cells=[("betavae", "beta", 4.0)]), a, steps=[20])
    # a larger reference grid is fine: only the compared sweep's cells are compared
    rows = compare(a, _sweep(tmp_path / "d", cells=[("factorvae", "gamma", 40.0)]), steps=[20])
    assert {r["model"] for r in rows} == {"factorvae"}
    with pytest.raises(CompareError, match="no run of either sweep logged any of the steps 7"):
        compare(a, a, steps=[7])
    assert main([str(a), str(tmp_path / "nothing"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not a sweep folder" in err
    assert not (tmp_path / "out").exists()  # nothing half-written
    with pytest.raises(CompareError):
        write_comparison(a, tmp_path / "nothing", tmp_path / "out2", [20])
    assert not (tmp_path / "out2").exists()
