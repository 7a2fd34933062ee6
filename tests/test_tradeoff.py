"""The matched-reconstruction test of the paper's trade-off claim (paper §4.1, Figure 5), on numbers whose
answer is known: the bracket, the interpolation, the bootstrap interval, Bonferroni and the verdict."""

import csv
import json

import numpy as np
import pytest

from factorvae.cli import main
from factorvae.experiments import tradeoff as tt
from factorvae.experiments.report import collect, summarize, tradeoff_figure
from factorvae.experiments.tradeoff import COLUMNS, FAILS, HOLDS, UNDECIDED, Setting, bracket, matched_test


def fixed(model, value, recon, metric, seeds=3, variant="paper"):
    """A setting whose seeds all agree: its bootstrap interval collapses onto the point estimate."""
    return Setting(model, value, np.full(seeds, float(recon)), np.full(seeds, float(metric)),
                   param="beta" if model == "betavae" else "gamma", variant=variant)


FRONTIER = [fixed("betavae", 1, 60, 0.5), fixed("betavae", 4, 80, 0.7), fixed("betavae", 16, 120, 0.9)]


def test_bracket_is_the_tightest_pair_by_error_and_none_outside():
    errors = np.array([60.0, 120.0, 80.0, 100.0])  # not in order of β: the frontier is sorted by error
    assert bracket(errors, 90.0) == (2, 3)
    assert bracket(errors, 80.0) == (2, 2)  # on a setting: that setting alone
    assert bracket(errors, 59.9) is None and bracket(errors, 120.1) is None
    assert bracket(errors, 60.0) == (0, 0) and bracket(errors, 120.0) == (1, 1)


def test_interpolated_score_difference_and_a_collapsed_interval():
    rows = matched_test(FRONTIER, [fixed("factorvae", 40, 70, 0.8), fixed("factorvae", 10, 100, 0.7)], steps=5000)
    f40, f10 = rows
    assert (f40["betavae_low"], f40["betavae_high"]) == (1, 4) and (f10["betavae_low"], f10["betavae_high"]) == (4, 16)
    assert f40["betavae_interpolated"] == pytest.approx(0.6) and f40["difference"] == pytest.approx(0.2)
    assert f10["betavae_interpolated"] == pytest.approx(0.8) and f10["difference"] == pytest.approx(-0.1)
    assert (f40["ci_low"], f40["ci_high"]) == pytest.approx((0.2, 0.2))  # no seed-to-seed spread: no width
    assert f40["level"] == pytest.approx(1 - 0.05 / 2) and f40["steps"] == 5000 and f40["seeds"] == 3
    assert {r["verdict"] for r in rows} == {HOLDS}  # one interval above 0 is enough
    assert set(f40) == set(COLUMNS)


def test_fails_only_when_every_inside_interval_is_below_zero():
    low = [fixed("factorvae", 10, 70, 0.55), fixed("factorvae", 40, 100, 0.6)]
    assert {r["verdict"] for r in matched_test(FRONTIER, low)} == {FAILS}
    straddles = Setting("factorvae", 40, np.full(2, 100.0), np.array([0.7, 0.9]), param="gamma")  # 0.8 ± 0.1
    mixed = [fixed("factorvae", 10, 70, 0.55), straddles]  # one below 0, one interval across it
    assert {r["verdict"] for r in matched_test(FRONTIER, mixed)} == {UNDECIDED}


def test_outside_settings_get_no_difference_and_do_not_count_in_bonferroni():
    rows = matched_test(FRONTIER, [fixed("factorvae", 10, 150, 0.99), fixed("factorvae", 40, 70, 0.4)])
    out, inside = rows
    assert not out["inside"] and out["difference"] is None and out["ci_low"] is None
    assert inside["inside"] and inside["level"] == pytest.approx(0.95)  # k = 1: no correction
    assert {r["verdict"] for r in rows} == {FAILS}
    nothing = matched_test(FRONTIER, [fixed("factorvae", 10, 150, 0.99)])
    assert nothing[0]["verdict"] == UNDECIDED  # k = 0: nothing tested, nothing decided


def test_another_variant_has_its_row_but_no_say_in_the_verdict_or_k():
    rows = matched_test(FRONTIER, [fixed("factorvae", 40, 70, 0.5),
                                   fixed("factorvae", 40, 70, 0.95, variant="same_batch")])
    paper, same = rows
    assert paper["level"] == same["level"] == pytest.approx(0.95)
    assert same["difference"] == pytest.approx(0.35) and same["ci_low"] > 0
    assert {r["verdict"] for r in rows} == {FAILS}


def test_bootstrap_interval_matches_the_enumerated_resamples():
    # β-VAE without spread; FactorVAE's two seeds score 0.6 and 1.0 at the same error: resampled means are 0.6,
    # 0.8 or 1.0 with probabilities 1/4, 1/2, 1/4, so a 95 % percentile interval spans the two extremes
    f = Setting("factorvae", 40, np.array([70.0, 70.0]), np.array([0.6, 1.0]), param="gamma")
    row = matched_test(FRONTIER, [f], resamples=4000, seed=3)[0]
    assert row["difference"] == pytest.approx(0.2)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((0.0, 0.4))
    assert matched_test(FRONTIER, [f], resamples=4000, seed=3) == [row]  # the seed fixes the resamples


def test_resampled_error_moves_along_the_same_line():
    # FactorVAE's error resamples to 65 or 75 (mean 70): the interpolation follows β-VAE's line (slope 0.01 per
    # nat), so the difference's interval is 0.8 - [0.55, 0.65] = [0.15, 0.25] with scores fixed at 0.8
    f = Setting("factorvae", 40, np.array([65.0, 75.0]), np.array([0.8, 0.8]), param="gamma")
    row = matched_test(FRONTIER, [f], resamples=4000)[0]
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((0.15, 0.25))


def test_bad_arguments_say_what_is_wrong():
    with pytest.raises(ValueError, match="at least two β-VAE settings"):
        matched_test(FRONTIER[:1], [fixed("factorvae", 40, 70, 0.8)])
    with pytest.raises(ValueError, match="one .recon, metric. pair per seed"):
        Setting("factorvae", 40, np.array([1.0, 2.0]), np.array([0.5]))
    with pytest.raises(ValueError, match="alpha"):
        matched_test(FRONTIER, [], alpha=1.5)


def test_variant_names_the_departures_from_algorithm_2():
    assert tt.variant_of({"same_batch": False}) == "paper" and tt.variant_of({}) == "paper"
    assert tt.variant_of({"same_batch": True}) == "same_batch"
    assert tt.variant_of({"same_batch": True, "precision": "bf16"}) == "same_batch+bf16"


# --- sweep folders: numbers at each evaluation step, two folders (the main grid and the same_batch arm) ---

def _sweep(root, cells, same_batch=False, last_step=20):
    """cells: (model, value) -> per seed {step: (recon, score)}; a run's log also has steps without a score."""
    runs = {}
    for (model, value), seeds in cells.items():
        param = "beta" if model == "betavae" else "gamma"
        for seed, at in enumerate(seeds):
            name = f"{model}-{param}{value:g}-s{seed}"
            runs[name] = {"model": model, "param": param, "value": value, "seed": seed}
            d = root / name
            d.mkdir(parents=True)
            (d / "config.json").write_text(json.dumps({"steps": last_step, "same_batch": same_batch}))
            reached = max(at)
            (d / "status.json").write_text(json.dumps({"step": reached, "state": "finished" if reached == last_step
                                                       else "running"}))
            log = [{"step": s, "recon": at[s][0] if s in at else 999.0} for s in range(5, reached + 1, 5)]
            (d / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log) + '{"step": 2')  # torn tail
            (d / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "factorvae": {"score": v[1]}}) + "\n"
                                                     for s, v in at.items()))
            if reached == last_step:
                (d / "eval.json").write_text(json.dumps({"factorvae": {"score": at[reached][1]},
                                                         "tc": {"score": 2.0, "tc_discriminator": 0.5}}))
    (root / "sweep.json").write_text(json.dumps({"format": 1, "runs": runs}))
    return root


def _cells(f40_scores_at_20):
    return {
        ("betavae", 1.0): [{10: (60.0, 0.5), 20: (50.0, 0.6)}] * 2,
        ("betavae", 4.0): [{10: (80.0, 0.7), 20: (70.0, 0.8)}] * 2,
        ("factorvae", 40.0): [{10: (70.0, 0.9), 20: (60.0, s)} for s in f40_scores_at_20],
    }


def test_table_from_sweep_folders_at_every_complete_step(tmp_path):
    main_grid = _sweep(tmp_path / "grid", _cells([0.5, 0.5]))
    arm = _sweep(tmp_path / "arm", {("factorvae", 40.0): [{10: (65.0, 0.2)}, {10: (75.0, 0.2)}]}, same_batch=True,
                 last_step=10)
    runs = tt.runs_at([main_grid, arm])
    assert tt.complete_steps(runs) == [10]  # the arm stopped at 10: only there is every run scored
    rows = tt.matched_table([main_grid, arm], resamples=500)
    assert [(r["steps"], r["variant"]) for r in rows] == [(10, "paper"), (10, "same_batch")]
    assert rows[0]["difference"] == pytest.approx(0.3) and rows[1]["difference"] == pytest.approx(-0.4)
    assert rows[0]["verdict"] == HOLDS
    assert tt.matched_table([main_grid, arm], steps=[10, 20], resamples=500) == rows  # 20: not every run has it
    at20 = tt.matched_table([main_grid], steps=[20], resamples=500)
    assert at20[0]["difference"] == pytest.approx(0.5 - 0.7) and at20[0]["verdict"] == FAILS


def test_sweep_report_shows_the_test_and_writes_its_csv(tmp_path):
    root = _sweep(tmp_path / "grid", _cells([0.5, 0.5]))
    assert main(["report", str(root)]) == 0
    page = (root / "report.html").read_text()
    assert "step 10: <b>holds at this budget</b>" in page and "step 20: <b>fails</b>" in page
    with open(root / "tradeoff_test.csv") as f:
        table = list(csv.DictReader(f))
    assert tuple(table[0]) == COLUMNS and [r["steps"] for r in table] == ["10", "20"]
    assert float(table[1]["difference"]) == pytest.approx(-0.2)


def test_summary_and_figure_tell_the_variants_apart(tmp_path):
    main_grid = _sweep(tmp_path / "grid", _cells([0.5, 0.7]))
    arm = _sweep(tmp_path / "arm", {("factorvae", 40.0): [{20: (90.0, 0.3)}]}, same_batch=True)
    rows = collect(main_grid) + collect(arm)
    summary = summarize(rows)
    assert [(s["model"], s["variant"]) for s in summary] == [
        ("betavae", "paper"), ("betavae", "paper"), ("factorvae", "paper"), ("factorvae", "same_batch")]
    assert summary[2]["metric_mean"] == pytest.approx(0.6) and summary[3]["metric_mean"] == pytest.approx(0.3)
    ax = tradeoff_figure(summary, rows=rows).axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["β-VAE", "FactorVAE", "FactorVAE (same_batch)"]
    dots = sum(len(c.get_offsets()) for c in ax.collections if c.get_offsets().shape[-1] == 2
               and c.__class__.__name__ == "PathCollection")
    assert dots == len(rows) == 7  # one dot per finished run
