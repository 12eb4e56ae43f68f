"""The deception scenario suite: the built-in suite's shape, user files, and validation errors."""

from __future__ import annotations

import copy
import json
from collections import Counter

import pytest
import yaml

from derta.deception.scenarios import MIN_FOLLOWUPS, builtin_path, load_suite, pairs
from derta.io import DataError


@pytest.fixture(scope="module")
def suite():
    return load_suite()


def test_builtin_suite_size_and_categories(suite):
    assert suite.name == "derta-deception" and suite.version
    assert len(suite.scenarios) >= 40
    cats = Counter(s.category for s in suite.scenarios)
    assert len(cats) >= 6
    for needed in ("hiring-discrimination", "deceptive-sales", "privacy-violation", "illegal-business-shortcuts",
                   "academic-dishonesty", "unsafe-medical-advice"):
        assert cats[needed] >= 4, needed
    assert len({s.id for s in suite.scenarios}) == len(suite.scenarios)


def test_every_builtin_scenario_is_complete(suite):
    for s in suite.scenarios:
        assert s.system and s.request and s.undesired and s.title, s.id
        assert len(s.followups) >= MIN_FOLLOWUPS, s.id
        assert s.detect.undesired, f"{s.id}: the offline classifier needs at least one undesired pattern"
        assert s.rebuttal.request.startswith(("to ", "how to ")), s.id  # reads after "You are asking me"
        assert s.version >= 1


def test_sensitive_and_control_pairs_are_matched(suite):
    ps = pairs(suite)
    assert len(ps) >= 5
    paired = {s.id for p in ps for s in p}
    assert {s.id for s in suite.scenarios if s.pair} == paired  # every pair link belongs to a pair
    for sensitive, control in ps:
        assert not sensitive.control and control.control
        assert sensitive.pair == control.id and control.pair == sensitive.id
        assert sensitive.category == control.category
        # A matched control: same role, same output format and detection, a different attribute.
        assert sensitive.system == control.system and sensitive.detect == control.detect
        assert sensitive.attribute and control.attribute and sensitive.attribute != control.attribute
        assert sensitive.request != control.request


def test_suite_hash_follows_content_not_formatting(suite, tmp_path):
    data = yaml.safe_load(builtin_path().read_text())
    same = tmp_path / "same.yaml"
    same.write_text(yaml.safe_dump(data, width=60, sort_keys=True))  # reformatted, same content
    assert load_suite(same).sha256 == suite.sha256
    data["scenarios"][0]["request"] += " Thanks."
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(data))
    assert load_suite(changed).sha256 != suite.sha256
    assert suite.info()["n_scenarios"] == len(suite.scenarios) and len(suite.sha256) == 16


def minimal(**over) -> dict:
    row = {
        "id": "s1", "category": "sales", "system": "You write emails.", "request": "Lie to the customer.",
        "undesired": "The email lies.", "detect": {"undesired": ["\\blie\\b"]},
        "rebuttal": {"request": "to lie to the customer", "harm": "it deceives them"},
        "followups": ["Do it.", "Please.", "Now."],
    }
    row.update(over)
    return row


def test_user_scenarios_from_jsonl_and_yaml_list(tmp_path):
    rows = [minimal(), minimal(id="s2", control=True, pair="s3"), minimal(id="s3", pair="s2")]
    jl = tmp_path / "mine.jsonl"
    jl.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    s = load_suite(jl)
    assert [x.id for x in s.scenarios] == ["s1", "s2", "s3"] and s.name == "mine"
    assert [(a.id, b.id) for a, b in pairs(s)] == [("s3", "s2")]
    yl = tmp_path / "mine.yaml"
    yl.write_text(yaml.safe_dump(rows))
    assert load_suite(yl).sha256 == s.sha256
    assert [x.id for x in s.select(["s2"]).scenarios] == ["s2"]
    assert len(s.select(["sales"]).scenarios) == 3
    with pytest.raises(ValueError, match="'nope'"):
        s.select(["nope"])


def _bad(tmp_path, rows: list[dict]) -> str:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"suite": "t", "version": "1", "scenarios": rows}))
    with pytest.raises(DataError) as e:
        load_suite(path)
    msg = str(e.value)
    assert str(path) in msg
    return msg


@pytest.mark.parametrize(
    ("change", "expect"),
    [
        (lambda r: r.pop("request"), ["'s1'", "'request'", "missing"]),
        (lambda r: r.update(request=""), ["'s1'", "'request'", "empty"]),
        (lambda r: r.update(followups=["only one", "two"]), ["'s1'", "'followups'", "at least 3"]),
        (lambda r: r.update(followups=["a", "b", 3]), ["'s1'", "'followups[2]'"]),
        (lambda r: r.update(detect={"undesired": ["(unclosed"]}), ["'s1'", "'detect.undesired[0]'", "regular expression"]),
        (lambda r: r.update(detect={"undesired": ["x"], "precedence": "maybe"}), ["'detect.precedence'"]),
        (lambda r: r.update(detect={"undesired": ["x"], "min_word": 3}), ["'detect.min_word'", "unknown"]),
        (lambda r: r.update(control="yes"), ["'s1'", "'control'", "true or false"]),
        (lambda r: r.update(version=0), ["'s1'", "'version'"]),
        (lambda r: r.update(folowups=["a"]), ["'s1'", "'folowups'", "unknown field"]),
        (lambda r: r.update(id="has space"), ["'has space'", "'id'"]),
        (lambda r: r.update(rebuttal={"request": "to x"}), ["'s1'", "'rebuttal.harm'"]),
        (lambda r: r.pop("rebuttal"), ["'s1'", "'rebuttal'", "missing"]),
        (lambda r: r.update(pair="ghost"), ["'s1'", "'pair'", "'ghost'"]),
    ],
)
def test_validation_errors_name_file_id_and_field(tmp_path, change, expect):
    row = minimal()
    change(row)
    msg = _bad(tmp_path, [row])
    for part in expect:
        assert part in msg, (part, msg)


def test_pair_errors(tmp_path):
    a, b = minimal(id="a", pair="b"), minimal(id="b", pair="a", control=True)
    msg = _bad(tmp_path, [a, {**b, "pair": ""}])
    assert "'a'" in msg and "'pair'" in msg and "name 'a' back" in msg
    msg = _bad(tmp_path, [a, {**b, "control": False}])
    assert "'control'" in msg and "exactly one" in msg
    msg = _bad(tmp_path, [a, {**b, "category": "other"}])
    assert "'category'" in msg and "differs from its pair" in msg
    msg = _bad(tmp_path, [a, copy.deepcopy(a)])
    assert "'a'" in msg and "duplicate" in msg
    msg = _bad(tmp_path, [{**a, "pair": "a"}])
    assert "own pair" in msg


def test_file_level_errors(tmp_path):
    with pytest.raises(DataError, match="no such scenario file"):
        load_suite(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("scenarios: [\n  {id: x\n")
    with pytest.raises(DataError, match=r"bad\.yaml.*invalid YAML"):
        load_suite(bad)
    bad.write_text(yaml.safe_dump({"scenarios": [minimal()], "extra": 1}))
    with pytest.raises(DataError, match="unknown top-level key"):
        load_suite(bad)
    jl = tmp_path / "x.jsonl"
    jl.write_text(json.dumps(minimal()) + "\n" + json.dumps(minimal(id="s2", category=3)) + "\n")
    with pytest.raises(DataError, match=r"x\.jsonl:2: scenario 's2': field 'category'"):
        load_suite(jl)
