"""LoRA and DPO training end to end on a tiny local model, and dataset directories as input."""

import json

import torch
import yaml

from derta.cli import main
from derta.records import Triple


def _triples(world, n=12):
    return [t.to_dict() for t in world.triples[:n]]


def _save(tmp_path, tiny_model, tok):
    d = tmp_path / "model"
    tiny_model.save_pretrained(d)
    tok.save_pretrained(d)
    return d


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _config(tmp_path, **kw):
    p = tmp_path / "cfg.yaml"
    base = {"batch_size": 4, "total_batch_size": 4, "learning_rate": 5e-3, "warmup_ratio": 0.0, "save_steps": 100,
            "logging_steps": 100, "progress": False, "max_length": 128, "max_steps": 3}
    p.write_text(yaml.safe_dump({**base, **kw}))
    return p


def test_lora_trains_adapters_only(tmp_path, world, tiny_model, bpe_tokenizer):
    model_dir = _save(tmp_path, tiny_model, bpe_tokenizer)
    triples = _write_jsonl(tmp_path / "t.jsonl", _triples(world))
    data = tmp_path / "d.jsonl"
    assert main(["data", "build", "--recipe", "derta", "--triples", str(triples), "--out", str(data)]) == 0
    out = tmp_path / "run"
    cfg = _config(tmp_path, model=str(model_dir), data=str(data), output_dir=str(out), lora=True, lora_r=4, lora_alpha=8)
    assert main(["train", "--config", str(cfg)]) == 0
    final = out / "final"
    adapter = json.loads((final / "adapter_config.json").read_text())
    assert adapter["r"] == 4 and adapter["lora_alpha"] == 8
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(model_dir)
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir), final)
    lora_b = [p for n, p in tuned.named_parameters() if "lora_B" in n]
    assert lora_b and any(p.abs().sum() > 0 for p in lora_b)  # lora_B starts at zero: it moved
    merged = tuned.merge_and_unload()
    q_before = base.model.layers[0].self_attn.q_proj.weight
    assert not torch.allclose(q_before, merged.model.layers[0].self_attn.q_proj.weight)
    assert torch.equal(base.model.embed_tokens.weight, merged.model.embed_tokens.weight)  # not adapted


def _margin(model, tok, pair):
    """log p(chosen) - log p(rejected) of the answer tokens, as DPO sees them."""
    from derta.train.run import dpo_rows

    row = dpo_rows([pair], tok, "chat")[0]
    out = []
    for key in ("chosen", "rejected"):
        p_ids = tok(row["prompt"], add_special_tokens=False)["input_ids"]
        a_ids = tok(row[key], add_special_tokens=False)["input_ids"]
        ids = torch.tensor([p_ids + a_ids])
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1], -1)
        out.append(sum(logp[len(p_ids) - 1 + i, t].item() for i, t in enumerate(a_ids)))
    return out[0] - out[1]


def test_dpo_pairs_train_with_trl_and_prefer_the_safe_answer(tmp_path, world, tiny_model, bpe_tokenizer):
    from transformers import AutoModelForCausalLM

    from derta.data.formats import load_preference_pairs

    model_dir = _save(tmp_path, tiny_model, bpe_tokenizer)
    triples = _write_jsonl(tmp_path / "t.jsonl", _triples(world, 8))
    data = tmp_path / "pairs.jsonl"
    assert main(["data", "build", "--recipe", "dpo", "--triples", str(triples), "--out", str(data)]) == 0
    out = tmp_path / "dpo"
    cfg = _config(tmp_path, method="dpo", model=str(model_dir), data=str(data), output_dir=str(out), max_steps=6, learning_rate=1e-3)
    pair = load_preference_pairs(data)[0]
    before = _margin(AutoModelForCausalLM.from_pretrained(model_dir), bpe_tokenizer, pair)
    assert main(["train", "--config", str(cfg)]) == 0
    record = json.loads((out / "final" / "derta_run.json").read_text())
    assert record["method"] == "dpo" and record["pairs"] == 8
    after = _margin(AutoModelForCausalLM.from_pretrained(out / "final"), bpe_tokenizer, pair)
    assert after > before


def test_a_dataset_directory_is_read_with_datasets(tmp_path, world):
    from derta.data.formats import load_triples

    d = tmp_path / "hf_dir"
    d.mkdir()
    _write_jsonl(d / "train.jsonl", _triples(world, 5))
    triples = load_triples(str(d))
    assert len(triples) == 5 and isinstance(triples[0], Triple)
    assert triples[0].query == world.triples[0].query
