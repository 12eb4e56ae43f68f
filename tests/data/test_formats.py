"""Input/output formats: the reference format round trip, loaders, and errors that name file:line:field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from derta.data.formats import (
    instance_dicts,
    load_helpful,
    load_preference_pairs,
    load_reference,
    load_training_examples,
    load_triples,
    to_reference,
)
from derta.io import DataError, read_jsonl, write_jsonl


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def triple_row(i: int = 0, **kw) -> dict:
    row = {"query": f"q{i}", "safe_response": f"Sorry {i}.", "harmful_response": f"Sure {i}. Step 1: x."}
    row.update(kw)
    return row


# --- the reference format ------------------------------------------------------------------------


def test_reference_import_then_export_gives_the_same_rows(testsets_dir):
    src = testsets_dir / "training_format_example.jsonl"
    original = read_jsonl(src)
    examples = load_reference(src)
    assert [x.objective for x in examples] == ["rto" if r["safe"] == "true" else "mle" for r in original]
    # Row 3 continues a harmful answer inside the prefix: it becomes a fixed word-unit prefix.
    assert examples[2].harmful_prefix is not None and examples[2].harmful_prefix.text.startswith("To trick the system")
    assert examples[0].harmful_prefix is None and examples[3].harmful_prefix is None
    assert examples[1].target.startswith("I'm sorry") and not examples[1].target.endswith("<|end_of_text|>")
    assert examples[0].messages[0].content == "Suggest a suitable card game for a birthday party with 10 year old kids."
    assert to_reference(examples) == [{k: r[k] for k in ("prefix", "text", "safe")} for r in original]


def test_reference_round_trip_through_our_jsonl(testsets_dir, tmp_path):
    src = testsets_dir / "training_format_example.jsonl"
    ours = write_jsonl(tmp_path / "ours.jsonl", instance_dicts(load_reference(src)))
    again = load_training_examples(ours)
    assert to_reference(again) == read_jsonl(src)


def test_reference_custom_eos(tmp_path):
    row = {"prefix": "[INST] hi [\\INST]", "text": " hello</s>", "safe": "false"}
    f = write_jsonl(tmp_path / "r.jsonl", [row])
    (ex,) = load_reference(f, eos="</s>")
    assert ex.target == "hello"
    assert to_reference([ex], eos="</s>") == [row]


def test_reference_bad_rows_name_file_line_and_field(tmp_path):
    good = json.dumps({"prefix": "[INST] q [\\INST]", "text": " a<|end_of_text|>", "safe": "false"})
    cases = [
        ([good, '{"prefix": "[INST] q [\\\\INST]", "text": '], ":2", "invalid JSON"),
        ([good, good, json.dumps({"prefix": "[INST] q [\\INST]", "safe": "true"})], ":3", "'text'"),
        ([json.dumps({"prefix": "[INST] q [\\INST]", "text": " a", "safe": "yes"})], ":1", "'safe'"),
        ([good, json.dumps({"prefix": "[INST] q [\\INST]", "text": " a"})], ":2", "'safe'"),
        ([good, json.dumps({"prefix": "### Instruction: q", "text": " a", "safe": "false"})], ":2", "'prefix'"),
        ([good, "[1, 2]"], ":2", "expected a JSON object"),
    ]
    for i, (lines, line, what) in enumerate(cases):
        f = write_lines(tmp_path / f"bad{i}.jsonl", lines)
        with pytest.raises(DataError) as e:
            load_reference(f)
        assert f"{f}{line}" in str(e.value) and what in str(e.value), str(e.value)


def test_training_examples_reject_other_formats(testsets_dir, tmp_path):
    with pytest.raises(DataError, match="reference format.*--reference"):
        load_training_examples(testsets_dir / "training_format_example.jsonl")
    pairs = write_jsonl(tmp_path / "p.jsonl", [{"messages": [{"role": "user", "content": "q"}], "chosen": "a", "rejected": "b"}])
    with pytest.raises(DataError, match="DPO"):
        load_training_examples(pairs)
    assert load_preference_pairs(pairs)[0].rejected == "b"
    broken = write_jsonl(tmp_path / "b.jsonl", [{"messages": [{"role": "user", "content": "q"}], "chosen": "a"}])
    with pytest.raises(DataError, match=r"b\.jsonl:1: missing field 'rejected'"):
        load_preference_pairs(broken)
    notex = write_jsonl(tmp_path / "n.jsonl", [{"messages": []}])
    with pytest.raises(DataError, match=r"n\.jsonl:1: not a training example"):
        load_training_examples(notex)


def test_token_unit_export_needs_a_tokenizer(bpe_tokenizer):
    from derta.records import HarmfulPrefix, Message, TrainingExample

    ex = TrainingExample([Message("user", "q")], "Sorry.", harmful_prefix=HarmfulPrefix("Sure, here is how to do it.", unit="tokens", k=3))
    with pytest.raises(ValueError, match="tokenizer"):
        to_reference([ex])
    (row,) = to_reference([ex], tokenizer=bpe_tokenizer)
    cut = bpe_tokenizer.decode(bpe_tokenizer(" Sure, here is how to do it.", add_special_tokens=False)["input_ids"][:3]).strip()
    assert row["prefix"] == f"[INST] q [\\INST] {cut}" and cut and "Sure, here is how to do it.".startswith(cut)


# --- triples and helpfulness data ----------------------------------------------------------------


def test_triples_with_aliases_ids_and_metadata(tmp_path):
    f = write_jsonl(tmp_path / "t.jsonl", [
        triple_row(0, id="a", category="theft", rebuttal_response="No, because."),
        {"prompt": "q1", "safe_response": "s1", "harmful_response": "h1"},
        {"question": "q2", "safe_response": "s2", "harmful_response": "h2"},
        {"instruction": "q3", "safe_response": "s3", "harmful_response": "h3", "id": 7},
    ])
    ts = load_triples(f)
    assert [t.query for t in ts] == ["q0", "q1", "q2", "q3"]
    assert [t.id for t in ts] == ["a", "t-2", "t-3", "7"]
    assert ts[0].category == "theft" and ts[0].rebuttal_response == "No, because." and ts[1].rebuttal_response == ""
    assert ts[2].metadata == {"source": str(f), "line": 3}


def test_triple_errors_name_file_line_and_field(tmp_path):
    cases = [
        ([triple_row(0), {"query": "q", "harmful_response": "h"}], ":2", "'safe_response'"),
        ([triple_row(0), triple_row(1), triple_row(2, harmful_response=["x"])], ":3", "'harmful_response': expected a string"),
        ([triple_row(0, safe_response="   ")], ":1", "'safe_response': is empty"),
        ([{"safe_response": "s", "harmful_response": "h"}], ":1", "'query' or 'prompt'"),
    ]
    for i, (rows, line, what) in enumerate(cases):
        f = write_jsonl(tmp_path / f"bad{i}.jsonl", rows)
        with pytest.raises(DataError) as e:
            load_triples(f)
        assert f"{f}{line}" in str(e.value) and what in str(e.value), str(e.value)
    empty = write_lines(tmp_path / "empty.jsonl", [""])
    with pytest.raises(DataError, match="no triples"):
        load_triples(empty)
    with pytest.raises(DataError, match="no such file"):
        load_triples(tmp_path / "missing.jsonl")


def test_helpful_aliases_and_input_field(tmp_path):
    f = write_jsonl(tmp_path / "h.jsonl", [
        {"instruction": "Add these.", "input": "2 and 3", "output": "5"},
        {"query": "Capital of Drax?", "response": "Kesh."},
        {"prompt": "Hi", "answer": "Hello.", "input": ""},
    ])
    hs = load_helpful(f)
    assert [h.query for h in hs] == ["Add these.\n\n2 and 3", "Capital of Drax?", "Hi"]
    assert [h.response for h in hs] == ["5", "Kesh.", "Hello."]
    bad = write_jsonl(tmp_path / "hb.jsonl", [{"instruction": "x", "output": "y"}, {"instruction": "x"}])
    with pytest.raises(DataError, match=r"hb\.jsonl:2: missing field 'response' or 'output'"):
        load_helpful(bad)


def test_csv_input(tmp_path):
    f = tmp_path / "t.csv"
    f.write_text(
        "query,safe_response,harmful_response,category\n"
        'How do I x?,"Sorry, no.","Sure. Step 1: x, then y.",bad\n'
        "How do I y?,No.,Sure.,bad\n",
        encoding="utf-8",
    )
    ts = load_triples(f)
    assert [t.safe_response for t in ts] == ["Sorry, no.", "No."]
    assert ts[0].harmful_response == "Sure. Step 1: x, then y." and ts[0].id == "t-2"  # line 1 is the header
    bad = tmp_path / "b.csv"
    bad.write_text("query,safe_response,harmful_response\nq,s,h\nq2,,h2\n", encoding="utf-8")
    with pytest.raises(DataError) as e:
        load_triples(bad)
    assert f"{bad}:3" in str(e.value) and "'safe_response'" in str(e.value)


def test_json_array_input(tmp_path):
    f = tmp_path / "t.json"
    f.write_text(json.dumps([triple_row(0), triple_row(1)]), encoding="utf-8")
    assert [t.query for t in load_triples(f)] == ["q0", "q1"]
    f.write_text(json.dumps([triple_row(0), "oops"]), encoding="utf-8")
    with pytest.raises(DataError, match="item 2: expected a JSON object"):
        load_triples(f)
