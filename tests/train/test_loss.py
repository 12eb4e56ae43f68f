"""The weighted causal-LM loss against F.cross_entropy, gradient accumulation, and the collator."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from derta.records import IGNORE_INDEX as IGN
from derta.train.collator import DeRTaCollator
from derta.train.loss import weighted_causal_lm_loss


def test_uniform_logits_hand_computed():
    # Uniform logits: every trained position costs log V. Position 0's label is never used (shift).
    V = 4
    logits = torch.zeros(1, 4, V)
    labels = torch.tensor([[3, 1, 2, IGN]])
    weights = torch.tensor([[9.0, 1.0, 0.5, 7.0]])
    assert weighted_causal_lm_loss(logits, labels).item() == pytest.approx(math.log(4))
    # Σ w·CE / N with N = 2 trained positions (not the sum of weights): log 4 · 1.5 / 2.
    assert weighted_causal_lm_loss(logits, labels, weights).item() == pytest.approx(math.log(4) * 1.5 / 2)


def test_two_class_hand_computed():
    # logits at t=0 favour class 1 with odds 3:1 -> CE(label 1) = log(4/3); t=1 predicts class 0 with
    # odds 1:1 -> CE = log 2. Weights 1 and 0.5 on the two targets.
    logits = torch.tensor([[[0.0, math.log(3)], [0.0, 0.0], [5.0, -5.0]]])
    labels = torch.tensor([[IGN, 1, 0]])
    assert weighted_causal_lm_loss(logits, labels).item() == pytest.approx((math.log(4 / 3) + math.log(2)) / 2)
    w = torch.tensor([[0.0, 1.0, 0.5]])
    assert weighted_causal_lm_loss(logits, labels, w).item() == pytest.approx((math.log(4 / 3) + 0.5 * math.log(2)) / 2)


def _random_case(seed: int = 0, B: int = 3, T: int = 7, V: int = 11):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, T, V, generator=g)
    labels = torch.randint(0, V, (B, T), generator=g)
    labels[:, 0] = IGN
    labels[0, 1:3] = IGN
    labels[2, 5:] = IGN
    return logits, labels


def test_weights_one_is_the_plain_token_mean():
    logits, labels = _random_case()
    ref = F.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)), labels[:, 1:].reshape(-1), ignore_index=IGN)
    ones = torch.ones(labels.shape)
    assert weighted_causal_lm_loss(logits, labels).item() == pytest.approx(ref.item(), rel=1e-6)
    assert weighted_causal_lm_loss(logits, labels, ones).item() == pytest.approx(ref.item(), rel=1e-6)


def test_lambda_multiplies_only_the_weighted_positions():
    logits, labels = _random_case(1)
    lam = 0.3
    rto = torch.zeros(labels.shape, dtype=torch.bool)
    rto[1, 2:6] = True  # an "RTO" stretch
    weights = torch.where(rto, torch.tensor(lam), torch.tensor(1.0))
    ce = F.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)), labels[:, 1:].reshape(-1), ignore_index=IGN, reduction="none").view(3, -1)
    trained = labels[:, 1:].ne(IGN)
    is_rto = rto[:, 1:] & trained
    expected = (ce[trained & ~is_rto].sum() + lam * ce[is_rto].sum()) / trained.sum()
    got = weighted_causal_lm_loss(logits, labels, weights)
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)
    assert got.item() != pytest.approx(weighted_causal_lm_loss(logits, labels).item(), rel=1e-3)


def test_ignored_positions_carry_no_loss_and_no_gradient():
    logits, labels = _random_case(2)
    logits.requires_grad_(True)
    weighted_causal_lm_loss(logits, labels).backward()
    # Logits at t predict label t+1: where label t+1 is ignored, no gradient reaches logits t.
    dead = labels[:, 1:].eq(IGN)
    assert torch.all(logits.grad[:, :-1][dead] == 0)
    assert torch.all(logits.grad[:, -1] == 0)
    assert torch.all(logits.grad[:, :-1][~dead].abs().sum(-1) > 0)


def test_num_items_overrides_the_count():
    logits, labels = _random_case(3)
    n = int(labels[:, 1:].ne(IGN).sum())
    base = weighted_causal_lm_loss(logits, labels)
    assert weighted_causal_lm_loss(logits, labels, num_items=2 * n).item() == pytest.approx(base.item() / 2, rel=1e-6)
    assert weighted_causal_lm_loss(logits, labels, num_items=torch.tensor(2 * n)).item() == pytest.approx(base.item() / 2, rel=1e-6)


# --- gradient accumulation -----------------------------------------------------------------------

ROWS = [  # MLE rows (weight 1) and RTO rows (weight λ = 0.7) of different lengths
    {"input_ids": [1, 5, 6, 7, 8], "labels": [IGN, IGN, 6, 7, 8], "loss_weights": [0, 0, 1, 1, 1]},
    {"input_ids": [1, 9, 3, 4, 5, 6, 2, 2, 3], "labels": [IGN, IGN, 4, 4, 4, 4, 4, 4, 4], "loss_weights": [0, 0] + [0.7] * 7},
    {"input_ids": [1, 2, 3], "labels": [IGN, 2, 3], "loss_weights": [0, 1, 1]},
    {"input_ids": [1, 7, 7, 7, 7, 7, 7], "labels": [IGN, IGN, IGN, 4, IGN, 4, 4], "loss_weights": [0, 0, 0, 0.7, 0, 0.7, 0.7]},
]


class TinyLM(torch.nn.Module):
    """Embedding -> one causal mixing step -> vocabulary: enough to make positions interact."""

    def __init__(self, vocab: int = 12, dim: int = 8):
        super().__init__()
        torch.manual_seed(0)
        self.emb = torch.nn.Embedding(vocab, dim)
        self.out = torch.nn.Linear(dim, vocab)

    def forward(self, input_ids, attention_mask):
        h = self.emb(input_ids) * attention_mask.unsqueeze(-1)
        h = h.cumsum(1) / torch.arange(1, h.size(1) + 1).view(1, -1, 1)  # causal running mean
        return self.out(torch.tanh(h))


def _step(model, batches, num_items):
    model.zero_grad()
    total = 0.0
    for b in batches:
        loss = weighted_causal_lm_loss(model(b["input_ids"], b["attention_mask"]), b["labels"], b["loss_weights"], num_items)
        loss.backward()
        total += loss.item()
    return total, [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("split", [[1, 1, 1, 1], [2, 2], [3, 1], [1, 3]])
def test_gradient_accumulation_invariance(split):
    collate = DeRTaCollator(pad_token_id=0)
    model = TinyLM()
    full = collate(ROWS)
    n = int(full["labels"][:, 1:].ne(IGN).sum())
    assert n == 3 + 7 + 2 + 3
    loss_full, grads_full = _step(model, [full], n)
    micro, i = [], 0
    for size in split:
        micro.append(collate(ROWS[i : i + size]))  # each micro-batch padded to its own longest row
        i += size
    loss_acc, grads_acc = _step(model, micro, n)
    assert loss_acc == pytest.approx(loss_full, rel=1e-5)
    for a, b in zip(grads_acc, grads_full):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    # The failure this guards against: averaging per-micro-batch means weights tokens unequally.
    loss_naive, _ = _step(model, micro, None)
    assert loss_naive / len(micro) != pytest.approx(loss_full, rel=1e-3)


def test_trainer_accumulation_matches_one_big_batch(tiny_model, bpe_tokenizer, tmp_path):
    """DeRTaTrainer: 4 micro-batches of 1 row = 1 batch of 4 rows (one SGD step, same parameters)."""
    import copy

    from derta.data.render import RenderedDataset, Renderer
    from derta.records import Message, TrainingExample
    from derta.train.trainer import DeRTaTrainer, TrainConfig, training_arguments

    tok = bpe_tokenizer
    examples = [
        TrainingExample([Message("user", "How do I steal a car?")], "Sorry, I cannot help with that."),
        TrainingExample([Message("user", "How do I steal a bike?")], "Sure, here is how to steal a bike. Step 1: wait.", objective="rto"),
        TrainingExample([Message("user", "What is 2 plus 3?")], "2 plus 3 is 5."),
        TrainingExample([Message("user", "Tell me how to burn a barn.")], "Sure, here is how to burn a barn.", objective="rto"),
    ]
    renderer = Renderer(tok, tok.convert_tokens_to_ids("ĠSorry"), template="chat", rto_weight=0.5)
    deltas = []
    for bs in (4, 1):
        model = copy.deepcopy(tiny_model)
        before = [p.detach().clone() for p in model.parameters()]
        cfg = TrainConfig(model="tiny", output_dir=str(tmp_path / f"bs{bs}"), batch_size=bs, total_batch_size=4, max_steps=1,
                          learning_rate=1.0, warmup_ratio=0.0, weight_decay=0.0, lr_scheduler="constant", save_steps=100, progress=False)
        args = training_arguments(cfg, optim="sgd", max_grad_norm=1e9)
        trainer = DeRTaTrainer(model=model, args=args, train_dataset=RenderedDataset(examples, renderer), data_collator=DeRTaCollator(tok.pad_token_id))
        assert trainer.args.gradient_accumulation_steps == 4 // bs
        trainer.train()
        deltas.append([(p.detach() - b) for p, b in zip(model.parameters(), before)])
    assert sum(d.abs().sum().item() for d in deltas[0]) > 0
    for a, b in zip(*deltas):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


# --- collator ------------------------------------------------------------------------------------


def test_collator_pads_to_the_longest_row():
    rows = [
        {"input_ids": [5, 6, 7], "labels": [IGN, 6, 7], "loss_weights": [0, 1, 1]},
        {"input_ids": [5, 8], "labels": [IGN, 9], "loss_weights": [0, 0.5]},
    ]
    b = DeRTaCollator(pad_token_id=0)(rows)
    assert b["input_ids"].tolist() == [[5, 6, 7], [5, 8, 0]]
    assert b["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert b["labels"].tolist() == [[IGN, 6, 7], [IGN, 9, IGN]]
    assert b["loss_weights"].tolist() == [[0, 1, 1], [0, 0.5, 0]]
    assert b["input_ids"].dtype == torch.long and b["loss_weights"].dtype == torch.float32


def test_collator_pad_to_multiple_and_pad_id():
    rows = [{"input_ids": [5] * 9, "labels": [5] * 9, "loss_weights": [1] * 9}]
    b = DeRTaCollator(pad_token_id=3, pad_to_multiple_of=8)(rows)
    assert b["input_ids"].shape == (1, 16)
    assert b["input_ids"][0, 9:].tolist() == [3] * 7
    assert b["labels"][0, 9:].tolist() == [IGN] * 7
    assert b["attention_mask"].sum().item() == 9


def test_padding_does_not_change_the_loss():
    model = TinyLM()
    collate = DeRTaCollator(pad_token_id=0)
    alone = collate([ROWS[2]])
    padded = collate([ROWS[2], ROWS[1]])  # row 2 padded from 3 to 9 positions
    la = weighted_causal_lm_loss(model(alone["input_ids"], alone["attention_mask"]), alone["labels"], alone["loss_weights"])
    logits = model(padded["input_ids"], padded["attention_mask"])[:1]
    lp = weighted_causal_lm_loss(logits, padded["labels"][:1], padded["loss_weights"][:1])
    assert la.item() == pytest.approx(lp.item(), rel=1e-6)
