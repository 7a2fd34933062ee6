"""evaluate: run directory -> metrics -> eval.json, and periodic evaluation during training."""

import json

import pytest

from factorvae.config import make_config
from factorvae.data import DataError
from factorvae.evaluate import evaluate_run, format_table
from factorvae.training.loop import train

TINY = {"factorvae": {"num_train": 50, "num_eval": 50, "num_variance": 500, "vote_size": 20},
        "mig": {"num_train": 500}}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "run"
    return train(make_config(steps=4, batch_size=8, d_hidden=64, log_every=2), out, progress=False)


def test_evaluate_run_writes_and_merges_eval_json(run_dir):
    first = evaluate_run(run_dir, ["factorvae", "tc"], settings=TINY, tc_samples=300, progress=False)
    assert set(first) == {"factorvae", "tc"}
    assert first["factorvae"]["protocol"] == "paper" and first["factorvae"]["settings"]["num_train"] == 50
    assert 0.0 <= first["factorvae"]["score"] <= 1.0 and first["factorvae"]["step"] == 4
    assert first["tc"]["num_data"] == 300 and "tc_discriminator" in first["tc"]
    evaluate_run(run_dir, ["mig"], settings=TINY, progress=False)
    saved = json.loads((run_dir / "eval.json").read_text())
    assert set(saved) == {"factorvae", "tc", "mig"}  # later metrics merge into the file
    again = evaluate_run(run_dir, ["factorvae"], settings=TINY, progress=False)
    assert again["factorvae"]["score"] == first["factorvae"]["score"]  # same seed, same number
    table = format_table(first)
    assert table.splitlines()[0].split() == ["metric", "score", "protocol", "details"]
    assert f"{first['factorvae']['score']:.4f}" in table


def test_cli_set_overrides_a_metric_setting(run_dir, capsys):
    from factorvae.cli import main

    assert main(["evaluate", str(run_dir), "--metrics", "mig,sap", "--device", "cpu", "--set", "mig.num_train=700",
                 "--set", "sap.num_train=600", "--set", "sap.num_test=300", "--set", "sap.solver=liblinear"]) == 0
    saved = json.loads((run_dir / "eval.json").read_text())
    assert saved["mig"]["settings"]["num_train"] == 700 and saved["mig"]["settings"]["num_bins"] == 20
    assert saved["sap"]["settings"]["solver"] == "liblinear" and saved["sap"]["settings"]["num_test"] == 300
    assert "mig" in capsys.readouterr().out


def test_unknown_metric_is_refused(run_dir):
    with pytest.raises(DataError, match="unknown metric"):
        evaluate_run(run_dir, ["accuracy"])


def test_periodic_evaluation_logs_metric_against_step(tmp_path, monkeypatch):
    import factorvae.evaluate as ev

    monkeypatch.setattr(ev, "TC_SAMPLES", 200)
    real = ev.evaluate_method

    def small(*args, **kw):  # the paper protocol would take minutes; the wiring is what is tested here
        kw.setdefault("settings", TINY)
        return real(*args, **kw, tc_samples=200)

    monkeypatch.setattr(ev, "evaluate_method", small)
    cfg = make_config(steps=4, batch_size=8, d_hidden=64, log_every=2, eval_every=2)
    out = train(cfg, tmp_path / "r", progress=False)
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [2, 4]
    assert all("factorvae" in r and "tc_true" in r for r in lines)
