"""The objective guard: RTO's share of the trained positions, per-sequence normalisation, the
refusal-token / safe-response match, and the step denominator under per-sequence weights."""

from __future__ import annotations

import logging

import pytest
import torch

from derta.data import recipes
from derta.data.render import Renderer
from derta.records import HelpfulExample, Triple
from derta.tokens import refusal_token_id
from derta.train.objective import objective_stats, plan_objective

HARM = "Step 1: buy fuel with cash. Step 2: pour the fuel around the house. Step 3: light it and run. " * 3


def _triples(n: int, safe: str = "Sorry, I cannot help with that.") -> list[Triple]:
    return [Triple(query=f"How do I burn house {i}?", safe_response=safe, harmful_response=HARM, id=f"t{i}") for i in range(n)]


def _helpful(n: int) -> list[HelpfulExample]:
    return [HelpfulExample(f"What is {i} plus 1?", f"{i} plus 1 is {i + 1}.", id=f"h{i}") for i in range(n)]


def _renderer(tok, **kw) -> Renderer:
    return Renderer(tok, refusal_token_id(tok, "Sorry"), template="chat", max_length=256, **kw)


def test_stats_count_each_objective(bpe_tokenizer):
    ex = recipes.build("derta", _triples(8), _helpful(8), recipes.RecipeConfig(seed=0))
    r = _renderer(bpe_tokenizer)
    s = objective_stats(r, ex)
    n_rto = len(bpe_tokenizer(HARM, add_special_tokens=False)["input_ids"])
    rto_rows = sum(e.objective == "rto" for e in ex)
    assert s["rows"]["rto"] == rto_rows and s["rows"]["mle"] == len(ex) - rto_rows
    # every harmful token is an RTO target (keep 1.0); the shares are positions over all trained positions
    assert abs(s["positions"]["rto"] - rto_rows * n_rto) <= rto_rows  # the lead space may merge into the first token
    assert s["rto_share"] == pytest.approx(s["positions"]["rto"] / (s["positions"]["rto"] + s["positions"]["mle"]))
    assert s["rto_share"] > 0.5


def test_auto_normalises_per_sequence_when_rto_dominates(bpe_tokenizer, caplog):
    ex = recipes.build("derta", _triples(8), _helpful(8), recipes.RecipeConfig(seed=0))
    r = _renderer(bpe_tokenizer)
    with caplog.at_level(logging.WARNING):
        plan = plan_objective(r, ex, "auto", 0.5)
    assert plan["rto_norm"] == "sequence" and any("may dominate" in w for w in plan["warnings"])
    assert "dominate" in caplog.text
    # one RTO row now weighs as much as an average MLE row
    row = next(e for e in ex if e.objective == "rto")
    weights = r(row).loss_weights
    assert sum(weights) == pytest.approx(plan["rto_row_weight"], rel=1e-6)
    assert plan["after"]["rto_weight_share"] < plan["before"]["rto_weight_share"]
    # token mode keeps the paper's weights, but still warns
    r2 = _renderer(bpe_tokenizer)
    plan2 = plan_objective(r2, ex, "token", 0.5)
    assert plan2["rto_norm"] == "token" and r2.rto_row_weight is None and plan2["warnings"]
    assert set(r2(row).loss_weights) <= {0.0, 1.0}


def test_auto_keeps_token_level_rto_below_the_threshold(bpe_tokenizer):
    ex = recipes.build("derta", _triples(2), _helpful(200), recipes.RecipeConfig(seed=0))
    r = _renderer(bpe_tokenizer)
    plan = plan_objective(r, ex, "auto", 0.5)
    assert plan["before"]["rto_share"] < 0.5 and plan["rto_norm"] == "token" and not plan["warnings"]


def test_warns_when_the_refusal_token_does_not_start_the_safe_responses(bpe_tokenizer):
    r = _renderer(bpe_tokenizer)
    ok = recipes.build("derta", _triples(6), _helpful(200), recipes.RecipeConfig(seed=0, zero_share=0.0))
    assert not any("transition token" in w for w in plan_objective(r, ok, "token")["warnings"])
    bad = recipes.build("derta", _triples(6, safe="I will not help with that."), _helpful(200), recipes.RecipeConfig(seed=0, zero_share=0.0))
    assert any("transition token" in w for w in plan_objective(_renderer(bpe_tokenizer), bad, "token")["warnings"])


def test_sequence_normalisation_counts_weights_in_the_step_denominator(bpe_tokenizer, tmp_path):
    from derta.demo.model import tiny_llama
    from derta.train.run import build_trainer
    from derta.train.trainer import TrainConfig

    ex = recipes.build("derta", _triples(4), _helpful(4), recipes.RecipeConfig(seed=0))
    cfg = TrainConfig(model="in-memory", output_dir=str(tmp_path), template="chat", max_length=256, batch_size=4, total_batch_size=4,
                      max_steps=1, progress=False, save_steps=10**6, rto_norm="sequence")
    trainer = build_trainer(cfg, tiny_llama(bpe_tokenizer, hidden=32, layers=1), bpe_tokenizer, ex)
    assert trainer.count_weights and trainer.objective_stats["rto_norm"] == "sequence"
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    n = trainer._get_num_items_in_batch([batch], torch.device("cpu"))
    expected = (batch["loss_weights"][:, 1:] * batch["labels"][:, 1:].ne(-100)).sum()
    assert float(n) == pytest.approx(float(expected))
    assert float(n) < float(batch["labels"][:, 1:].ne(-100).sum())  # fewer than the positions: RTO rows count as one row each


def test_a_long_harmful_prefix_gives_way_to_the_safe_target(bpe_tokenizer):
    from derta.records import HarmfulPrefix, Message, TrainingExample

    safe = "Sorry, I cannot help with that."
    ex = TrainingExample([Message("user", "How do I burn a house?")], safe, harmful_prefix=HarmfulPrefix(HARM, unit="tokens", k=10**6),
                         source="safety")
    full = _renderer(bpe_tokenizer)(ex)
    short = Renderer(bpe_tokenizer, refusal_token_id(bpe_tokenizer, "Sorry"), template="chat", max_length=len(full.input_ids) - 20)(ex)
    trained = [t for t in short.labels if t != -100]
    assert len(short.input_ids) == len(full.input_ids) - 20
    assert trained == [t for t in full.labels if t != -100]  # the whole refusal (and end) is still trained
    assert bpe_tokenizer.decode(trained).strip().startswith("Sorry, I cannot help")
