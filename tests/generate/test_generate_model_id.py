"""A logged generation is reused only for the very model that wrote it (its name and model_id)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from derta.backends import Decoding, ScriptedBackend
from derta.generate import META_SUFFIX, read_generations, run_generation
from derta.records import AttackPrompt, Message


def make_prompts(n: int, text: str = "question") -> list[AttackPrompt]:
    return [AttackPrompt(id=f"q{i}", question=f"{text} {i}", attack="direct", messages=[Message("user", f"{text} {i}")]) for i in range(n)]


def says(word: str) -> ScriptedBackend:
    return ScriptedBackend(lambda p: f"{word}: {p.question}", name="m")


def test_a_changed_model_generates_again_and_the_log_only_grows(tmp_path):
    out, prompts, dec = tmp_path / "gen.jsonl", make_prompts(3), Decoding(max_new_tokens=8)
    first = run_generation(says("old"), prompts, out, decoding=dec, model_id="aaa")
    assert [g.metadata["model_id"] for g in first] == ["aaa"] * 3
    before = out.read_bytes()

    same = says("old")
    assert [g.response for g in run_generation(same, prompts, out, decoding=dec, model_id="aaa")] == [g.response for g in first]
    assert same.calls == [] and out.read_bytes() == before  # the same model: all reused

    changed = says("new")
    got = run_generation(changed, prompts, out, decoding=dec, model_id="bbb")
    assert [i for call in changed.calls for i in call] == ["q0", "q1", "q2"]
    assert [g.response for g in got] == [f"new: question {i}" for i in range(3)]  # the old model's records are not returned
    assert out.read_bytes().startswith(before) and len(read_generations(out)) == 6  # appended, never rewritten
    runs = json.loads(Path(str(out) + META_SUFFIX).read_text())["runs"]
    assert [(r["model_id"], r["n_reused"], r["n_generated"]) for r in runs] == [("aaa", 0, 3), ("aaa", 3, 0), ("bbb", 0, 3)]

    back = says("old")  # the first model again: its own records
    assert [g.response for g in run_generation(back, prompts, out, decoding=dec, model_id="aaa")] == [g.response for g in first]
    assert back.calls == []


def test_records_without_a_model_id_serve_only_callers_without_one(tmp_path):
    out, prompts = tmp_path / "gen.jsonl", make_prompts(2)
    plain = run_generation(says("plain"), prompts, out)
    assert all("model_id" not in g.metadata for g in plain)
    again = says("plain")
    run_generation(again, prompts, out)
    assert again.calls == []  # as before model ids: reused
    keyed = says("keyed")
    assert [g.response for g in run_generation(keyed, prompts, out, model_id="aaa")] == ["keyed: question 0", "keyed: question 1"]
    later = says("plain")
    assert [g.response for g in run_generation(later, prompts, out)] == [g.response for g in plain] and later.calls == []


def test_the_changed_prompt_check_compares_records_of_the_same_model_only(tmp_path):
    out = tmp_path / "gen.jsonl"
    run_generation(says("a"), make_prompts(1), out, model_id="aaa")
    changed = make_prompts(1, text="another question")
    with pytest.raises(ValueError, match="differs from the one logged"):
        run_generation(says("a"), changed, out, model_id="aaa")
    got = run_generation(says("b"), changed, out, model_id="bbb")  # another model: nothing of its own is logged
    assert [g.response for g in got] == ["b: another question 0"]
