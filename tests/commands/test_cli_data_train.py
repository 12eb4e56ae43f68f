"""`derta data build` and `derta train` end to end through derta.cli.main."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from derta.cli import main
from derta.commands.data import meta_path
from derta.io import read_jsonl, write_jsonl

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture()
def inputs(tmp_path, world):
    triples = [
        {"id": t.id, "query": t.query, "safe_response": t.safe_response, "harmful_response": t.harmful_response,
         "rebuttal_response": t.rebuttal_response, "category": t.category}
        for t in world.triples[:10]
    ]
    helpful = [{"instruction": h.query, "output": h.response, "id": h.id} for h in world.helpful_train[:10]]
    return write_jsonl(tmp_path / "triples.jsonl", triples), write_jsonl(tmp_path / "helpful.jsonl", helpful)


def build(*argv: str) -> int:
    return main(["data", "build", *map(str, argv)])


# --- derta data build ----------------------------------------------------------------------------


def test_data_build_derta_with_helpful(inputs, tmp_path, capsys):
    triples, helpful = inputs
    out = tmp_path / "out" / "derta.jsonl"
    assert build("--recipe", "derta", "--triples", triples, "--helpful", helpful, "--helpful-ratio", "0.5",
                 "--instances", "8", "--seed", "3", "--out", out) == 0
    rows = read_jsonl(out)
    assert len(rows) == 12
    assert sum(r["objective"] == "rto" for r in rows) == 4
    assert sum(bool(r["objective"] == "mle" and r["source"] == "safety" and r["harmful_prefix"]) for r in rows) == 4
    assert sum(r["source"] == "helpful" for r in rows) == 4
    meta = json.loads(meta_path(out).read_text())
    assert meta_path(out).name == "derta.meta.json"
    assert meta["counts"] == {"safety_mle": 4, "rto": 4, "helpful": 4, "dpo_pairs": 0, "reference_mle": 0, "total": 12}
    assert meta["seed"] == 3 and meta["args"]["recipe"] == "derta" and meta["args"]["helpful_ratio"] == 0.5
    assert meta["recipe_config"]["instances"] == 8 and meta["triples_read"] == 10
    assert meta["environment"]["torch"] and meta["environment"]["transformers"]
    printed = capsys.readouterr().out
    assert "RTO" in printed and "helpful" in printed and "12" in printed
    mix = meta["objective_mix"]  # every word of a harmful response is an RTO target; MLE targets are the answers
    rto_rows = [r for r in rows if r["objective"] == "rto"]
    assert mix["unit"] == "words" and mix["rto"] == sum(len(r["target"].split()) for r in rto_rows)
    assert mix["rto_share"] == pytest.approx(mix["rto"] / (mix["rto"] + mix["mle"]))
    assert f"RTO targets are {100 * mix['rto_share']:.0f}%" in printed
    # Same seed, same file; another seed, another order.
    again = tmp_path / "again.jsonl"
    build("--recipe", "derta", "--triples", triples, "--helpful", helpful, "--helpful-ratio", "0.5", "--instances", "8", "--seed", "3", "--out", again)
    assert read_jsonl(again) == rows
    build("--recipe", "derta", "--triples", triples, "--helpful", helpful, "--helpful-ratio", "0.5", "--instances", "8", "--seed", "4", "--out", again)
    assert read_jsonl(again) != rows


def test_data_build_dpo_and_rebuttal(inputs, tmp_path):
    triples, _ = inputs
    out = tmp_path / "dpo.jsonl"
    assert build("--recipe", "dpo", "--triples", triples, "--style", "rebuttal", "--out", out) == 0
    rows = read_jsonl(out)
    src = {r["id"]: r for r in read_jsonl(triples)}
    assert len(rows) == 10
    for r in rows:
        t = src[r["metadata"]["triple_id"]]
        assert r["chosen"] == t["rebuttal_response"] and r["rejected"] == t["harmful_response"]
    assert json.loads(meta_path(out).read_text())["counts"]["dpo_pairs"] == 10


def test_data_build_reference_format_and_fixed_k(inputs, tmp_path, bpe_tokenizer):
    triples, _ = inputs
    out = tmp_path / "ref.jsonl"
    assert build("--recipe", "harmful-prefix", "--triples", triples, "--prefix-unit", "words", "--format", "reference", "--out", out) == 0
    rows = read_jsonl(out)
    assert all(set(r) == {"prefix", "text", "safe"} and r["safe"] == "false" for r in rows)
    assert all(r["prefix"].startswith("[INST] ") and r["text"].endswith("<|end_of_text|>") for r in rows)
    assert any(r["prefix"].endswith("[\\INST]") for r in rows) and any(not r["prefix"].endswith("[\\INST]") for r in rows)
    # Token-unit fixed k needs a tokenizer to count tokens.
    tok_dir = tmp_path / "tok"
    bpe_tokenizer.save_pretrained(tok_dir)
    fixed = tmp_path / "fixed.jsonl"
    assert build("--recipe", "derta", "--triples", triples, "--fixed-k", "--out", fixed) == 2
    assert build("--recipe", "derta", "--triples", triples, "--fixed-k", "--tokenizer", tok_dir, "--zero-share", "0", "--out", fixed) == 0
    ks = [r["harmful_prefix"]["k"] for r in read_jsonl(fixed) if r["harmful_prefix"]]
    assert len(ks) == 5 and all(isinstance(k, int) and k >= 1 for k in ks)


def test_data_build_imports_and_reexports_the_reference(testsets_dir, tmp_path):
    src = testsets_dir / "training_format_example.jsonl"
    ours = tmp_path / "ours.jsonl"
    assert build("--reference", src, "--out", ours) == 0
    rows = read_jsonl(ours)
    assert [r["objective"] for r in rows] == ["mle", "mle", "mle", "rto"]
    assert json.loads(meta_path(ours).read_text())["counts"]["rto"] == 1
    back = tmp_path / "back.jsonl"
    assert build("--reference", src, "--format", "reference", "--out", back) == 0
    assert read_jsonl(back) == read_jsonl(src)


def _error(capsys, *argv) -> str:
    assert build(*argv) == 2
    return capsys.readouterr().err


def test_data_build_errors_name_file_line_and_field(inputs, tmp_path, capsys):
    triples, _ = inputs
    out = tmp_path / "o.jsonl"
    lines = triples.read_text().splitlines()
    bad_json = tmp_path / "bad_json.jsonl"
    bad_json.write_text("\n".join(lines[:3] + ['{"query": "q",'] + lines[3:]) + "\n")
    err = _error(capsys, "--recipe", "vanilla", "--triples", bad_json, "--out", out)
    assert f"{bad_json}:4" in err and "invalid JSON" in err
    missing = tmp_path / "missing.jsonl"
    rows = [json.loads(x) for x in lines]
    del rows[5]["harmful_response"]
    write_jsonl(missing, rows)
    err = _error(capsys, "--recipe", "vanilla", "--triples", missing, "--out", out)
    assert f"{missing}:6" in err and "harmful_response" in err
    no_rebuttal = tmp_path / "no_rebuttal.jsonl"
    rows = [json.loads(x) for x in lines]
    rows[1]["rebuttal_response"] = ""
    write_jsonl(no_rebuttal, rows)
    err = _error(capsys, "--recipe", "vanilla", "--style", "rebuttal", "--triples", no_rebuttal, "--out", out)
    assert f"{no_rebuttal}:2" in err and "rebuttal_response" in err
    err = _error(capsys, "--recipe", "vanilla", "--instances", "50", "--triples", triples, "--out", out)
    assert str(triples) in err and "50" in err
    err = _error(capsys, "--recipe", "sft", "--triples", triples, "--out", out)
    assert "unknown recipe 'sft'" in err and "derta" in err
    err = _error(capsys, "--recipe", "vanilla", "--triples", tmp_path / "nope.jsonl", "--out", out)
    assert "nope.jsonl" in err and "no such file" in err
    err = _error(capsys, "--recipe", "vanilla", "--out", out)
    assert "--triples" in err
    err = _error(capsys, "--recipe", "dpo", "--triples", triples, "--format", "reference", "--out", out)
    assert "DPO" in err
    assert not out.exists()  # nothing half-written


def test_data_without_action_is_usage_error(capsys):
    assert main(["data"]) == 2
    assert "derta data build" in capsys.readouterr().err


# --- derta train: config ---------------------------------------------------------------------------


def test_train_print_config_yaml_and_overrides(tmp_path, capsys):
    cfg = tmp_path / "x.yaml"
    cfg.write_text("model: some/model\nlearning_rate: 1.0e-4\nlora: true\nlora_target_modules: [q_proj, v_proj]\nmax-length: 512\n")
    assert main(["train", "--config", str(cfg), "--max-length", "256", "--rto-keep", "0.05", "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"] == "some/model" and printed["learning_rate"] == 1e-4 and printed["lora"] is True
    assert printed["max_length"] == 256 and printed["rto_keep"] == 0.05  # the command line wins
    assert printed["lora_target_modules"] == ["q_proj", "v_proj"]
    assert printed["epochs"] == 2.0  # defaults are filled in
    # The printed YAML is itself a valid config that resolves to the same thing.
    again = tmp_path / "again.yaml"
    again.write_text(yaml.safe_dump(printed))
    assert main(["train", "--config", str(again), "--print-config"]) == 0
    assert yaml.safe_load(capsys.readouterr().out) == printed


def test_train_config_errors_name_file_and_key(tmp_path, capsys):
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("model: m\nlearning_rat: 1e-4\n")
    assert main(["train", "--config", str(unknown), "--print-config"]) == 2
    err = capsys.readouterr().err
    assert str(unknown) in err and "'learning_rat'" in err and "learning_rate" in err
    badtype = tmp_path / "badtype.yaml"
    badtype.write_text("max_length: lots\n")
    assert main(["train", "--config", str(badtype), "--print-config"]) == 2
    err = capsys.readouterr().err
    assert str(badtype) in err and "'max_length'" in err
    assert main(["train", "--lora", "maybe", "--print-config"]) == 2
    assert "--lora" in capsys.readouterr().err
    assert main(["train", "--template", "alpaca", "--print-config"]) == 2
    assert "template" in capsys.readouterr().err
    assert main(["train", "--config", str(tmp_path / "none.yaml")]) == 2
    assert "not found" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["train_full.yaml", "train_lora.yaml"])
def test_example_configs_carry_the_paper_settings(name, capsys):
    assert main(["train", "--config", str(REPO / "examples" / name), "--print-config"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["total_batch_size"] == 128 and cfg["epochs"] == 2
    if name == "train_full.yaml":
        expect = dict(lora=False, learning_rate=2e-5, warmup_ratio=0.03, weight_decay=2e-5, max_length=1024, rto_keep=0.05)
    else:
        expect = dict(lora=True, learning_rate=1e-4, warmup_ratio=0.0, max_length=512, lora_r=96, lora_alpha=16,
                      lora_dropout=0.05, lora_target_modules=["all-linear"], rto_keep=1.0)
    assert {k: cfg[k] for k in expect} == expect


@pytest.mark.parametrize("name, kind", [("accelerate_ddp.yaml", "MULTI_GPU"), ("accelerate_fsdp.yaml", "FSDP"), ("accelerate_fsdp2.yaml", "FSDP"),
                                        ("accelerate_deepspeed_zero2.yaml", "DEEPSPEED"), ("accelerate_deepspeed_zero3.yaml", "DEEPSPEED")])
def test_accelerate_configs_parse(name, kind):
    from accelerate.commands.config.config_args import load_config_from_file

    cfg = load_config_from_file(str(REPO / "examples" / name))
    assert cfg.distributed_type.value == kind and cfg.num_processes >= 1 and cfg.mixed_precision == "bf16"
    if name == "accelerate_fsdp2.yaml":
        assert cfg.fsdp_config["fsdp_version"] == 2
    if kind == "DEEPSPEED":
        assert cfg.deepspeed_config["zero_stage"] == int(name[-6])


def test_python_m_derta_cli_runs():
    # What `accelerate launch ... -m derta.cli train ...` runs on every process.
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "derta.cli", "train", "--max-length", "77", "--lora", "true", "--print-config"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    cfg = yaml.safe_load(p.stdout)
    assert cfg["max_length"] == 77 and cfg["lora"] is True


# --- derta train: a tiny run, then a resume ----------------------------------------------------------


def test_train_tiny_run_and_resume(inputs, tmp_path, tiny_model, bpe_tokenizer, capsys, monkeypatch):
    from derta.train.trainer import DeRTaTrainer

    model_dir = tmp_path / "model"
    tiny_model.save_pretrained(model_dir)
    bpe_tokenizer.save_pretrained(model_dir)
    triples, helpful = inputs
    data = tmp_path / "data.jsonl"
    assert build("--recipe", "derta", "--triples", triples, "--helpful", helpful, "--helpful-ratio", "0.5", "--out", data) == 0
    run_dir = tmp_path / "run"
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump({
        "model": str(model_dir), "data": str(data), "output_dir": str(run_dir), "batch_size": 2, "total_batch_size": 4,
        "learning_rate": 1e-3, "warmup_ratio": 0.0, "save_steps": 1, "save_total_limit": 3, "logging_steps": 1,
        "progress": False, "max_length": 128,
    }))
    steps: list[int] = []
    original = DeRTaTrainer.training_step

    def counting_step(self, *args, **kwargs):
        steps.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(DeRTaTrainer, "training_step", counting_step)
    capsys.readouterr()
    assert main(["train", "--config", str(cfg), "--max-steps", "2"]) == 0
    final = run_dir / "final"
    assert f"final model: {final}" in capsys.readouterr().out
    assert len(steps) == 2 * 2  # 2 optimiser steps x 2 micro-batches (total 4 / batch 2)
    record = json.loads((final / "derta_run.json").read_text())
    assert record["config"]["max_steps"] == 2 and record["refusal_token"] == "ĠSorry" and record["resumed_from"] is None
    assert record["examples"] == 15 and record["environment"]["torch"]
    assert (final / "model.safetensors").exists() and (final / "tokenizer.json").exists()
    assert (run_dir / "checkpoints" / "checkpoint-2").is_dir()
    from transformers import AutoModelForCausalLM

    trained = AutoModelForCausalLM.from_pretrained(final)
    changed = any(not (a == b).all() for a, b in zip(trained.state_dict().values(), tiny_model.state_dict().values()))
    assert changed

    # Another max_steps is another run (another schedule): refused, nothing trained or rewritten.
    steps.clear()
    before = (final / "derta_run.json").read_bytes()
    assert main(["train", "--config", str(cfg), "--max-steps", "3"]) == 2
    assert "max_steps 2 → 3" in capsys.readouterr().err and not steps
    # The same config again: the run is finished, nothing is trained and the record is kept.
    assert main(["train", "--config", str(cfg), "--max-steps", "2"]) == 0 and not steps
    assert (final / "derta_run.json").read_bytes() == before
