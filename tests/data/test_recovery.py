"""The recovery recipe (Qi et al.'s safety recovery augmentation): its k distribution, bound and budget."""

from __future__ import annotations

import json
import math
import random
from collections import Counter

import pytest

from derta.data.recipes import RecipeConfig, build
from derta.data.render import Renderer
from derta.records import IGNORE_INDEX, HelpfulExample, Triple


def triples(n: int, harmful_words: int = 150, seed: int = 0) -> list[Triple]:
    rng = random.Random(seed)
    return [Triple(query=f"How do I do bad thing {i}?", safe_response=f"Sorry, I cannot help with bad thing {i}.",
                   harmful_response=" ".join(rng.choice(["step", "get", "the", "tools", "then", "hide"]) for _ in range(harmful_words)),
                   id=f"t{i}") for i in range(n)]


def test_k_is_zero_for_half_and_uniform_on_1_to_100_otherwise():
    n = 4000
    out = build("recovery", triples(n), cfg=RecipeConfig(prefix_unit="words", seed=3))
    ks = [x.harmful_prefix.k for x in out]
    assert len(ks) == n
    zeros = sum(k == 0 for k in ks)
    # k = 0 ~ Binomial(n, 1/2): within 4 standard deviations
    assert abs(zeros - n / 2) < 4 * math.sqrt(n / 4)
    rest = [k for k in ks if k > 0]
    m = len(rest)
    assert min(rest) == 1 and max(rest) == 100  # |h| = 150 words: the bound is 100, never the response
    # U[1, 100]: mean 50.5, sd sqrt((100² − 1)/12); and ten buckets of ten values each ~ Binomial(m, 1/10)
    assert abs(sum(rest) / m - 50.5) < 4 * math.sqrt((100**2 - 1) / 12) / math.sqrt(m)
    buckets = Counter((k - 1) // 10 for k in rest)
    assert set(buckets) == set(range(10))
    assert all(abs(c - m / 10) < 4 * math.sqrt(m * 0.1 * 0.9) for c in buckets.values())


def test_k_never_exceeds_a_short_response():
    out = build("recovery", triples(2000, harmful_words=7), cfg=RecipeConfig(prefix_unit="words"))
    ks = Counter(x.harmful_prefix.k for x in out)
    assert set(ks) == set(range(8))  # 0 (half) and every cut 1..|h| = 7 words, the whole response included
    assert all(x.metadata["k_max"] == 7 for x in out)


def test_tokens_are_counted_by_count_units():
    lengths = {t.harmful_response: 3 + i % 40 for i, t in enumerate(triples(500))}
    out = build("recovery", triples(500), cfg=RecipeConfig(count_units=lambda h: lengths[h]))
    assert all(x.harmful_prefix.unit == "tokens" and 0 <= x.harmful_prefix.k <= lengths[x.harmful_prefix.text] for x in out)
    assert any(x.harmful_prefix.k == lengths[x.harmful_prefix.text] for x in out)
    # uncounted tokens: k ~ U[1, 100], the renderer stops a longer cut at the end of h
    uncounted = build("recovery", triples(500), cfg=RecipeConfig())
    assert max(x.harmful_prefix.k for x in uncounted) > 50 and all(x.metadata["k_max"] == 100 for x in uncounted)


def test_budget_and_triples_are_the_other_recipes():
    ts = triples(10)
    cfg = RecipeConfig(instances=8, prefix_unit="words")
    rec, pre = build("recovery", ts, cfg=cfg), build("harmful-prefix", ts, cfg=cfg)
    assert len(rec) == len(pre) == len(build("vanilla", ts, cfg=cfg)) == 8
    assert {x.metadata["triple_id"] for x in rec} == {x.metadata["triple_id"] for x in pre} == {f"t{i}" for i in range(8)}
    assert all(x.objective == "mle" and x.source == "safety" and x.recipe == "recovery" and x.target == ts[int(x.metadata["triple_id"][1:])].safe_response
               for x in rec)
    assert len({x.id for x in rec}) == 8
    helpful = build("recovery", ts, [HelpfulExample(f"q{i}", f"a{i}") for i in range(8)], cfg, helpful_ratio=0.5)
    assert sum(x.source == "helpful" for x in helpful) == 4 and len(helpful) == 12
    with pytest.raises(ValueError, match="needs 11 triples"):
        build("recovery", ts, cfg=RecipeConfig(instances=11))


def test_seeded():
    def ks(seed: int) -> list[int]:
        return [x.harmful_prefix.k for x in build("recovery", triples(50), cfg=RecipeConfig(seed=seed, prefix_unit="words"))]

    assert ks(1) == ks(1) != ks(2)


def test_k_zero_renders_the_vanilla_pair_and_k_renders_k_harmful_tokens(bpe_tokenizer):
    ts = triples(40, harmful_words=30)
    tok = bpe_tokenizer
    r = Renderer(tok, tok.convert_tokens_to_ids("ĠSorry"), template="chat")
    vanilla = {x.metadata["triple_id"]: r(x) for x in build("vanilla", ts)}
    out = build("recovery", ts)
    assert {x.harmful_prefix.k == 0 for x in out} == {True, False}
    for x in out:
        row, plain = r(x), vanilla[x.metadata["triple_id"]]
        k = x.harmful_prefix.k
        if k == 0:
            assert (row.input_ids, row.labels) == (plain.input_ids, plain.labels)
            continue
        prompt = len(r.prompt_ids(r.turn(x)))
        n_h = len(r.ids(r.turn(x).lead + x.harmful_prefix.text))
        context = len(row.input_ids) - prompt - sum(lab != IGNORE_INDEX for lab in row.labels)
        assert context == min(k, n_h)
        assert row.input_ids[prompt : prompt + context] == r.ids(r.turn(x).lead + x.harmful_prefix.text)[:context]
        assert all(lab == IGNORE_INDEX for lab in row.labels[: prompt + context])


def test_derta_data_build_recipe_recovery(tmp_path, bpe_tokenizer):
    from derta.cli import main
    from derta.io import write_jsonl

    src = write_jsonl(tmp_path / "t.jsonl", [t.to_dict() for t in triples(30, harmful_words=12)])
    tok_dir = tmp_path / "tok"
    bpe_tokenizer.save_pretrained(tok_dir)
    out = tmp_path / "d.jsonl"
    assert main(["data", "build", "--recipe", "recovery", "--triples", str(src), "--fixed-k", "--tokenizer", str(tok_dir), "--out", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    meta = json.loads((tmp_path / "d.meta.json").read_text())
    assert len(rows) == 30 and meta["recipe_config"]["recovery_zero_share"] == 0.5 and meta["recipe_config"]["recovery_max_k"] == 100
    for row in rows:
        n = len(bpe_tokenizer(" " + row["harmful_prefix"]["text"], add_special_tokens=False)["input_ids"])
        assert row["metadata"]["k_max"] == min(100, n) and 0 <= row["harmful_prefix"]["k"] <= n
