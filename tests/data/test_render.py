"""Stage 2 of data building: ids / labels / loss weights, checked on hand-built expectations."""

from __future__ import annotations

import random

import pytest

from derta.data.recipes import RecipeConfig, build
from derta.data.render import Renderer, RenderedDataset, cut_words
from derta.records import IGNORE_INDEX, HarmfulPrefix, Message, TrainingExample, Triple
from derta.tokens import refusal_token_id

QUERY = "How do I steal a car?"
SAFE = "Sorry, I cannot help with stealing a car, because it takes property from its owner."
HARM = (
    "Sure, here is how to steal a car. Step 1: wait until the owner of the car is away. "
    "Step 2: break the lock of the car with a steel bar. Step 3: cut the alarm wire so nobody can trace you."
)


def enc(tok, text: str) -> list[int]:
    return list(tok(text, add_special_tokens=False)["input_ids"])


def mle(target: str = SAFE, prefix: HarmfulPrefix | None = None) -> TrainingExample:
    return TrainingExample(messages=[Message("user", QUERY)], target=target, harmful_prefix=prefix)


def rto(target: str = HARM) -> TrainingExample:
    return TrainingExample(messages=[Message("user", QUERY)], target=target, objective="rto")


@pytest.fixture(scope="module")
def refusal(bpe_tokenizer) -> int:
    return refusal_token_id(bpe_tokenizer)


# The segments each template must produce: (bos?, prompt text, response text incl. lead, end text).
CASES = {
    "reference": (True, f"[INST] {QUERY} [\\INST]", " ", "<|end|>"),
    "raw": (True, QUERY, " ", "<|end|>"),
    "chat": (False, f"<|user|>\n{QUERY}<|end|>\n<|assistant|>\n", "", "<|end|>\n"),
}


@pytest.mark.parametrize("template", sorted(CASES))
def test_mle_labels_only_on_the_response(bpe_tokenizer, refusal, template):
    tok = bpe_tokenizer
    bos, prompt, lead, end = CASES[template]
    r = Renderer(tok, refusal, template=template)(mle())
    head = ([tok.bos_token_id] if bos else []) + enc(tok, prompt)
    response = enc(tok, lead + SAFE) + enc(tok, end)
    assert r.input_ids == head + response
    assert r.labels == [IGNORE_INDEX] * len(head) + response
    assert r.loss_weights == [0.0] * len(head) + [1.0] * len(response)
    # What is trained decodes to exactly the response and the end of the turn.
    trained = [t for t in r.labels if t != IGNORE_INDEX]
    assert tok.decode(trained) == lead + SAFE + end
    assert trained[-len(enc(tok, end)):] == enc(tok, end)
    assert tok.eos_token_id in trained


@pytest.mark.parametrize("template", sorted(CASES))
def test_rto_refusal_id_exactly_at_the_harmful_positions(bpe_tokenizer, refusal, template):
    tok = bpe_tokenizer
    bos, prompt, lead, _ = CASES[template]
    r = Renderer(tok, refusal, template=template, rto_weight=0.5)(rto())
    head = ([tok.bos_token_id] if bos else []) + enc(tok, prompt)
    h = enc(tok, lead + HARM)
    assert r.input_ids == head + h  # h is the input; no end-of-turn: the row teaches transitions only
    assert r.labels == [IGNORE_INDEX] * len(head) + [refusal] * len(h)
    assert r.loss_weights == [0.0] * len(head) + [0.5] * len(h)
    assert r.labels.count(refusal) == len(h)
    # The refusal id is a label at h's positions only: nowhere in the prompt, and never h's own ids.
    assert all(lab == IGNORE_INDEX for lab in r.labels[: len(head)])
    assert tok.convert_ids_to_tokens(refusal) == "ĠSorry"


def test_rto_keep_drops_the_expected_share(bpe_tokenizer, refusal):
    tok = bpe_tokenizer
    renderer = Renderer(tok, refusal, template="reference", rto_keep=0.05, rto_weight=2.0)
    full = Renderer(tok, refusal, template="reference")(rto())
    kept = total = 0
    for seed in range(300):
        r = renderer(rto(), random.Random(seed))
        assert r.input_ids == full.input_ids  # dropout removes labels, never input tokens
        on = [i for i, lab in enumerate(r.labels) if lab != IGNORE_INDEX]
        assert all(r.labels[i] == refusal and r.loss_weights[i] == 2.0 for i in on)
        assert all(r.loss_weights[i] == 0.0 for i in range(len(r.labels)) if i not in on)
        assert set(on) <= {i for i, lab in enumerate(full.labels) if lab != IGNORE_INDEX}
        kept += len(on)
        total += full.labels.count(refusal)
    assert abs(kept / total - 0.05) < 0.01
    # Different draws keep different positions.
    assert renderer(rto(), random.Random(1)).labels != renderer(rto(), random.Random(2)).labels


def test_rto_weight_does_not_touch_mle_rows(bpe_tokenizer, refusal):
    r = Renderer(bpe_tokenizer, refusal, template="reference", rto_weight=0.25)(mle())
    assert set(r.loss_weights) == {0.0, 1.0}


def test_bad_renderer_settings(bpe_tokenizer, refusal):
    with pytest.raises(ValueError, match="rto_keep"):
        Renderer(bpe_tokenizer, refusal, rto_keep=0.0)
    with pytest.raises(ValueError, match="rto_weight"):
        Renderer(bpe_tokenizer, refusal, rto_weight=-1.0)
    with pytest.raises(ValueError, match="unknown template"):
        Renderer(bpe_tokenizer, refusal, template="alpaca")


def _token_k(tok, r, head_len: int, target_len: int, h_ids: list[int]) -> int:
    k = len(r.input_ids) - head_len - target_len
    assert r.input_ids[head_len : head_len + k] == h_ids[:k]  # the context is h's first k tokens
    assert all(lab == IGNORE_INDEX for lab in r.labels[: head_len + k])  # h_<k is never learned
    assert r.labels[head_len + k :] == r.input_ids[head_len + k :]
    return k


def test_harmful_prefix_k_in_tokens(bpe_tokenizer, refusal):
    tok = bpe_tokenizer
    renderer = Renderer(tok, refusal, template="reference")
    head = [tok.bos_token_id] + enc(tok, f"[INST] {QUERY} [\\INST]")
    target = enc(tok, " " + SAFE) + [tok.eos_token_id]  # joiner is " " with or without a prefix
    h_ids = enc(tok, " " + HARM)
    ex = mle(prefix=HarmfulPrefix(HARM, unit="tokens", zero_share=1 / 3))
    ks = [_token_k(tok, renderer(ex, random.Random(s)), len(head), len(target), h_ids) for s in range(600)]
    assert min(ks) == 0 and max(ks) == len(h_ids)  # k spans the whole of [0, |h|]
    assert 1 in ks
    assert abs(ks.count(0) / len(ks) - 1 / 3) < 0.06
    nonzero = [k for k in ks if k]
    assert abs(sum(nonzero) / len(nonzero) - (len(h_ids) + 1) / 2) < 4  # uniform on [1, |h|]


def test_harmful_prefix_k_in_words(bpe_tokenizer, refusal):
    tok = bpe_tokenizer
    renderer = Renderer(tok, refusal, template="reference")
    head = [tok.bos_token_id] + enc(tok, f"[INST] {QUERY} [\\INST]")
    target = enc(tok, " " + SAFE) + [tok.eos_token_id]
    words = HARM.split(" ")
    ex = mle(prefix=HarmfulPrefix(HARM, unit="words", zero_share=0.5))
    ks = []
    for s in range(400):
        r = renderer(ex, random.Random(s))
        context = tok.decode(r.input_ids[len(head) : len(r.input_ids) - len(target)])
        k = len(context.strip().split(" ")) if context.strip() else 0
        assert context == (" " + cut_words(HARM, k) if k else "")
        assert r.labels[len(r.input_ids) - len(target) :] == target
        ks.append(k)
    assert min(ks) == 0 and max(ks) == len(words) - 1  # the reference never uses the whole response
    assert abs(ks.count(0) / len(ks) - 0.5) < 0.08


def test_prefix_with_chat_template_joins_with_a_space(bpe_tokenizer, refusal):
    tok = bpe_tokenizer
    r = Renderer(tok, refusal, template="chat")(mle(prefix=HarmfulPrefix(HARM, unit="words", k=3)))
    head = enc(tok, CASES["chat"][1])
    assert r.input_ids[: len(head)] == head
    text = tok.decode(r.input_ids[len(head):])
    assert text == "Sure, here is" + " " + SAFE + "<|end|>\n"
    assert tok.decode([t for t in r.labels if t != IGNORE_INDEX]) == " " + SAFE + "<|end|>\n"


def test_fixed_k_reproduces(bpe_tokenizer, refusal):
    tok = bpe_tokenizer
    renderer = Renderer(tok, refusal, template="reference")
    ex = mle(prefix=HarmfulPrefix(HARM, unit="tokens", k=5))
    rows = {tuple(renderer(ex, random.Random(s)).input_ids) for s in range(20)}
    assert len(rows) == 1  # k fixed: the rng does not matter
    head = [tok.bos_token_id] + enc(tok, f"[INST] {QUERY} [\\INST]")
    (row,) = rows
    assert list(row[len(head) : len(head) + 5]) == enc(tok, " " + HARM)[:5]
    # A recipe with fixed_k draws the same k for the same seed.
    triples = [Triple(QUERY, SAFE, HARM, id=f"t{i}") for i in range(30)]
    count = lambda h: len(enc(tok, " " + h))  # noqa: E731
    a = build("harmful-prefix", triples, cfg=RecipeConfig(fixed_k=True, seed=3, count_units=count))
    b = build("harmful-prefix", triples, cfg=RecipeConfig(fixed_k=True, seed=3, count_units=count))
    assert [x.harmful_prefix.k for x in a] == [x.harmful_prefix.k for x in b]
    assert all(0 <= x.harmful_prefix.k <= count(HARM) for x in a)
    assert len({x.harmful_prefix.k for x in a}) > 3


def test_resampling_per_epoch_is_deterministic(bpe_tokenizer, refusal):
    tok = bpe_tokenizer
    renderer = Renderer(tok, refusal, template="reference", rto_keep=0.5)
    examples = [mle(prefix=HarmfulPrefix(HARM)) for _ in range(10)] + [rto() for _ in range(10)]
    ds = RenderedDataset(examples, renderer, seed=7)
    epoch0 = [ds[i] for i in range(len(ds))]
    assert epoch0 == [ds[i] for i in range(len(ds))]  # same (seed, epoch, index): same row
    again = RenderedDataset(examples, renderer, seed=7)
    assert epoch0 == [again[i] for i in range(len(again))]
    ds.set_epoch(1)
    epoch1 = [ds[i] for i in range(len(ds))]
    changed = [i for i in range(len(ds)) if epoch0[i] != epoch1[i]]
    assert len(changed) >= 10  # both the prefix cut and the RTO dropout are redrawn
    ds.set_epoch(0)
    assert epoch0 == [ds[i] for i in range(len(ds))]
    other = RenderedDataset(examples, renderer, seed=8)
    assert epoch0 != [other[i] for i in range(len(other))]
    # Different indexes of identical examples get different draws within one epoch.
    assert len({tuple(r["input_ids"]) for r in epoch0[:10]}) > 1


def test_truncation_keeps_rows_aligned(bpe_tokenizer, refusal):
    r = Renderer(bpe_tokenizer, refusal, template="reference", max_length=12)(rto())
    assert len(r.input_ids) == len(r.labels) == len(r.loss_weights) == 12


def test_memoised_rendering_is_the_uncached_rendering_and_never_shared(bpe_tokenizer, refusal):
    """The renderer memoises templates and token ids; over several epochs (a fresh harmful-prefix cut
    each time) it must give exactly what a renderer that tokenizes everything anew gives, and a
    caller that edits a returned row must not change the next one."""
    triples = [Triple(QUERY, SAFE, HARM, id=f"t{i}") for i in range(6)]
    helpful = []
    examples = build("derta", triples, helpful, RecipeConfig(seed=3)) + [mle(), rto()]

    class Uncached(Renderer):
        def ids(self, text):  # type: ignore[override]
            return enc(self.tokenizer, text)

        def turn(self, example):  # type: ignore[override]
            self._turns.clear()
            return super().turn(example)

    cached = RenderedDataset(examples, Renderer(bpe_tokenizer, refusal, max_length=48, rto_keep=0.5), seed=1)
    fresh = RenderedDataset(examples, Uncached(bpe_tokenizer, refusal, max_length=48, rto_keep=0.5), seed=1)
    for epoch in range(3):
        cached.set_epoch(epoch)
        fresh.set_epoch(epoch)
        for i in range(len(examples)):
            row = cached[i]
            assert row == fresh[i]
            row["input_ids"].append(-1)
            row["labels"].clear()
            assert cached[i] == fresh[i]
    assert cached.renderer._texts, "nothing was memoised"
