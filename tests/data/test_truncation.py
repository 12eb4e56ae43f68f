"""Truncation to max_length: the harmful prefix gives way first, then the middle of the query (only as
far as the target needs: min(its length, half of max_length) tokens must fit); then the target's end."""

from __future__ import annotations

import random

import pytest

from derta.data.render import CutTally, Renderer
from derta.records import IGNORE_INDEX, HarmfulPrefix, Message, TrainingExample
from derta.tokens import refusal_token_id

LONG_QUERY = " ".join(f"Tell me about the {w} car and the owner." for w in ("red", "blue", "green", "old", "new", "fast"))
SAFE = "Sorry, I cannot help with stealing a car."
HARM = "Sure, here is how to steal a car. Step 1: wait until the owner is away. Step 2: break the lock."


def enc(tok, text):
    return list(tok(text, add_special_tokens=False)["input_ids"])


@pytest.fixture(scope="module")
def refusal(bpe_tokenizer):
    return refusal_token_id(bpe_tokenizer)


def _mle(query=LONG_QUERY, target=SAFE, prefix=None):
    return TrainingExample(messages=[Message("user", query)], target=target, harmful_prefix=prefix)


def _trained(r):
    return [lab for lab in r.labels if lab != IGNORE_INDEX]


@pytest.mark.parametrize("template", ["chat", "reference"])
def test_a_long_query_loses_its_middle_and_the_target_is_kept(bpe_tokenizer, refusal, template):
    tok = bpe_tokenizer
    whole = Renderer(tok, refusal, template=template, max_length=10_000)(_mle())
    target = _trained(whole)
    max_length = len(whole.input_ids) - 20
    r = Renderer(tok, refusal, template=template, max_length=max_length)(_mle())
    assert len(r.input_ids) == max_length and r.cut == r.cut_query == 20 and r.cut_target == 0
    assert _trained(r) == target  # the safe target and its end of turn, whole
    assert tok.decode(_trained(r)).strip().startswith(SAFE)
    prompt, full_prompt = r.input_ids[: -len(target)], whole.input_ids[: -len(target)]
    # the template's markers and the start and end of the query stay; tokens go from the query's middle
    assert prompt[:5] == full_prompt[:5] and prompt[-5:] == full_prompt[-5:]
    query = enc(tok, LONG_QUERY)
    assert "".join(tok.convert_ids_to_tokens(query[:3])) in "".join(tok.convert_ids_to_tokens(prompt))
    assert "".join(tok.convert_ids_to_tokens(query[-3:])) in "".join(tok.convert_ids_to_tokens(prompt))
    assert tok.decode(prompt).count("red") == 1 and "fast" in tok.decode(prompt) and "old" not in tok.decode(prompt)


def test_the_harmful_prefix_gives_way_before_the_query(bpe_tokenizer, refusal):
    tok = bpe_tokenizer
    ex = _mle(query="How do I steal a car?", prefix=HarmfulPrefix(text=HARM, unit="tokens", k=10_000, zero_share=0.0))
    whole = Renderer(tok, refusal, template="chat", max_length=10_000)(ex)
    r = Renderer(tok, refusal, template="chat", max_length=len(whole.input_ids) - 6)(ex)
    assert r.cut_prefix == 6 and r.cut == r.cut_query == r.cut_target == 0
    assert _trained(r) == _trained(whole)
    n = len(_trained(r))
    assert r.input_ids[:-n] == whole.input_ids[: -n - 6]  # the prefix keeps its start: a shorter h_<k


def test_rto_keeps_every_harmful_position_when_the_query_can_give(bpe_tokenizer, refusal):
    tok = bpe_tokenizer
    ex = TrainingExample(messages=[Message("user", LONG_QUERY)], target=HARM, objective="rto")
    whole = Renderer(tok, refusal, template="reference", max_length=10_000)(ex)
    r = Renderer(tok, refusal, template="reference", max_length=len(whole.input_ids) - 15)(ex)
    h = enc(tok, " " + HARM)
    assert r.input_ids[-len(h):] == h and _trained(r) == [refusal] * len(h)
    assert r.cut_query == 15 and r.cut_target == 0


def test_a_target_longer_than_the_budget_is_cut_at_its_end(bpe_tokenizer, refusal):
    tok = bpe_tokenizer
    long_target = " ".join([SAFE] * 8)
    ex = _mle(query="Why?", target=long_target)
    renderer = Renderer(tok, refusal, template="reference", max_length=60)
    r = renderer(ex)
    full_target = enc(tok, " " + long_target) + enc(tok, tok.eos_token)
    head = renderer.prompt_ids(renderer.turn(ex))
    assert len(r.input_ids) == 60 and len(head) + 30 <= 60
    assert r.cut_query == 0  # the short question leaves the target half the budget: it is kept whole
    assert r.cut_target == len(head) + len(full_target) - 60
    assert _trained(r) == full_target[: len(full_target) - r.cut_target]  # the start of the target is kept


def test_a_long_query_gives_way_only_as_far_as_the_target_needs(bpe_tokenizer, refusal):
    tok = bpe_tokenizer
    long_target = " ".join([SAFE] * 8)
    ex = _mle(target=long_target)
    renderer = Renderer(tok, refusal, template="reference", max_length=80)
    head = renderer.prompt_ids(renderer.turn(ex))
    assert len(head) > 40  # the long query alone would leave the target less than half of 80
    r = renderer(ex)
    full_target = enc(tok, " " + long_target) + enc(tok, tok.eos_token)
    assert len(r.input_ids) == 80 and r.cut_query == len(head) + 40 - 80
    assert _trained(r) == full_target[:40] and r.cut_target == len(full_target) - 40


def test_rows_that_fit_are_rendered_as_without_a_limit(bpe_tokenizer, refusal):
    tok = bpe_tokenizer
    rows = [_mle(), _mle(query="Hi", prefix=HarmfulPrefix(text=HARM, unit="words", k=None, zero_share=0.3)),
            TrainingExample(messages=[Message("system", "Be kind."), Message("user", "How?")], target=HARM, objective="rto")]
    for template in ("chat", "reference", "raw"):
        for i, ex in enumerate(rows):
            whole = Renderer(tok, refusal, template=template, max_length=10_000, rto_keep=0.5)(ex, random.Random(i))
            exact = Renderer(tok, refusal, template=template, max_length=len(whole.input_ids), rto_keep=0.5)(ex, random.Random(i))
            assert exact == whole and exact.cut == 0


def test_cut_tally_sums_what_each_part_lost(bpe_tokenizer, refusal):
    tok = bpe_tokenizer
    renderer = Renderer(tok, refusal, template="reference", max_length=40)
    rows = [renderer(_mle()), renderer(_mle(query="Why?", target=" ".join([SAFE] * 8))), renderer(_mle(query="Hi", target="Ok."))]
    tally = CutTally()
    for r in rows:
        tally.add(r)
    rec = tally.record()
    assert rec["rows_cut_by"]["query"] == sum(r.cut_query > 0 for r in rows) == 1
    assert rec["rows_cut_by"]["target"] == 1 and rec["rows_cut_by"]["prefix"] == 0
    assert rec["tokens_cut_by"]["query"] == sum(r.cut_query for r in rows)
    assert rec["tokens_cut_by"]["target"] == rows[1].cut_target > 0
    assert rec["max_tokens_cut"] == max(r.cut for r in rows)


def test_truncate_query_false_cuts_the_target_end_and_keeps_the_query(bpe_tokenizer, refusal):
    tok = bpe_tokenizer
    long_target = " ".join([SAFE] * 8)
    ex = _mle(target=long_target)
    head = Renderer(tok, refusal, template="reference").prompt_ids(Renderer(tok, refusal, template="reference").turn(ex))
    n = len(head) + 10  # the question fits, with 10 target tokens: fewer than half of max_length
    r = Renderer(tok, refusal, template="reference", max_length=n, truncate_query=False)(ex)
    full_target = enc(tok, " " + long_target) + enc(tok, tok.eos_token)
    assert r.cut_query == 0 and r.input_ids[: len(head)] == head  # the question whole
    assert _trained(r) == full_target[:10] and r.cut_target == len(full_target) - 10
    assert Renderer(tok, refusal, template="reference", max_length=n)(ex).cut_query > 0  # the default gives some of it
