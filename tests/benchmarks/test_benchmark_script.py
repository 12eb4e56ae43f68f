"""benchmarks/run.py in its --smoke mode: the JSON's schema, never its values."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RUN = REPO / "benchmarks" / "run.py"
NAMES = ("train_vs_padmax", "train_vs_reference", "train_vs_trl_packed", "derta_vs_sft", "gen_batched_vs_single", "gen_token_budget_vs_count")


def valid(entry: dict) -> bool:
    """A positive finite median/min/max, or all three "not available" with a reason."""
    keys = ("median", "min", "max")
    if all(entry[k] == "not available" for k in keys):
        return isinstance(entry.get("reason"), str) and bool(entry["reason"].strip()) and entry["rounds"] == 0
    return (all(isinstance(entry[k], (int, float)) and math.isfinite(entry[k]) and entry[k] > 0 for k in keys)
            and entry["min"] <= entry["median"] <= entry["max"] and isinstance(entry["rounds"], int) and entry["rounds"] >= 1)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("bench") / "smoke.json"
    proc = subprocess.run([sys.executable, str(RUN), "--smoke", "--json", str(out)], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "train_vs_padmax" in proc.stdout  # the table is printed
    return json.loads(out.read_text())


def test_smoke_json_has_the_machine_and_every_named_ratio(smoke):
    for key in ("cpu", "cores", "torch", "transformers", "date", "torch_threads"):
        assert smoke["machine"][key] not in (None, ""), key
    assert smoke["machine"]["torch_threads"] == 1
    assert set(NAMES) <= set(smoke["ratios"])
    assert "judge_responses_per_s" in smoke["rates"]
    assert any(name.startswith("loss_memory_builtin_over_derta_") for name in smoke["ratios"])
    assert smoke["workload"]["source"] and smoke["workload"]["judge_source"]


def test_every_ratio_and_rate_is_positive_finite_or_not_available_with_a_reason(smoke):
    entries = {**smoke["ratios"], **smoke["rates"]}
    assert entries
    bad = {name: e for name, e in entries.items() if not valid(e)}
    assert not bad, bad
    measured = [e for e in entries.values() if e["median"] != "not available"]
    assert len(measured) >= len(entries) // 2  # most arms really ran


def test_schema_check_rejects_bad_entries():
    assert not valid({"median": 0.0, "min": 0.0, "max": 0.0, "rounds": 1})
    assert not valid({"median": float("inf"), "min": 1.0, "max": float("inf"), "rounds": 1})
    assert not valid({"median": "not available", "min": "not available", "max": "not available", "rounds": 0, "reason": ""})
    assert valid({"median": 1.5, "min": 1.2, "max": 2.0, "rounds": 3})


def test_a_failing_arm_is_reported_not_available_and_the_others_still_run():
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        from bench_timing import Unavailable, interleaved, is_valid_entry, ratio
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    calls = []

    def arm(name: str, value: float):
        def run(warm: bool = False) -> float:
            calls.append((name, warm))
            return value
        return run

    def missing(warm: bool = False) -> float:
        raise Unavailable("TrainConfig has no field packing")

    values, errors = interleaved({"a": arm("a", 6.0), "b": arm("b", 2.0), "c": missing}, rounds=2)
    assert calls == [("a", True), ("b", True), ("a", False), ("b", False), ("a", False), ("b", False)]  # A, B, A, B after a warm-up
    assert values["a"] == [6.0, 6.0] and errors == {"c": "TrainConfig has no field packing"}
    assert ratio(values, errors, "a", "b") == {"median": 3.0, "min": 3.0, "max": 3.0, "rounds": 2}
    gone = ratio(values, errors, "c", "a")
    assert gone["median"] == "not available" and "no field packing" in gone["reason"] and is_valid_entry(gone)
