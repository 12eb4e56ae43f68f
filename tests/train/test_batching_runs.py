"""`train` with each batching setting: the loss goes down, and derta_run.json records the settings,
the batching mode and what it cost (padding efficiency, tokens per step)."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from transformers import AutoModelForCausalLM

from derta.cli import main
from derta.data.formats import load_training_examples
from derta.data.render import RenderedDataset
from derta.io import write_jsonl
from derta.train.collator import DeRTaCollator
from derta.train.loss import weighted_causal_lm_loss
from derta.train.run import make_renderer, train
from derta.train.trainer import TrainConfig, load_tokenizer

SETTINGS = {
    "padded": {"padding_free": False},
    "padded-grouped": {"padding_free": False, "group_by_length": True},
    "padding-free": {},
    "bfd": {"packing": "bfd"},
    "full-logits": {"loss_chunk_size": None},
}


@pytest.fixture(scope="module")
def setup(tmp_path_factory, world, bpe_tokenizer):
    from derta.demo.model import tiny_llama

    root = tmp_path_factory.mktemp("batching")
    model_dir = root / "model"
    tiny_llama(bpe_tokenizer, hidden=64, layers=2, heads=4, seed=0).save_pretrained(model_dir)
    bpe_tokenizer.save_pretrained(model_dir)
    triples = write_jsonl(root / "triples.jsonl", [t.to_dict() for t in world.triples[:12]])
    helpful = write_jsonl(root / "helpful.jsonl", [{"instruction": h.query, "output": h.response} for h in world.helpful_train[:12]])
    data = root / "data.jsonl"
    assert main(["data", "build", "--recipe", "derta", "--triples", str(triples), "--helpful", str(helpful), "--helpful-ratio", "0.5",
                 "--out", str(data)]) == 0
    return root, model_dir, data


def mean_loss(model_path, cfg: TrainConfig) -> float:
    """The DeRTa objective of a model over every training row (epoch 0), padded batches of 8."""
    tok = load_tokenizer(str(cfg.model))
    ds = RenderedDataset(load_training_examples(cfg.data), make_renderer(cfg, tok), seed=cfg.seed)
    model = AutoModelForCausalLM.from_pretrained(model_path).eval()
    rows = [ds[i] for i in range(len(ds))]
    total = 0.0
    with torch.no_grad():
        for i in range(0, len(rows), 8):
            b = DeRTaCollator(tok.pad_token_id)(rows[i : i + 8])
            n = int(b["labels"][:, 1:].ne(-100).sum())
            total += weighted_causal_lm_loss(model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits, b["labels"], b["loss_weights"]).item() * n
    return total / sum(sum(1 for lab in r["labels"][1:] if lab != -100) for r in rows)


@pytest.fixture(scope="module")
def runs(setup):
    root, model_dir, data = setup
    torch.set_num_threads(1)
    out = {}
    for name, changes in SETTINGS.items():
        cfg = TrainConfig(model=str(model_dir), data=str(data), output_dir=str(root / name), batch_size=4, total_batch_size=8, max_steps=6,
                          learning_rate=3e-3, warmup_ratio=0.0, weight_decay=0.0, lr_scheduler="constant", max_length=256, save_steps=1000,
                          logging_steps=1, progress=False, seed=0, **changes)
        final = train(cfg)
        out[name] = (cfg, final, json.loads((final / "derta_run.json").read_text()))
    return out


@pytest.mark.parametrize("name", list(SETTINGS))
def test_each_setting_trains_and_is_recorded(runs, setup, name):
    cfg, final, record = runs[name]
    before, after = mean_loss(setup[1], cfg), mean_loss(final, cfg)
    assert after < before - 0.1, (name, before, after)
    for key, value in SETTINGS[name].items():
        assert record["config"][key] == value
    b = record["batching"]
    assert b["optimizer_steps"] == 6 and b["real_tokens"] > 0 and b["tokens_per_step"] == pytest.approx(b["real_tokens"] / 6, abs=0.1)
    assert b["mode"] == {"padded": "padded", "padded-grouped": "padded, length-grouped", "padding-free": "padding-free",
                         "bfd": "bfd", "full-logits": "padding-free"}[name]
    assert b["loss"].startswith("full logits" if name == "full-logits" else "chunked")


def test_padding_efficiency_padded_vs_padding_free(runs):
    padded, free, grouped, bfd = (runs[k][2]["batching"] for k in ("padded", "padding-free", "padded-grouped", "bfd"))
    assert padded["padding_efficiency"] < 0.95
    # on SDPA the rows are packed into sequences of at most max_length tokens, right-padded to the
    # longest: nearly no padding, not none
    assert free["padding_efficiency"] > max(padded["padding_efficiency"], 0.85)
    assert "at most 256 tokens" in free["sequences"]
    assert bfd["padding_efficiency"] > padded["padding_efficiency"] and bfd["rows_per_bin"] > 1 and bfd["bins"] < runs["bfd"][2]["examples"]
    assert grouped["padding_efficiency"] > padded["padding_efficiency"]
    # the same rows in the same order: the same real tokens, only fewer computed ones
    assert free["real_tokens"] == padded["real_tokens"] and free["computed_tokens"] < padded["computed_tokens"]
    assert free["rows"] == padded["rows"] == round(padded["rows_per_step"] * 6) > 6


def test_padding_free_trains_the_padded_weights(runs):
    """Same rows, same steps: padding-free and padded runs end at the same weights (float tolerance:
    six Adam steps at lr 3e-3 move a weight by up to 1.8e-2, and Adam's normalised update turns float32
    noise in a near-zero gradient into up to ~1e-5 of it)."""
    from safetensors.torch import load_file

    a, b = (load_file(str(runs[k][1] / "model.safetensors")) for k in ("padded", "padding-free"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=3e-5)


def test_the_log_says_how_it_batched(setup, caplog):
    root, model_dir, data = setup
    cfg = TrainConfig(model=str(model_dir), data=str(data), output_dir=str(root / "logged"), batch_size=4, total_batch_size=4, max_steps=1,
                      save_steps=1000, progress=False)
    with caplog.at_level(logging.INFO, logger="derta.train"):
        train(cfg)
    text = caplog.text
    assert "batching: padding-free" in text and "padding efficiency 1.000" in text and "tokens/step" in text
