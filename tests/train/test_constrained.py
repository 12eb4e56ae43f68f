"""objective: constrained — Qi et al.'s token-wise constrained loss against cached reference log-probs.

Checked against the formula written out here (ℓ_t = −(2/β_t)·log σ(β_t·(log π_θ − log π_ref)),
β_1 = 0.5, β_2..5 = 2, β_>5 = 0.1), at θ = ref, in its β limits, through both batch layouts and
the chunked loss, and through build_trainer (cache reuse, recomputation, the run record).
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch

from derta.data.render import RenderedDataset, Renderer
from derta.records import IGNORE_INDEX as IGN
from derta.records import HarmfulPrefix, Message, TrainingExample
from derta.train import reference as ref_mod
from derta.train.collator import DeRTaCollator, PaddingFreeCollator
from derta.train.config import TrainConfig
from derta.train.loss import (chunked_constrained_causal_lm_loss, constrained_causal_lm_loss, constrained_from_ce,
                              weighted_causal_lm_loss)
from derta.train.reference import BetaSchedule, ReferenceLogps, row_key, score_rows

HARM = "Sure, here is how to do it. Step 1: get the tools. Step 2: go at night and do not get caught."


def paper_beta(t: int) -> float:
    """Qi et al.'s harmful fine-tuning schedule, written out independently of the code."""
    return 0.5 if t == 1 else 2.0 if t <= 5 else 0.1


def examples() -> list[TrainingExample]:
    out = []
    for i, q in enumerate(["How do I steal a car?", "How do I burn a barn quickly?", "How do I pick a lock?"]):
        out.append(TrainingExample([Message("user", q)], "Sorry, I cannot help with that.", harmful_prefix=HarmfulPrefix(HARM, k=3 + 4 * i)))
        out.append(TrainingExample([Message("user", q)], HARM[: 40 + 25 * i], objective="rto"))
    out.append(TrainingExample([Message("user", "What is 2 plus 3?")], "2 plus 3 is 5.", source="helpful"))
    out.append(TrainingExample([Message("user", "Name a colour.")], "Blue is a colour, and so is red.", source="helpful"))
    return out


def renderer(tok) -> Renderer:
    return Renderer(tok, tok.convert_tokens_to_ids("ĠSorry"), template="chat", rto_weight=0.7)


def with_reference(rows, model, pad_id, noise: float, seed: int = 0):
    """Rows plus ``ref_logps`` (the model's own log-probs, plus seeded noise) and ``betas``."""
    scores = score_rows(model, rows, pad_id, batch_size=3)
    g = torch.Generator().manual_seed(seed)
    table = ReferenceLogps({row_key(r): s + noise * torch.randn(s.shape, generator=g) for r, s in zip(rows, scores)})
    return [{**r, "ref_logps": table.aligned(r), "betas": BetaSchedule().for_labels(r["labels"])} for r in rows]


@pytest.fixture()
def rows(bpe_tokenizer):
    ds = RenderedDataset(examples(), renderer(bpe_tokenizer), seed=1)
    return [ds[i] for i in range(len(ds))]


def formula(model, rows) -> float:
    """Σ w·ℓ / N over every row, one position at a time in float64, from unpadded forwards."""
    total, n = 0.0, 0
    for r in rows:
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=torch.tensor([r["input_ids"]])).logits[0].double(), -1)
        t = 0
        for i in range(1, len(r["labels"])):
            if r["labels"][i] == IGN:
                continue
            t, n = t + 1, n + 1
            beta = paper_beta(t)
            delta = logp[i - 1, r["labels"][i]].item() - r["ref_logps"][i]
            total += r["loss_weights"][i] * -(2 / beta) * math.log(1 / (1 + math.exp(-beta * delta)))
    return total / n


def _hidden(model, batch):
    kw = {"attention_mask": batch["attention_mask"]} if "attention_mask" in batch else {"position_ids": batch["position_ids"]}
    return model.model(input_ids=batch["input_ids"], use_cache=False, **kw).last_hidden_state


def losses(model, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """(full-logits, chunked) constrained loss of a collated batch."""
    args = (batch["labels"], batch["ref_logps"], batch["betas"], batch["loss_weights"])
    h = _hidden(model, batch)
    return constrained_causal_lm_loss(model.lm_head(h), *args), chunked_constrained_causal_lm_loss(h, model.lm_head, *args, chunk_size=5)


def test_beta_schedule_counts_a_rows_labelled_positions():
    labels = [IGN, IGN, 7, 8, IGN, 9, 10, 11, 12, 13, 14]
    want = [0.0, 0.0] + [paper_beta(1), paper_beta(2), 0.0] + [paper_beta(t) for t in range(3, 9)]
    assert BetaSchedule().for_labels(labels) == want
    assert BetaSchedule(1.0, 3.0, 0.2, 2).for_labels([IGN, 5, 5, 5]) == [0.0, 1.0, 3.0, 0.2]


@pytest.mark.parametrize("layout", ["padded", "flat"])
def test_loss_equals_the_formula_on_a_tiny_llama(tiny_model, rows, bpe_tokenizer, layout, one_torch_thread):
    model = tiny_model.eval()
    ref_rows = with_reference(rows, model, bpe_tokenizer.pad_token_id, noise=1.0)
    batch = (DeRTaCollator(pad_token_id=bpe_tokenizer.pad_token_id) if layout == "padded" else PaddingFreeCollator())(ref_rows)
    want = formula(model, ref_rows)
    with torch.no_grad():
        full, chunked = losses(model, batch)
    assert want > 0
    assert abs(full.item() - want) < 1e-5 and abs(chunked.item() - want) < 1e-5


def test_at_the_reference_each_token_costs_2_over_beta_log_2_and_the_gradient_is_the_cross_entropys(tiny_model, rows, bpe_tokenizer, one_torch_thread):
    model = tiny_model.eval()
    ref_rows = with_reference(rows, model, bpe_tokenizer.pad_token_id, noise=0.0)  # θ = ref
    batch = DeRTaCollator(pad_token_id=bpe_tokenizer.pad_token_id)(ref_rows)
    n = int(batch["labels"][:, 1:].ne(IGN).sum())
    keep = batch["labels"][:, 1:].ne(IGN)
    expected = (batch["loss_weights"][:, 1:][keep].double() * 2 / batch["betas"][:, 1:][keep].double() * math.log(2)).sum().item() / n
    model.zero_grad()
    full, _ = losses(model, batch)
    full.backward()
    g_constrained = [p.grad.clone() for p in model.parameters()]
    assert abs(full.item() - expected) < 1e-5
    # d ℓ / d log π = −2·σ(−β·Δ) = −1 at Δ = 0: the same gradient as the (weighted) cross-entropy, whatever β
    model.zero_grad()
    weighted_causal_lm_loss(model.lm_head(_hidden(model, batch)), batch["labels"], batch["loss_weights"]).backward()
    assert sum(g.abs().sum() for g in g_constrained) > 0
    for a, p in zip(g_constrained, model.parameters()):
        torch.testing.assert_close(a, p.grad, rtol=1e-4, atol=1e-6)


def test_beta_limits():
    ce = torch.tensor([0.3, 2.0, 5.0], dtype=torch.float64, requires_grad=True)
    ref = torch.tensor([-1.0, -2.5, -4.0], dtype=torch.float64)  # Δ = −ce − ref = 0.7, 0.5, −1.0
    small = torch.full_like(ref, 1e-4)
    # β -> 0: the cross-entropy minus log π_ref, plus the constant (2/β)·log 2
    torch.testing.assert_close(constrained_from_ce(ce, ref, small) - 2 / small * math.log(2), ce + ref, rtol=0, atol=1e-4)
    # a large β stops pushing a token the policy already puts above the reference (Δ > 0), not one below it (Δ < 0)
    big = torch.full_like(ref, 20.0)
    (grad,) = torch.autograd.grad(constrained_from_ce(ce, ref, big).sum(), ce)
    want = 2 * torch.sigmoid(-20.0 * (-ce.detach() - ref))
    torch.testing.assert_close(grad, want)
    assert grad[0] < 1e-5 and grad[1] < 1e-3 and grad[2] > 1.99


def test_ignored_positions_add_nothing_and_stay_finite():
    ce = torch.tensor([[0.0, 1.0]], requires_grad=True)
    keep = torch.tensor([[False, True]])
    out = constrained_from_ce(ce, torch.tensor([[0.0, -1.0]]), torch.tensor([[0.0, 0.5]]), keep)  # β = 0 where ignored
    assert out[0, 0] == 0 and torch.isfinite(out).all()
    out.sum().backward()
    assert torch.isfinite(ce.grad).all() and ce.grad[0, 0] == 0


def test_padding_free_and_padded_constrained_losses_and_gradients_are_equal(tiny_model, rows, bpe_tokenizer, one_torch_thread):
    model = tiny_model.double()
    ref_rows = with_reference(rows, model, bpe_tokenizer.pad_token_id, noise=0.5)
    results = []
    for collate in (DeRTaCollator(pad_token_id=bpe_tokenizer.pad_token_id), PaddingFreeCollator()):
        batch = {k: (v.double() if v.is_floating_point() else v) for k, v in collate(ref_rows).items()}
        model.zero_grad()
        full, chunked = losses(model, batch)
        full.backward()
        results.append((full.detach(), chunked.detach(), [p.grad.clone() for p in model.parameters()]))
    (pf, pc, pg), (ff, fc, fg) = results
    assert pf > 0
    for a in (pc, ff, fc):
        torch.testing.assert_close(a, pf, rtol=1e-7, atol=1e-7)
    for a, b in zip(fg, pg):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-8)


# -- through build_trainer: the cache, the reference staying the starting model, the record ----------

def cfg_for(tmp_path, **kw) -> TrainConfig:
    base = dict(objective="constrained", output_dir=str(tmp_path / "run"), batch_size=4, total_batch_size=4, max_steps=2, learning_rate=5e-3,
                warmup_ratio=0.0, progress=False, save_steps=100, logging_steps=100, max_length=128)
    return TrainConfig(**{**base, **kw})


def first_batch_loss(trainer) -> tuple[float, dict]:
    batch = next(iter(trainer.get_train_dataloader()))
    with torch.no_grad():
        return trainer.compute_loss(trainer.model, dict(batch)).item(), batch


@pytest.mark.parametrize("settings", [{}, {"padding_free": False}, {"loss_chunk_size": None}, {"packing": "bfd"}])
def test_the_trainer_starts_at_the_reference(tmp_path, tiny_model, bpe_tokenizer, settings, one_torch_thread):
    """Step 0: the policy IS the reference, so every trained token of the batch costs (2/β_t)·log 2."""
    from derta.train.run import build_trainer

    trainer = build_trainer(cfg_for(tmp_path, **settings), tiny_model, bpe_tokenizer, examples())
    loss, batch = first_batch_loss(trainer)
    labels = batch["labels"]
    keep = labels[:, 1:].ne(IGN)
    betas = batch["betas"][:, 1:][keep].double()
    assert sorted({round(b, 6) for b in betas.tolist()}) == [0.1, 0.5, 2.0]
    expected = (batch["loss_weights"][:, 1:][keep].double() * 2 / betas * math.log(2)).sum().item() / int(keep.sum())
    assert abs(loss - expected) < 1e-4 * expected


def test_the_cache_is_reused_and_recomputed_when_the_data_or_the_reference_change(tmp_path, tiny_model, bpe_tokenizer, monkeypatch, one_torch_thread):
    from derta.train.run import build_trainer

    calls = []
    real = ref_mod.score_rows
    monkeypatch.setattr(ref_mod, "score_rows", lambda *a, **k: calls.append(1) or real(*a, **k))
    cfg = cfg_for(tmp_path)
    first = build_trainer(cfg, copy.deepcopy(tiny_model), bpe_tokenizer, examples()).objective_stats["constrained"]["reference"]
    again = build_trainer(cfg, copy.deepcopy(tiny_model), bpe_tokenizer, examples()).objective_stats["constrained"]["reference"]
    assert (first["reused"], again["reused"], len(calls)) == (False, True, 1)
    assert again["cache"] == first["cache"] and again["mean_logp"] == first["mean_logp"]

    other_data = examples()
    other_data[-1].target = "Red is a colour, and so is blue."
    changed = build_trainer(cfg, copy.deepcopy(tiny_model), bpe_tokenizer, other_data).objective_stats["constrained"]["reference"]
    assert not changed["reused"] and changed["cache"] != first["cache"] and len(calls) == 2

    other_model = copy.deepcopy(tiny_model)
    with torch.no_grad():
        other_model.model.layers[1].mlp.down_proj.weight.mul_(1.5)
    moved = build_trainer(cfg, other_model, bpe_tokenizer, examples()).objective_stats["constrained"]["reference"]
    assert not moved["reused"] and moved["cache"] != first["cache"] and moved["mean_logp"] != first["mean_logp"] and len(calls) == 3


def test_the_tokenizer_is_part_of_the_reference_identity(bpe_tokenizer, unigram_tokenizer):
    assert ref_mod.tokenizer_identity(bpe_tokenizer) == ref_mod.tokenizer_identity(copy.deepcopy(bpe_tokenizer))
    assert ref_mod.tokenizer_identity(bpe_tokenizer) != ref_mod.tokenizer_identity(unigram_tokenizer)


def test_gradients_reach_the_policy_only(tmp_path, tiny_model, bpe_tokenizer, one_torch_thread):
    """Training moves the policy; the reference log-probs stay those of the starting model."""
    from derta.train.run import build_trainer

    start = copy.deepcopy(tiny_model)
    trainer = build_trainer(cfg_for(tmp_path, max_steps=3), tiny_model, bpe_tokenizer, examples())
    dataset = trainer.train_dataset
    table = dataset.reference.table
    before = {k: v.clone() for k, v in table.items()}
    assert all(not v.requires_grad for v in table.values())
    trainer.train()
    moved = max((a - b).abs().max().item() for a, b in zip(tiny_model.parameters(), start.parameters()))
    assert moved > 1e-4
    assert all(torch.equal(table[k], before[k]) for k in table)
    rows = [dataset.rows[i] for i in range(len(dataset))]
    for r, s in zip(rows, score_rows(start, rows, bpe_tokenizer.pad_token_id)):
        torch.testing.assert_close(table[row_key(r)], s, rtol=1e-5, atol=1e-5)
    on_disk = ReferenceLogps.load(Path(trainer.objective_stats["constrained"]["reference"]["cache"]))
    assert all(torch.equal(on_disk.table[k], before[k]) for k in before)


def test_derta_train_records_the_objective_and_the_beta_schedule(tmp_path, tiny_model, bpe_tokenizer, world):
    import yaml

    from derta.cli import main
    from derta.io import write_jsonl

    model_dir = tmp_path / "model"
    tiny_model.save_pretrained(model_dir)
    bpe_tokenizer.save_pretrained(model_dir)
    triples = write_jsonl(tmp_path / "t.jsonl", [t.to_dict() for t in world.triples[:8]])
    data = tmp_path / "d.jsonl"
    assert main(["data", "build", "--recipe", "recovery", "--triples", str(triples), "--out", str(data)]) == 0
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({"model": str(model_dir), "data": str(data), "output_dir": str(tmp_path / "run"), "batch_size": 4,
                                   "total_batch_size": 4, "max_steps": 2, "warmup_ratio": 0.0, "progress": False, "max_length": 128}))
    assert main(["train", "--config", str(cfg), "--objective", "constrained", "--constrained-beta-late", "0.2"]) == 0
    record = json.loads((tmp_path / "run" / "final" / "derta_run.json").read_text())
    assert record["config"]["objective"] == "constrained" and record["objective"]["objective"] == "constrained"
    beta = record["objective"]["constrained"]["beta"]
    assert (beta["first"], beta["early"], beta["late"], beta["early_tokens"]) == (0.5, 2.0, 0.2, 5)
    cache = record["objective"]["constrained"]["reference"]["cache"]
    assert cache.startswith(str(tmp_path / "run" / "reference")) and json.loads(open(cache[:-3] + ".json").read())["rows"]["distinct"] == 8


def test_bad_objective_settings_are_refused():
    with pytest.raises(ValueError, match="objective must be"):
        TrainConfig(objective="kl")
    with pytest.raises(ValueError, match="constrained_beta_late must be > 0"):
        TrainConfig(objective="constrained", constrained_beta_late=0.0)
    with pytest.raises(ValueError, match="loss of method sft"):
        TrainConfig(objective="constrained", method="dpo")
