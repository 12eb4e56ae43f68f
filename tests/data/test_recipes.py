"""Recipes (stage 1, no tokenizer): counts per the table in recipes.py, targets, mixing, seeds."""

from __future__ import annotations

import random

import pytest

from derta.data.recipes import RECIPES, RecipeConfig, build, sample_k
from derta.records import HelpfulExample, PreferencePair, TrainingExample, Triple


def triples(n: int = 10, rebuttal: bool = True) -> list[Triple]:
    return [
        Triple(
            query=f"How do I do bad thing {i}?",
            safe_response=f"Sorry, I cannot help with bad thing {i}.",
            harmful_response=f"Sure, here is bad thing {i}. Step 1: do it. Step 2: hide it.",
            rebuttal_response=f"You ask for bad thing {i}. That is harmful. I will not do it." if rebuttal else "",
            id=f"t{i}",
            category="bad",
        )
        for i in range(n)
    ]


HELPFUL = [HelpfulExample(f"What is {i} plus 1?", f"{i} plus 1 is {i + 1}.", id=f"h{i}") for i in range(20)]


def kinds(xs) -> dict[str, int]:
    out = {"mle": 0, "mle+prefix": 0, "rto": 0, "pair": 0}
    for x in xs:
        if isinstance(x, PreferencePair):
            out["pair"] += 1
        elif x.objective == "rto":
            out["rto"] += 1
        else:
            out["mle+prefix" if x.harmful_prefix else "mle"] += 1
    return out


# recipe -> (mle, mle+prefix, rto, pairs, triples used) for a budget of N = 8
TABLE = {
    "vanilla": (8, 0, 0, 0, 8),
    "vanilla-half": (4, 0, 0, 0, 4),
    "harmful-prefix": (0, 8, 0, 0, 8),
    "rto": (4, 0, 4, 0, 4),
    "derta": (0, 4, 4, 0, 4),
    "dpo": (0, 0, 0, 8, 8),
    "recovery": (0, 8, 0, 0, 8),
}


def test_table_covers_every_registered_recipe():
    from derta.commands.data import RECIPE_NAMES

    assert set(TABLE) == set(RECIPES) == set(RECIPE_NAMES)


@pytest.mark.parametrize("recipe", sorted(TABLE))
def test_counts_follow_the_table(recipe):
    mle, pre, rto, pairs, used = TABLE[recipe]
    out = build(recipe, triples(10), cfg=RecipeConfig(instances=8))
    assert kinds(out) == {"mle": mle, "mle+prefix": pre, "rto": rto, "pair": pairs}
    ids = {x.metadata["triple_id"] for x in out}
    assert ids == {f"t{i}" for i in range(used)}  # always the FIRST triples
    assert all(x.source == "safety" for x in out)


def test_default_budget_is_one_instance_per_triple():
    assert len(build("vanilla", triples(6))) == 6
    assert len(build("derta", triples(6))) == 6  # 3 triples x 2 instances


def test_a_derta_triple_is_two_instances():
    ts = triples(10)
    out = build("derta", ts, cfg=RecipeConfig(instances=6))
    by_triple: dict[str, list[TrainingExample]] = {}
    for x in out:
        by_triple.setdefault(x.metadata["triple_id"], []).append(x)
    assert len(by_triple) == 3
    for tid, xs in by_triple.items():
        t = next(t for t in ts if t.id == tid)
        (m,) = [x for x in xs if x.objective == "mle"]
        (r,) = [x for x in xs if x.objective == "rto"]
        # MLE: (q, h_<k) -> r ; RTO: (q, h) -> sorry at every position of h.
        assert m.target == t.safe_response and m.harmful_prefix.text == t.harmful_response
        assert m.harmful_prefix.k is None  # resampled every epoch by default
        assert r.target == t.harmful_response and r.harmful_prefix is None
        assert m.messages == r.messages and m.messages[-1].content == t.query
        assert m.id != r.id


def test_rto_recipe_pairs_rto_with_vanilla_of_the_same_triples():
    out = build("rto", triples(10), cfg=RecipeConfig(instances=8))
    rto_ids = sorted(x.metadata["triple_id"] for x in out if x.objective == "rto")
    mle = [x for x in out if x.objective == "mle"]
    assert rto_ids == sorted(x.metadata["triple_id"] for x in mle)
    assert all(x.harmful_prefix is None and x.target.startswith("Sorry") for x in mle)


def test_dpo_pairs_chosen_safe_rejected_harmful():
    ts = triples(5)
    out = build("dpo", ts, helpful=HELPFUL, helpful_ratio=1.0)
    assert len(out) == 5 and all(isinstance(p, PreferencePair) for p in out)  # no helpful data in DPO
    for p in out:
        t = next(t for t in ts if t.id == p.metadata["triple_id"])
        assert p.chosen == t.safe_response and p.rejected == t.harmful_response
        assert [m.role for m in p.messages] == ["user"] and p.messages[0].content == t.query


def test_rebuttal_style():
    ts = triples(6)
    cfg = RecipeConfig(style="rebuttal")
    for x in build("derta", ts, cfg=cfg):
        t = next(t for t in ts if t.id == x.metadata["triple_id"])
        assert x.target == (t.rebuttal_response if x.objective == "mle" else t.harmful_response)
        assert x.metadata["style"] == "rebuttal"
    assert [p.chosen for p in build("dpo", ts, cfg=cfg)] == [t.rebuttal_response for t in ts]
    assert sorted(x.target for x in build("vanilla", ts, cfg=cfg)) == sorted(t.rebuttal_response for t in ts)


def test_rebuttal_style_without_rebuttal_is_an_error():
    ts = triples(4, rebuttal=False)
    ts[2].metadata = {"source": "triples.jsonl", "line": 3}
    with pytest.raises(ValueError, match="rebuttal_response"):
        build("vanilla", ts, cfg=RecipeConfig(style="rebuttal"))
    # The refusal style does not need it.
    assert len(build("vanilla", ts)) == 4
    only_third = [ts[2]]
    with pytest.raises(ValueError, match=r"triples\.jsonl:3"):
        build("vanilla", only_third, cfg=RecipeConfig(style="rebuttal"))


def test_helpful_ratio_mixing():
    out = build("derta", triples(10), helpful=HELPFUL, cfg=RecipeConfig(instances=8), helpful_ratio=0.5)
    helpful = [x for x in out if x.source == "helpful"]
    assert len(out) == 12 and len(helpful) == 4
    assert all(x.objective == "mle" and x.harmful_prefix is None for x in helpful)
    by_id = {h.id: h for h in HELPFUL}
    for x in helpful:
        h = by_id[x.metadata["helpful_id"]]
        assert x.target == h.response and x.messages[-1].content == h.query
    # None: all helpful examples; 0: none; asking for more than given: an error.
    assert sum(x.source == "helpful" for x in build("vanilla", triples(4), helpful=HELPFUL)) == 20
    assert sum(x.source == "helpful" for x in build("vanilla", triples(4), helpful=HELPFUL, helpful_ratio=0.0)) == 0
    with pytest.raises(ValueError, match="helpful"):
        build("vanilla", triples(10), helpful=HELPFUL, helpful_ratio=3.0)
    with pytest.raises(ValueError, match="helpful_ratio"):
        build("vanilla", triples(4), helpful=HELPFUL, helpful_ratio=-1.0)


def test_mixed_rows_are_shuffled_not_grouped():
    out = build("derta", triples(10), helpful=HELPFUL, cfg=RecipeConfig(seed=0))
    sources = [x.source for x in out]
    assert sources != sorted(sources) and sources != sorted(sources, reverse=True)


def test_determinism_under_seed():
    def run(seed: int):
        cfg = RecipeConfig(seed=seed, fixed_k=True, prefix_unit="words")
        return [x.to_dict() for x in build("derta", triples(10), helpful=HELPFUL, cfg=cfg, helpful_ratio=1.0)]

    assert run(1) == run(1)
    assert run(1) != run(2)
    ks = lambda rows: [r["harmful_prefix"]["k"] for r in rows if r["harmful_prefix"]]  # noqa: E731
    assert all(isinstance(k, int) for k in ks(run(1)))


def test_fixed_k_uses_count_units_and_zero_share():
    ts = triples(30)
    n = 7
    out = build("harmful-prefix", ts, cfg=RecipeConfig(fixed_k=True, count_units=lambda h: n))
    assert all(0 <= x.harmful_prefix.k <= n for x in out)
    assert all(x.harmful_prefix.k == 0 for x in build("harmful-prefix", ts, cfg=RecipeConfig(fixed_k=True, zero_share=1.0)))
    assert all(x.harmful_prefix.k >= 1 for x in build("harmful-prefix", ts, cfg=RecipeConfig(fixed_k=True, zero_share=0.0)))


def test_system_prompt_comes_first():
    out = build("derta", triples(4), cfg=RecipeConfig(system="Be safe."))
    assert all([m.role for m in x.messages] == ["system", "user"] and x.messages[0].content == "Be safe." for x in out)


def test_bad_configs():
    with pytest.raises(ValueError, match="needs 11 triples"):
        build("vanilla", triples(10), cfg=RecipeConfig(instances=11))
    with pytest.raises(ValueError, match="unknown recipe 'sft'.*derta"):
        build("sft", triples(2))
    for bad in (dict(style="polite"), dict(prefix_unit="chars"), dict(zero_share=1.5), dict(instances=-1)):
        with pytest.raises(ValueError):
            RecipeConfig(**bad)


def test_sample_k_ranges():
    rng = random.Random(0)
    tok = [sample_k(5, 0.0, "tokens", rng) for _ in range(500)]
    assert set(tok) == {1, 2, 3, 4, 5}
    words = [sample_k(5, 0.0, "words", rng) for _ in range(500)]
    assert set(words) == {1, 2, 3, 4}  # never the whole response
    assert sample_k(1, 0.0, "words", rng) == 0  # too short to cut
    zeros = [sample_k(50, 0.25, "tokens", rng) for _ in range(2000)].count(0)
    assert abs(zeros / 2000 - 0.25) < 0.04


def test_a_budget_too_small_for_any_instance_is_an_error():
    from derta.data.recipes import RecipeConfig, build
    from derta.records import Triple

    one = [Triple("q", "Sorry.", "Step 1: harm.")]
    with pytest.raises(ValueError, match="no safety instances"):
        build("derta", one, cfg=RecipeConfig())
    assert len(build("vanilla", one, cfg=RecipeConfig())) == 1  # vanilla uses each triple once
