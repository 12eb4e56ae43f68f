"""Properties of the data builder and of label construction, over generated rows (hypothesis).

- masks: labels are IGNORE_INDEX exactly outside the trained span, and equal the inputs inside it;
- RTO: only the harmful response's positions carry labels, every one the refusal token id;
- k: the harmful-prefix cut stays in its documented range (tokens [0, n], words [0, n - 1]);
- round trips of records through to_dict / from_dict;
- truncation: a row whose prompt + target fit keeps the whole target (the harmful prefix gives way),
  and a row is never longer than max_length; ``cut`` counts what the end lost.
"""

from __future__ import annotations

import random

from hypothesis import given, settings, strategies as st

from derta.data.recipes import RECIPES, RecipeConfig, build, sample_k
from derta.data.render import Renderer
from derta.records import IGNORE_INDEX, HarmfulPrefix, Message, PreferencePair, TrainingExample, Triple
from derta.tokens import refusal_token_id

FAST = settings(max_examples=50, deadline=None)
word = st.text(alphabet="abcdefghij", min_size=1, max_size=8)
text = st.lists(word, min_size=1, max_size=12).map(" ".join)
templates = st.sampled_from(["chat", "reference", "raw"])


def _prefix(draw_text: str, unit: str, k: int | None) -> HarmfulPrefix:
    return HarmfulPrefix(text=draw_text, unit=unit, k=k, zero_share=1 / 3)


prefixes = st.one_of(st.none(), st.builds(_prefix, text, st.sampled_from(["tokens", "words"]), st.one_of(st.none(), st.integers(0, 20))))
examples = st.builds(
    lambda q, t, obj, hp, sys: TrainingExample(messages=([Message("system", sys)] if sys else []) + [Message("user", q)], target=t,
                                               objective=obj, harmful_prefix=hp if obj == "mle" else None),
    text, text, st.sampled_from(["mle", "rto"]), prefixes, st.one_of(st.just(""), text),
)


@FAST
@given(ex=examples, template=templates, max_length=st.integers(4, 96), seed=st.integers(0, 3))
def test_labels_are_ignored_exactly_outside_the_trained_span(bpe_tokenizer, ex, template, max_length, seed):
    refusal = refusal_token_id(bpe_tokenizer)
    renderer = Renderer(bpe_tokenizer, refusal, template=template, max_length=max_length)
    r = renderer(ex, random.Random(seed))
    assert len(r.input_ids) == len(r.labels) == len(r.loss_weights) <= max_length
    head = len(renderer.prompt_ids(renderer.turn(ex))) - r.cut_query  # the query gives way before the target
    trained = [i for i, lab in enumerate(r.labels) if lab != IGNORE_INDEX]
    # the trained positions are one contiguous run to the end of the row, never in the prompt
    assert trained == list(range(len(r.labels) - len(trained), len(r.labels)))
    assert not trained or trained[0] >= head
    for i, (lab, w) in enumerate(zip(r.labels, r.loss_weights)):
        if lab == IGNORE_INDEX:
            assert w == 0.0
        elif ex.objective == "rto":
            assert lab == refusal and w == 1.0  # RTO: the refusal token at every harmful position
        else:
            assert lab == r.input_ids[i] and w == 1.0  # MLE: the target token itself
    if ex.objective == "rto":
        harmful = renderer.ids(renderer.turn(ex).lead + ex.target)
        assert len(trained) == max(0, len(harmful) - r.cut_target)
        assert r.input_ids[head:] == harmful[: max(0, len(r.input_ids) - head)]


@FAST
@given(ex=examples, template=templates, seed=st.integers(0, 3))
def test_a_target_that_fits_is_kept_whole(bpe_tokenizer, ex, template, seed):
    """The documented promise: when prompt + target fit, truncation only shortens the harmful prefix."""
    refusal = refusal_token_id(bpe_tokenizer)
    full = Renderer(bpe_tokenizer, refusal, template=template, max_length=10_000)
    turn = full.turn(ex)
    head = len(full.prompt_ids(turn))
    target = full.ids(turn.lead + ex.target) + ([] if ex.objective == "rto" else full.ids(turn.end))
    max_length = head + len(target)
    r = Renderer(bpe_tokenizer, refusal, template=template, max_length=max_length)(ex, random.Random(seed))
    trained = [lab for lab in r.labels if lab != IGNORE_INDEX]
    if ex.objective == "rto":
        assert trained == [refusal] * len(target) and r.cut == 0
    else:
        # the target (after a harmful prefix it starts with a joining space) survives, with its end of turn
        assert len(trained) >= len(target) - 1 and r.cut == 0
        assert bpe_tokenizer.decode(trained).strip() == (ex.target + turn.end).strip()


@FAST
@given(ex=examples, template=templates, max_length=st.integers(1, 40))
def test_cut_counts_what_the_end_lost(bpe_tokenizer, ex, template, max_length):
    refusal = refusal_token_id(bpe_tokenizer)
    rng = random.Random(0)
    whole = Renderer(bpe_tokenizer, refusal, template=template, max_length=10_000)(ex, random.Random(0))
    r = Renderer(bpe_tokenizer, refusal, template=template, max_length=max_length)(ex, rng)
    assert len(r.input_ids) == min(max_length, len(r.input_ids) + r.cut)
    if r.cut:
        assert len(r.input_ids) == max_length
    if len(whole.input_ids) <= max_length:
        assert r.cut == 0 and r.input_ids == whole.input_ids


@FAST
@given(n=st.integers(0, 50), zero=st.floats(0.0, 1.0), unit=st.sampled_from(["tokens", "words"]), seed=st.integers(0, 10_000))
def test_k_stays_in_its_documented_range(n, zero, unit, seed):
    k = sample_k(n, zero, unit, random.Random(seed))
    top = n if unit == "tokens" else n - 1
    assert 0 <= k <= max(0, top)
    if zero == 0.0 and top >= 1:
        assert k >= 1
    if zero == 1.0:
        assert k == 0


@FAST
@given(ex=examples, meta=st.dictionaries(word, st.one_of(st.integers(), word), max_size=3), rid=word)
def test_training_examples_round_trip(ex, meta, rid):
    ex.metadata, ex.id = meta, rid
    back = TrainingExample.from_dict(ex.to_dict())
    assert back == ex and back.to_dict() == ex.to_dict()


@FAST
@given(q=text, chosen=text, rejected=text, rid=word)
def test_preference_pairs_round_trip(q, chosen, rejected, rid):
    p = PreferencePair(messages=[Message("user", q)], chosen=chosen, rejected=rejected, id=rid, metadata={"k": rid})
    assert PreferencePair.from_dict(p.to_dict()) == p


triples = st.lists(st.builds(lambda q, s, h: (q, s, h), text, text, text), min_size=2, max_size=10)


@FAST
@given(rows=triples, recipe=st.sampled_from(sorted(RECIPES)), seed=st.integers(0, 5), fixed=st.booleans())
def test_recipes_build_what_their_table_says(rows, recipe, seed, fixed):
    ts = [Triple(query=q, safe_response=s, harmful_response=h, id=f"t{i}") for i, (q, s, h) in enumerate(rows)]
    out = build(recipe, ts, [], RecipeConfig(seed=seed, fixed_k=fixed, prefix_unit="words"))
    ids = [x.id for x in out]
    assert len(ids) == len(set(ids))
    n = len(ts)
    by_id = {t.id: t for t in ts}
    if recipe == "dpo":
        assert len(out) == n and all(p.chosen == by_id[p.metadata["triple_id"]].safe_response for p in out)
        return
    rto_rows = [x for x in out if x.objective == "rto"]
    expected = {"vanilla": (n, 0), "vanilla-half": (n // 2, 0), "harmful-prefix": (n, 0), "rto": (n // 2 * 2, n // 2), "derta": (n // 2 * 2, n // 2),
                "recovery": (n, 0)}
    assert (len(out), len(rto_rows)) == expected[recipe]
    for x in out:
        t = by_id[x.metadata["triple_id"]]
        # RTO rows target the harmful response; every other row the safe one
        assert x.target == (t.harmful_response if x.objective == "rto" else t.safe_response)
        assert (x.harmful_prefix is not None) == (recipe in ("harmful-prefix", "derta", "recovery") and x.objective == "mle")
        if recipe == "recovery":  # k fixed at build time, up to the whole of h (Qi et al.), at most 100
            assert 0 <= x.harmful_prefix.k <= min(100, len(t.harmful_response.split(" ")))
        elif x.harmful_prefix is not None and fixed:
            assert 0 <= x.harmful_prefix.k <= max(0, len(t.harmful_response.split(" ")) - 1)
