"""The sweep report: table numbers, trade-off and curve figures, self-contained HTML."""

import json
import math

import pytest

from factorvae.cli import main
from factorvae.experiments.report import collect, summarize, tradeoff_figure, write_sweep_report

# (model, param, value) -> per-seed (metric, recon, tc); known answers for the mean ± std
CELLS = {
    ("betavae", "beta", 1.0): [(0.6, 30.0, 2.0), (0.7, 32.0, 3.0)],
    ("betavae", "beta", 4.0): [(0.7, 45.0, 1.0), (0.8, 47.0, 1.5)],
    ("factorvae", "gamma", 40.0): [(0.8, 44.0, 0.5), (0.9, 46.0, 0.7)],
}


def _write(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def _fake_sweep(root, missing_seed_of=None):
    runs = {}
    for (model, param, value), seeds in CELLS.items():
        for seed, (metric, recon, tc) in enumerate(seeds):
            name = f"{model}-{param}{value:g}-s{seed}"
            runs[name] = {"model": model, "param": param, "value": value, "seed": seed, "overrides": {"steps": 20}}
            d = root / name
            _write(d / "config.json", {"steps": 20})
            if (model, value) == missing_seed_of and seed == 1:
                _write(d / "status.json", {"step": 7, "state": "failed", "error": "non-finite loss at step 8"})
                continue
            _write(d / "status.json", {"step": 20, "state": "finished", "error": None})
            _write(d / "eval.json", {"factorvae": {"score": metric, "step": 20}, "mig": {"score": metric / 2},
                                     "tc": {"score": tc, "step": 20, "tc_discriminator": tc / 4}})
            (d / "log.jsonl").write_text("".join(json.dumps({"step": s, "recon": recon + (20 - s), "kl": 1.0}) + "\n"
                                                 for s in (10, 20)))
            curve = [{"step": s, "factorvae": {"score": metric * s / 20}, "tc_true": tc} for s in (10, 20)]
            (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in curve))
    _write(root / "sweep.json", {"format": 1, "runs": runs, "eval": {"protocol": "paper", "settings": {}},
                                 "grids": [{"model": "betavae", "param": "beta", "values": [1.0, 4.0], "seeds": [0, 1],
                                            "steps": [20]}]})
    return root


def test_summary_has_steps_seeds_mig_and_discriminator_tc(tmp_path):
    summary = summarize(collect(_fake_sweep(tmp_path, missing_seed_of=("factorvae", 40.0))))
    b4, f40 = summary[1], summary[2]
    assert (b4["steps"], b4["seeds"]) == (20, 2) and (f40["steps"], f40["seeds"]) == (20, 1)  # a failed seed is out
    assert b4["mig_mean"] == pytest.approx(0.375) and b4["mig_std"] == pytest.approx(math.sqrt(0.005) / 2)
    assert b4["tc_discriminator_mean"] == pytest.approx(1.25 / 4) and f40["tc_discriminator_std"] is None


def test_summary_means_and_sample_stds(tmp_path):
    summary = summarize(collect(_fake_sweep(tmp_path)))
    assert [(s["model"], s["value"]) for s in summary] == [("betavae", 1.0), ("betavae", 4.0), ("factorvae", 40.0)]
    b4 = summary[1]
    assert b4["metric_mean"] == pytest.approx(0.75) and b4["metric_std"] == pytest.approx(math.sqrt(0.005))
    assert b4["recon_mean"] == pytest.approx(46.0) and b4["recon_std"] == pytest.approx(math.sqrt(2.0))
    assert b4["tc_mean"] == pytest.approx(1.25) and b4["scored"] == 2


def test_failed_seed_is_left_out_of_the_mean(tmp_path):
    rows = collect(_fake_sweep(tmp_path, missing_seed_of=("factorvae", 40.0)))
    f40 = summarize(rows)[2]
    assert (f40["runs"], f40["scored"], f40["metric_mean"], f40["metric_std"]) == (2, 1, 0.8, None)
    failed = [r for r in rows if r["state"] == "failed"]
    assert len(failed) == 1 and "non-finite" in failed[0]["error"]


def test_a_run_between_evaluation_segments_is_not_counted_yet(tmp_path):
    root = _fake_sweep(tmp_path)
    _write(root / "betavae-beta4-s1" / "status.json", {"step": 10, "state": "finished", "error": None})
    rows = collect(root)
    assert [r["state"] for r in rows if r["name"] == "betavae-beta4-s1"] == ["running"]
    b4 = summarize(rows)[1]
    assert (b4["scored"], b4["recon_mean"], b4["recon_std"]) == (1, 45.0, None)


def test_tradeoff_figure_has_one_labelled_point_per_setting(tmp_path):
    fig = tradeoff_figure(summarize(collect(_fake_sweep(tmp_path))))
    ax = fig.axes[0]
    assert sorted(t.get_text() for t in ax.texts) == ["1", "4", "40"]
    assert ax.get_xlabel().startswith("reconstruction error") and "metric" in ax.get_ylabel()
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["β-VAE", "FactorVAE"]


def test_report_files_and_self_contained_html(tmp_path):
    root = _fake_sweep(tmp_path / "sw", missing_seed_of=("betavae", 1.0))
    assert main(["report", str(root)]) == 0  # the report command sees sweep.json and writes the sweep report
    page = (root / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 3  # trade-off figure, curves, TC against β and γ
    assert (root / "tradeoff.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (root / "curves.png").is_file()
    assert (root / "tc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert "β=4" in page and "0.750 ± 0.071" in page and "non-finite loss" in page
    md = (root / "summary.md").read_text()
    row = "| FactorVAE | γ=40 | 20 | 2/2 | 0.850 ± 0.071 | 45.0 ± 1.4 | 0.600 ± 0.141 | 0.425 ± 0.035 | 0.150 ± 0.035 |"
    assert row in md
    assert "| β-VAE | β=1 | 20 | 1/2 | 0.600 |" in md
    csv_lines = (root / "summary.csv").read_text().splitlines()
    assert csv_lines[0].startswith("model,param,value,runs,scored,metric_mean") and len(csv_lines) == 4
    assert write_sweep_report(root) == root / "report.html"


def test_not_a_sweep_folder(tmp_path):
    with pytest.raises(FileNotFoundError):
        collect(tmp_path)
