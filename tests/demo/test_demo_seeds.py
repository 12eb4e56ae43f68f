"""Several demo seeds: the aggregation of per-seed summaries into ranges (no training)."""

import json

import pytest

from derta.cli import main
from derta.demo import seeds as multi


def summary(vanilla_completion: float, derta_completion: float, over_refusal: float, degenerate: float | None = None) -> dict:
    def method(completion: float) -> dict:
        m = {"attacks": {"direct": {"asr": 0.25}, "completion": {"asr": completion}, "prefill-5": {"asr": completion / 2},
                         "follow-up-own": {"asr": 0.0}},
             "helpfulness": 0.9, "over_refusal": over_refusal}
        if degenerate is not None:
            m["degenerate"] = {"rate": degenerate, "k": 1, "n": 10}
        return m

    return {"methods": {"vanilla": method(vanilla_completion), "derta": method(derta_completion)}, "seconds": 10.0,
            "world": {"benign_test": 200}, "judge": {"name": "toy-world"}}


def test_ranges_and_per_seed_values():
    agg = multi.aggregate({2: summary(0.9, 0.0, 0.02, 0.1), 0: summary(1.0, 0.03, 0.01, 0.0), 1: summary(0.95, 0.01, 0.04, 0.05)})
    assert agg["seeds"] == [0, 1, 2]
    c = agg["methods"]["vanilla"]["completion"]
    assert (c["min"], c["max"]) == (0.9, 1.0)
    assert c["per_seed"] == {"0": 1.0, "1": 0.95, "2": 0.9}  # in seed order, whatever the input order
    d = agg["methods"]["derta"]
    assert (d["over_refusal"]["min"], d["over_refusal"]["max"]) == (0.01, 0.04)
    assert (d["degenerate"]["min"], d["degenerate"]["max"]) == (0.0, 0.1)
    assert d["prefill-5"]["max"] == pytest.approx(0.015)


def test_missing_figures_are_left_out_of_the_range():
    a, b = summary(0.9, 0.0, 0.0), summary(1.0, 0.0, 0.0, degenerate=0.2)  # seed 0 predates the degenerate count
    del b["methods"]["derta"]
    agg = multi.aggregate({0: a, 1: b})
    assert agg["methods"]["vanilla"]["degenerate"] == {"per_seed": {"0": None, "1": 0.2}, "min": 0.2, "max": 0.2}
    assert agg["methods"]["derta"]["completion"]["per_seed"] == {"0": 0.0, "1": None}


def test_tables_show_ranges():
    agg = multi.aggregate({0: summary(0.75, 0.0, 0.125), 1: summary(0.8125, 0.0, 0.094)})
    assert multi.columns(agg) == ["direct", "completion", "prefill-5", "helpfulness", "over_refusal"]
    assert multi.columns(agg, follow_up=True) == ["follow-up-own"]
    text = multi.table(agg)
    assert "75.0–81.2" in text and "9.4–12.5" in text
    md = multi.markdown(agg)
    assert "| vanilla | 25.0 | 75.0–81.2 | 37.5–40.6 | 90.0 | 9.4–12.5 |" in md
    assert "| vanilla | completion | 75.0 / 81.2 | 75.0–81.2 |" in md


def test_write(tmp_path):
    agg = multi.aggregate({0: summary(1.0, 0.0, 0.0)})
    multi.write(agg, tmp_path / "out")
    assert json.loads((tmp_path / "out" / "seeds.json").read_text())["methods"]["derta"]["completion"]["max"] == 0.0
    assert (tmp_path / "out" / "seeds.md").read_text().startswith("# derta demo: seeds 0")


def test_bad_seeds_are_a_clear_error(capsys, tmp_path):
    assert main(["demo", "--seeds", "0,x", "--out", str(tmp_path)]) == 2
    assert "--seeds" in capsys.readouterr().err
    assert main(["demo", "--seeds", "1,1", "--out", str(tmp_path)]) == 2


def test_real_is_handed_to_the_real_demo(monkeypatch, tmp_path):
    import sys
    import types

    seen = {}
    fake = types.ModuleType("derta.demo.real")
    fake.main = lambda args: seen.update(vars(args)) or 7
    monkeypatch.setitem(sys.modules, "derta.demo.real", fake)
    assert main(["demo", "--real", "--quick", "--model", "some/model", "--seeds", "0,1", "--out", str(tmp_path)]) == 7
    assert seen["real"] and seen["quick"] and seen["model"] == "some/model" and seen["seeds"] == "0,1"
    assert not (tmp_path / "seeds.json").exists()  # nothing of the toy demo ran
