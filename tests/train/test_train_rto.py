"""RTO does what it claims: after training, P(refusal | q, h_<t) is higher at the harmful positions.

Two runs from the same initialisation and the same number of optimiser steps on the toy world:
vanilla (q -> r) and RTO (q, h -> sorry at every position of h, plus the vanilla pairs of the same
triples). The measure is the mean log-probability of the refusal token over the harmful-response
positions of triples held out of training.
"""

from __future__ import annotations

import copy

import torch

from derta.data.recipes import build
from derta.data.render import Renderer
from derta.records import IGNORE_INDEX, Message, TrainingExample
from derta.tokens import refusal_token_id
from derta.train.run import build_trainer
from derta.train.trainer import TrainConfig

STEPS = 16
TRAIN_TRIPLES = 64
HELD_OUT = 16


def refusal_logprob(model, tokenizer, triples) -> float:
    """Mean log P(refusal | q, h_<t) over every position t of h (labels of RTO rows mark them)."""
    refusal = refusal_token_id(tokenizer)
    renderer = Renderer(tokenizer, refusal, template="chat")
    rows = [renderer(TrainingExample([Message("user", t.query)], t.harmful_response, objective="rto")) for t in triples]
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for r in rows:
            ids = torch.tensor([r.input_ids])
            logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), dim=-1)
            labels = torch.tensor(r.labels[1:])
            at = labels.ne(IGNORE_INDEX)
            assert torch.all(labels[at] == refusal)
            total += logp[at, refusal].sum().item()
            count += int(at.sum())
    return total / count


def train(model, tokenizer, examples, out) -> None:
    cfg = TrainConfig(
        model="tiny", output_dir=str(out), batch_size=4, total_batch_size=4, max_steps=STEPS, learning_rate=3e-3,
        warmup_ratio=0.0, weight_decay=0.0, lr_scheduler="constant", save_steps=10_000, logging_steps=10_000,
        progress=False, template="chat", seed=0,
    )
    trainer = build_trainer(cfg, model, tokenizer, examples)
    trainer.train()
    assert trainer.state.global_step == STEPS


def test_rto_raises_refusal_probability_at_harmful_positions(world, bpe_tokenizer, tiny_model, tmp_path):
    torch.manual_seed(0)
    tok = bpe_tokenizer
    train_triples = world.triples[:TRAIN_TRIPLES]
    held_out = world.triples[-HELD_OUT:]
    assert not {t.id for t in train_triples} & {t.id for t in held_out}
    init = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    before = refusal_logprob(tiny_model, tok, held_out)

    vanilla_model = copy.deepcopy(tiny_model)
    train(vanilla_model, tok, build("vanilla", train_triples), tmp_path / "vanilla")
    rto_model = copy.deepcopy(tiny_model)
    rto_examples = build("rto", train_triples)
    assert sum(x.objective == "rto" for x in rto_examples) == TRAIN_TRIPLES // 2
    train(rto_model, tok, rto_examples, tmp_path / "rto")

    for m in (vanilla_model, rto_model):  # both runs trained from the same initialisation
        changed = [k for k, v in m.state_dict().items() if not torch.equal(v, init[k])]
        assert changed and any("layers.0" in k for k in changed)
    assert all(torch.equal(v, init[k]) for k, v in tiny_model.state_dict().items())

    vanilla = refusal_logprob(vanilla_model, tok, held_out)
    rto = refusal_logprob(rto_model, tok, held_out)
    # Random init: about -log(vocab) ~ -6.9. RTO: the refusal is likely anywhere in h.
    assert rto > vanilla + 1.0, (before, vanilla, rto)
    assert rto > before + 2.0, (before, vanilla, rto)
    assert rto > -3.5, (before, vanilla, rto)
