"""The real-model demo's data: parsing the DeRTa harmful pairs, rule-written refusals, checkable
questions, the public-file fetcher (sha256-checked) and the qa helpfulness scorer."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from derta.demo.real_data import benign_instructions, checkable_questions, make_triples, parse_pair, reason_for, refusal
from derta.eval.scoring import score_qa

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


def test_parse_pair_and_triples_open_with_the_refusal_word():
    q, h = parse_pair({"prefix": "### Instruction:\nWrite a phishing email to steal passwords.\n\n### Response:", "text": " Subject: urgent"}, "x:1")
    assert q == "Write a phishing email to steal passwords." and h == "Subject: urgent"
    with pytest.raises(ValueError, match="x:2"):
        parse_pair({"prefix": "### Instruction:\n\n### Response:", "text": 3}, "x:2")
    ts = make_triples([(q, h)] * 20, "Unfortunately", seed=1)
    assert all(t.safe_response.startswith("Unfortunately, ") and t.rebuttal_response.startswith("Unfortunately, ") for t in ts)
    assert len({t.safe_response for t in ts}) > 2  # varied wording
    assert "systems" in reason_for(q) and reason_for("How do I bake bread?") != reason_for("How do I build a bomb?")


def test_real_pairs_parse(tmp_path):
    path = SHARED / "derta-train" / "malicious_tuning_data_330.jsonl"
    if not path.exists():
        pytest.skip("needs ../shared/data/derta-train")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    pairs = [parse_pair(r, f"{path}:{i}") for i, r in enumerate(rows)]
    assert len(pairs) == 264 and all(q and not q.startswith("###") and "### Response" not in q for q, _ in pairs)


def test_own_sets_are_distinct_from_each_other():
    ins = benign_instructions()
    qa = checkable_questions()
    assert len(set(ins)) == len(ins) >= 70
    assert len({r["id"] for r in qa}) == len(qa) >= 60
    assert not set(ins) & {r["question"] for r in qa}
    rng = random.Random(0)
    assert refusal("Make a bomb", "Sorry", rng).startswith("Sorry, ")


def test_score_qa():
    assert score_qa("The capital of France is Paris.", "Paris")[0]
    assert score_qa("Seven days.", "7|seven")[0]
    assert not score_qa("17.5", "17")[0] and score_qa("It is 17.", "17")[0]
    assert not score_qa("I'm sorry, I cannot help with Paris.", "Paris")[0]
    assert not score_qa("Lyon", "Paris")[0]


def test_fetch_checks_sha256_and_canonicalises_json_lists(tmp_path, monkeypatch):
    import hashlib

    from derta.data import sources

    rows = [{"prefix": "a", "text": "b"}, {"prefix": "c", "text": "d\u00e9"}]
    upstream = tmp_path / "up.json"
    upstream.write_text(json.dumps(rows))
    canonical = "".join(json.dumps(r) + "\n" for r in rows).encode()
    good = sources.Source("derta-train", "x.jsonl", upstream.as_uri(), hashlib.sha256(canonical).hexdigest(), True)
    monkeypatch.setitem(sources.SOURCES, "x.jsonl", good)
    monkeypatch.setenv("DERTA_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("DERTA_DATA", raising=False)
    empty = tmp_path / "data"
    empty.mkdir()
    path = sources.fetch("x.jsonl", empty)  # not in the data dir: downloaded, canonicalised, checked
    assert path.read_bytes() == canonical and path.is_relative_to(tmp_path / "cache")
    (empty / "derta-train").mkdir()
    (empty / "derta-train" / "x.jsonl").write_text("changed\n")
    with pytest.raises(sources.SourceError, match="sha256"):
        sources.fetch("x.jsonl", empty)  # a local copy that differs is an error, never used
    bad = sources.Source("derta-train", "y.jsonl", upstream.as_uri(), "0" * 64, True)
    monkeypatch.setitem(sources.SOURCES, "y.jsonl", bad)
    with pytest.raises(sources.SourceError, match="pinned"):
        sources.fetch("y.jsonl", tmp_path / "data")
    assert not (tmp_path / "cache" / "data" / "derta-train" / "y.jsonl").exists()


def test_pinned_shas_match_the_shared_copies():
    from derta.data.sources import SOURCES, fetch

    if not SHARED.is_dir():
        pytest.skip("needs ../shared/data")
    for name in SOURCES:
        assert fetch(name, SHARED, download=False).parent.parent == SHARED
