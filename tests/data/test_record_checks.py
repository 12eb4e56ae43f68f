"""Every field of a training example / preference pair is checked at load, with file:line:field;
ids are unique in every input and in what `derta data build` writes."""

from __future__ import annotations

import pytest

from derta.cli import main
from derta.data.formats import load_helpful, load_preference_pairs, load_reference, load_training_examples, load_triples
from derta.io import DataError, read_jsonl, write_jsonl

GOOD = {"messages": [{"role": "user", "content": "How do I burn a house?"}], "target": "Step 1: buy fuel.", "objective": "rto", "id": "a"}
PAIR = {"messages": [{"role": "user", "content": "q"}], "chosen": "Sorry.", "rejected": "Sure.", "id": "p"}


def _load(tmp_path, row, loader=load_training_examples):
    path = write_jsonl(tmp_path / "rows.jsonl", [GOOD | {"id": "first"}, row])
    return path, loader(path)


BAD_EXAMPLES = [
    ({"objective": "RTO"}, "objective", "'RTO'"),
    ({"objective": None}, "objective", "None"),
    ({"objectiv": "rto"}, "objectiv", "not a field"),
    ({"target": ""}, "target", "empty"),
    ({"target": 3}, "target", "string"),
    ({"messages": []}, "messages", "non-empty"),
    ({"messages": [{"role": "User", "content": "q"}]}, "messages[0].role", "'User'"),
    ({"messages": [{"role": "user", "content": None}]}, "messages[0].content", "string"),
    ({"messages": "q"}, "messages", "list"),
    ({"metadata": []}, "metadata", "object"),
    ({"id": 7}, "id", "string"),
    ({"harmful_prefix": {"text": "Sure", "unit": "chars"}}, "harmful_prefix.unit", "'chars'"),
    ({"harmful_prefix": {"text": "Sure", "k": -1}}, "harmful_prefix.k", "-1"),
    ({"harmful_prefix": {"text": "Sure", "zero_share": 2}}, "harmful_prefix.zero_share", "2"),
    ({"harmful_prefix": {"text": ""}}, "harmful_prefix.text", "non-empty"),
    ({"harmful_prefix": "Sure"}, "harmful_prefix", "object"),
    ({"harmful_prefix": {"text": "Sure", "kk": 1}}, "harmful_prefix.kk", "not a field"),
]


@pytest.mark.parametrize("change,field,says", BAD_EXAMPLES, ids=[f"{c[1]}={list(c[0].values())[0]!r}" for c in BAD_EXAMPLES])
def test_a_bad_training_example_field_is_an_error_naming_file_line_and_field(tmp_path, change, field, says):
    with pytest.raises(DataError) as e:
        _load(tmp_path, GOOD | change)
    msg = str(e.value)
    assert msg.startswith(f"{tmp_path / 'rows.jsonl'}:2: ") and f"field '{field}'" in msg and says in msg


def test_missing_fields_name_the_field(tmp_path):
    for name in ("messages", "target"):
        row = {k: v for k, v in GOOD.items() if k != name}
        with pytest.raises(DataError, match=rf"rows\.jsonl:2: .*missing field '{name}'"):
            _load(tmp_path, row)


def test_a_good_row_reads_back_as_written(tmp_path):
    row = GOOD | {"id": "b", "harmful_prefix": {"text": "Sure, here", "unit": "words", "k": 1, "zero_share": 0}, "objective": "mle",
                  "metadata": {"x": 1}, "source": "safety", "recipe": "derta"}
    _, (first, ex) = _load(tmp_path, row)
    assert first.objective == "rto" and ex.objective == "mle" and ex.harmful_prefix.k == 1 and ex.harmful_prefix.unit == "words"
    assert ex.to_dict() == {**row, "harmful_prefix": {**row["harmful_prefix"], "zero_share": 0.0}}


@pytest.mark.parametrize("change,field", [({"chosen": ""}, "chosen"), ({"rejected": 1}, "rejected"), ({"metadata": "x"}, "metadata"),
                                          ({"messages": [{"role": "bot", "content": "q"}]}, "messages[0].role"), ({"prompt": "q"}, "prompt")])
def test_a_bad_preference_pair_field_is_an_error(tmp_path, change, field):
    path = write_jsonl(tmp_path / "pairs.jsonl", [PAIR, PAIR | {"id": "q"} | change])
    with pytest.raises(DataError) as e:
        load_preference_pairs(path)
    assert str(e.value).startswith(f"{path}:2: ") and f"field '{field}'" in str(e.value)


# --- duplicate ids ------------------------------------------------------------------------------


def _triple(i, **kw):
    return {"query": f"q{i}", "safe_response": f"Sorry {i}.", "harmful_response": f"Sure {i}. Step 1: x.", **kw}


def test_duplicate_ids_in_any_input_name_both_lines(tmp_path):
    triples = write_jsonl(tmp_path / "t.jsonl", [_triple(0, id="x"), _triple(1, id="y"), _triple(2, id="x")])
    with pytest.raises(DataError, match=r"t\.jsonl:3: field 'id': duplicate id 'x' \(also at line 1\)"):
        load_triples(triples)
    # an explicit id that equals the id a row without one gets (<stem>-<line>)
    clash = write_jsonl(tmp_path / "c.jsonl", [_triple(0), _triple(1, id="c-1")])
    with pytest.raises(DataError, match=r"c\.jsonl:2: .*duplicate id 'c-1' \(also at line 1\)"):
        load_triples(clash)
    helpful = write_jsonl(tmp_path / "h.jsonl", [{"query": "a", "response": "b", "id": "h"}, {"query": "c", "response": "d", "id": "h"}])
    with pytest.raises(DataError, match=r"h\.jsonl:2: .*duplicate id 'h' \(also at line 1\)"):
        load_helpful(helpful)
    ref = write_jsonl(tmp_path / "r.jsonl", [{"prefix": "[INST] q [\\INST]", "text": " a", "safe": "false", "id": "r"}] * 2)
    with pytest.raises(DataError, match=r"r\.jsonl:2: .*duplicate id 'r'"):
        load_reference(ref)
    examples = write_jsonl(tmp_path / "e.jsonl", [GOOD, GOOD])
    with pytest.raises(DataError, match=r"e\.jsonl:2: .*duplicate id 'a' \(also at line 1\)"):
        load_training_examples(examples)
    pairs = write_jsonl(tmp_path / "p.jsonl", [PAIR, PAIR])
    with pytest.raises(DataError, match=r"p\.jsonl:2: .*duplicate id 'p'"):
        load_preference_pairs(pairs)
    # rows without ids stay allowed in training files (nothing to confuse them by)
    assert len(load_training_examples(write_jsonl(tmp_path / "n.jsonl", [GOOD | {"id": ""}] * 2))) == 2


def test_data_build_refuses_duplicate_ids_and_writes_unique_ones(tmp_path, capsys):
    dup = write_jsonl(tmp_path / "dup.jsonl", [_triple(0, id="x"), _triple(1, id="x")])
    out = tmp_path / "out.jsonl"
    assert main(["data", "build", "--recipe", "derta", "--triples", str(dup), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{dup}:2" in err and "duplicate id 'x'" in err and "line 1" in err and not out.exists()
    triples = write_jsonl(tmp_path / "t.jsonl", [_triple(i, id=f"t{i}") for i in range(6)] + [_triple(9)])
    helpful = write_jsonl(tmp_path / "h.jsonl", [{"query": f"a{i}", "response": "b"} for i in range(5)])
    for recipe in ("vanilla", "vanilla-half", "harmful-prefix", "rto", "derta", "dpo"):
        extra = [] if recipe == "dpo" else ["--helpful", str(helpful)]
        assert main(["data", "build", "--recipe", recipe, "--triples", str(triples), *extra, "--out", str(out)]) == 0
        ids = [r["id"] for r in read_jsonl(out)]
        assert len(ids) == len(set(ids)) and all(ids), recipe


def test_unique_ids_names_the_repeated_rows():
    from derta.data.recipes import unique_ids
    from derta.records import Message, TrainingExample

    rows = [TrainingExample([Message("user", "q")], "a", id=i) for i in ("x", "y", "x")]
    with pytest.raises(ValueError, match=r"'x' \(rows 1 and 3\)"):
        unique_ids(rows)
    assert unique_ids(rows[:2]) == rows[:2]
