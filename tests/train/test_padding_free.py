"""Padding-free and BFD-packed micro-batches train exactly what padded ones train (per row, in total, in gradient)."""

from __future__ import annotations

import random

import pytest
import torch

from derta.data.render import RenderedDataset, Renderer
from derta.records import IGNORE_INDEX as IGN
from derta.records import HarmfulPrefix, Message, TrainingExample
from derta.train.collator import DeRTaCollator, PaddingFreeCollator
from derta.train.loss import weighted_causal_lm_loss, weighted_token_losses
from derta.train.packing import PackedDataset, bfd_bins, packed_attention_problem

HARM = "Sure, here is how to do it. Step 1: get the tools. Step 2: go at night and do not get caught."


def derta_examples() -> list[TrainingExample]:
    """MLE rows after a harmful prefix (k sampled), RTO rows and helpful rows, of varied lengths."""
    out = []
    for i, q in enumerate(["How do I steal a car?", "How do I burn a barn quickly?", "How do I pick a lock?"]):
        out.append(TrainingExample([Message("user", q)], "Sorry, I cannot help with that.", harmful_prefix=HarmfulPrefix(HARM[: 30 + 20 * i])))
        out.append(TrainingExample([Message("user", q)], HARM[: 40 + 25 * i], objective="rto"))
    out.append(TrainingExample([Message("user", "What is 2 plus 3?")], "2 plus 3 is 5.", source="helpful"))
    out.append(TrainingExample([Message("user", "Name a colour.")], "Blue is a colour, and so is red.", source="helpful"))
    return out


@pytest.fixture()
def rows(bpe_tokenizer):
    tok = bpe_tokenizer
    renderer = Renderer(tok, tok.convert_tokens_to_ids("ĠSorry"), template="chat", rto_weight=0.7)
    ds = RenderedDataset(derta_examples(), renderer, seed=1)
    out = [ds[i] for i in range(len(ds))]
    assert len({len(r["input_ids"]) for r in out}) > 4  # lengths differ: padding matters
    assert any(0 < w < 1 for r in out for w in r["loss_weights"])  # RTO rows weigh λ
    return out


def segments(position_ids: torch.Tensor) -> torch.Tensor:
    """Row index of each position of a flattened batch (position_ids restart at 0 on each row)."""
    return position_ids[0].eq(0).cumsum(0) - 1


def padded_row_losses(model, batch) -> torch.Tensor:
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False)
    return weighted_token_losses(out.logits, batch["labels"], batch["loss_weights"]).sum(-1)


def flat_row_losses(model, batch, n_rows: int) -> torch.Tensor:
    out = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False)
    per_token = weighted_token_losses(out.logits, batch["labels"], batch["loss_weights"])[0]
    # position t predicts token t + 1: it belongs to the row of token t + 1
    return per_token.new_zeros(n_rows).index_add(0, segments(batch["position_ids"])[1:], per_token)


def test_flattened_batch_layout(rows):
    batch = PaddingFreeCollator()(rows[:3])
    n = sum(len(r["input_ids"]) for r in rows[:3])
    assert batch["input_ids"].shape == batch["labels"].shape == batch["position_ids"].shape == batch["loss_weights"].shape == (1, n)
    assert "attention_mask" not in batch
    starts = batch["position_ids"][0].eq(0).nonzero().flatten().tolist()
    assert starts == [0, len(rows[0]["input_ids"]), len(rows[0]["input_ids"]) + len(rows[1]["input_ids"])]
    # a row's first token is never a target (it would be predicted from the previous row's last token)
    assert all(batch["labels"][0, s] == IGN and batch["loss_weights"][0, s] == 0 for s in starts)
    # the trainer's count of trained positions (labels[..., 1:]) is the padded batch's
    padded = DeRTaCollator(pad_token_id=0)(rows[:3])
    assert int(batch["labels"][..., 1:].ne(IGN).sum()) == int(padded["labels"][..., 1:].ne(IGN).sum()) > 0


def test_bins_items_flatten_like_their_rows(rows):
    bins = [[0, 3], [1], [2, 4, 5]]
    packed = PackedDataset(rows, bins)
    batch = PaddingFreeCollator()([packed[0], packed[2]])
    direct = PaddingFreeCollator()([rows[i] for i in (0, 3, 2, 4, 5)])
    for k in ("input_ids", "labels", "position_ids", "loss_weights"):
        assert torch.equal(batch[k], direct[k])


@pytest.mark.parametrize("packing", ["none", "bfd"])
def test_padding_free_losses_and_gradients_equal_padded(tiny_model, rows, packing, one_torch_thread):
    model = tiny_model.double()  # float64: differences are the packing's, not float noise
    assert packed_attention_problem(model) is None
    if packing == "bfd":
        bins = bfd_bins([len(r["input_ids"]) for r in rows], capacity=2 * max(len(r["input_ids"]) for r in rows))
        assert len(bins) < len(rows)
        order = [i for b in bins for i in b]
    else:
        order = list(range(len(rows)))
    ordered = [rows[i] for i in order]
    padded = {k: (v.double() if k == "loss_weights" else v) for k, v in DeRTaCollator(pad_token_id=0)(ordered).items()}
    flat = {k: (v.double() if k == "loss_weights" else v) for k, v in PaddingFreeCollator()(ordered).items()}
    assert flat["input_ids"].numel() < padded["input_ids"].numel()

    per_row_padded = padded_row_losses(model, padded)
    per_row_flat = flat_row_losses(model, flat, len(ordered))
    assert torch.all(per_row_padded > 0)
    torch.testing.assert_close(per_row_flat, per_row_padded.to(per_row_flat.dtype), rtol=1e-5, atol=1e-5)
    print(f"\nper-row |Δ| max ({packing}): {(per_row_flat - per_row_padded).abs().max().item():.2e}")

    n = int(padded["labels"][:, 1:].ne(IGN).sum())
    grads = []
    for batch in (padded, flat):
        model.zero_grad()
        kw = {"attention_mask": batch["attention_mask"]} if "attention_mask" in batch else {"position_ids": batch["position_ids"]}
        loss = weighted_causal_lm_loss(model(input_ids=batch["input_ids"], use_cache=False, **kw).logits, batch["labels"], batch["loss_weights"], n)
        loss.backward()
        grads.append((loss.detach(), [p.grad.clone() for p in model.parameters()]))
    (l_pad, g_pad), (l_flat, g_flat) = grads
    torch.testing.assert_close(l_flat, l_pad, rtol=1e-5, atol=1e-5)
    assert sum(g.abs().sum() for g in g_pad) > 0
    for a, b in zip(g_flat, g_pad):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    worst = max((a - b).abs().max().item() for a, b in zip(g_flat, g_pad))
    print(f"loss |Δ| ({packing}): {(l_flat - l_pad).abs().item():.2e}, gradient |Δ| max: {worst:.2e}")


def test_padding_free_equals_padded_in_float32(tiny_model, rows, one_torch_thread):
    """The training dtype on a CPU: the same equality to 1e-5."""
    padded = DeRTaCollator(pad_token_id=0)(rows)
    flat = PaddingFreeCollator()(rows)
    torch.testing.assert_close(flat_row_losses(tiny_model, flat, len(rows)), padded_row_losses(tiny_model, padded), rtol=1e-5, atol=1e-5)


def test_a_cache_would_let_packed_rows_attend_to_each_other(tiny_model, rows, one_torch_thread):
    """Why the training forward passes use_cache=False: with a cache transformers builds no packed mask."""
    flat = PaddingFreeCollator()(rows[:2])
    kw = {"input_ids": flat["input_ids"], "position_ids": flat["position_ids"]}
    with torch.no_grad():
        safe = tiny_model(**kw, use_cache=False).logits
        cached = tiny_model(**kw, use_cache=True).logits
    second = slice(len(rows[0]["input_ids"]), None)
    assert (safe[:, second] - cached[:, second]).abs().max() > 1e-4


def test_bfd_bins_are_trls(rows):
    """Same bins as TRL's pack_dataset(strategy="bfd") on the same lengths."""
    trl = pytest.importorskip("trl")
    from datasets import Dataset

    rng = random.Random(0)
    lengths = [rng.randint(1, 50) for _ in range(200)] + [50, 50, 7, 7, 7]
    ours = bfd_bins(lengths, 64)
    ds = Dataset.from_dict({"input_ids": [[i] * n for i, n in enumerate(lengths)]})
    theirs = [[ids[s] for s in [0, *list(torch.tensor(sl).cumsum(0)[:-1].tolist())]]
              for ids, sl in zip(*(trl.pack_dataset(ds, 64, strategy="bfd")[c] for c in ("input_ids", "seq_lengths")))]
    assert ours == theirs
    assert sorted(i for b in ours for i in b) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in b) <= 64 for b in ours)
    assert sum(lengths) / (64 * len(ours)) > 0.95


def test_bfd_a_row_longer_than_a_bin_is_alone():
    assert bfd_bins([10, 3, 2], 8) == [[0], [1, 2]]


def test_attention_without_packed_masks_turns_padding_free_off(tiny_model, rows, bpe_tokenizer):
    from derta.train.config import TrainConfig
    from derta.train.packing import plan_batching

    tiny_model.config._attn_implementation = "some_kernel"
    assert "some_kernel" in packed_attention_problem(tiny_model)
    plan = plan_batching(TrainConfig(model="tiny"), tiny_model, rows, bpe_tokenizer.pad_token_id)
    assert isinstance(plan.collator, DeRTaCollator) and plan.record["mode"] == "padded" and "some_kernel" in plan.record["padding_free_off"]
    with pytest.raises(ValueError, match="packing bfd needs padding-free"):
        plan_batching(TrainConfig(model="tiny", packing="bfd"), tiny_model, rows, bpe_tokenizer.pad_token_id)


def test_leak_probe_catches_a_model_that_attends_across_rows(tiny_model):
    """A model that ignores position resets (here: always given a full attention mask) fails the test forward."""
    from derta.train.packing import _leak_probe

    assert _leak_probe(tiny_model) is None
    forward = tiny_model.forward

    def leaky(input_ids=None, attention_mask=None, **kw):
        return forward(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), **kw)

    tiny_model.forward = leaky
    assert "depend on the row before it" in _leak_probe(tiny_model)


def test_rows_packed_into_short_sequences(rows, bpe_tokenizer):
    """row_tokens: the rows go into sequences of at most row_tokens tokens (best fit decreasing), each
    right-padded to the longest with a pad tail whose positions restart (a segment of its own)."""
    cap = max(len(r["input_ids"]) for r in rows) + 10
    batch = PaddingFreeCollator(row_tokens=cap, pad_token_id=bpe_tokenizer.pad_token_id)(rows)
    lengths = [len(r["input_ids"]) for r in rows]
    bins = bfd_bins(lengths, cap)
    assert batch["input_ids"].shape == (len(bins), max(sum(lengths[i] for i in b) for b in bins)) and len(bins) < len(rows)
    assert batch["input_ids"].size(1) <= cap and "attention_mask" not in batch
    assert int(batch["packed_rows"]) == len(rows) and int(batch["packed_tokens"]) == sum(lengths) < batch["input_ids"].numel()
    # every row's tokens are laid out whole, in its bin, each starting at position 0
    for seq, b in zip(range(len(bins)), bins):
        at = 0
        for i in b:
            k = lengths[i]
            assert batch["input_ids"][seq, at:at + k].tolist() == rows[i]["input_ids"]
            assert batch["position_ids"][seq, at:at + k].tolist() == list(range(k))
            assert batch["labels"][seq, at] == IGN and batch["labels"][seq, at + 1:at + k].tolist() == rows[i]["labels"][1:]
            at += k
        tail = batch["input_ids"].size(1) - at
        assert batch["position_ids"][seq, at:].tolist() == list(range(tail))
        assert torch.all(batch["labels"][seq, at:] == IGN) and torch.all(batch["loss_weights"][seq, at:] == 0)
    # bins packed ahead (PackedDataset items) are one sequence each
    packed = PackedDataset(rows, [[0, 3], [1], [2, 4, 5]])
    ahead = PaddingFreeCollator(row_tokens=10**6)([packed[0], packed[1], packed[2]])
    assert ahead["input_ids"].size(0) == 3 and int(ahead["packed_rows"]) == 6


def test_short_sequences_train_what_padded_batches_train(tiny_model, rows, bpe_tokenizer, one_torch_thread):
    """Loss and gradient of the packed layout equal the padded batch's (float64), and what the pad
    tail holds changes nothing: no row attends to it."""
    model = tiny_model.double()
    padded = {k: (v.double() if k == "loss_weights" else v) for k, v in DeRTaCollator(pad_token_id=0)(rows).items()}
    cap = max(len(r["input_ids"]) for r in rows) + 10
    n = int(padded["labels"][:, 1:].ne(IGN).sum())
    results = []
    for batch in (padded, PaddingFreeCollator(row_tokens=cap, pad_token_id=0)(rows), PaddingFreeCollator(row_tokens=cap, pad_token_id=7)(rows)):
        model.zero_grad()
        kw = {"attention_mask": batch["attention_mask"]} if "attention_mask" in batch else {"position_ids": batch["position_ids"]}
        weights = batch["loss_weights"].double()
        loss = weighted_causal_lm_loss(model(input_ids=batch["input_ids"], use_cache=False, **kw).logits, batch["labels"], weights, n)
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in model.parameters()]))
    (l_pad, g_pad), *packed = results
    assert sum(g.abs().sum() for g in g_pad) > 0
    for loss, grads in packed:
        torch.testing.assert_close(loss, l_pad, rtol=1e-6, atol=1e-6)
        for a, b in zip(grads, g_pad):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
