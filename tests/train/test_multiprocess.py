"""`accelerate launch` with two CPU processes (gloo): the same optimiser steps as one process.

Two processes with a micro-batch of 2 each make the same optimiser step as one process with a
micro-batch of 2 and two accumulation steps (accelerate gives process i the i-th micro-batch of each
step). The loss is divided by the trained positions of the whole step, across processes, so the
final weights must agree; a per-process normalisation would not.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
import yaml

from derta.io import write_jsonl

pytestmark = pytest.mark.slow


def _data(tmp_path, world):
    from derta.commands.data import main as data_main

    triples = [{"id": t.id, "query": t.query, "safe_response": t.safe_response, "harmful_response": t.harmful_response}
               for t in world.triples[:8]]
    helpful = [{"instruction": h.query, "output": h.response, "id": h.id} for h in world.helpful_train[:8]]
    out = tmp_path / "data.jsonl"
    assert data_main(["build", "--recipe", "derta", "--triples", str(write_jsonl(tmp_path / "t.jsonl", triples)),
                      "--helpful", str(write_jsonl(tmp_path / "h.jsonl", helpful)), "--out", str(out)]) == 0
    return out


def _config(tmp_path, name, model_dir, data, batch_size):
    cfg = tmp_path / f"{name}.yaml"
    cfg.write_text(yaml.safe_dump({
        "model": str(model_dir), "data": str(data), "output_dir": str(tmp_path / name), "batch_size": batch_size,
        "total_batch_size": 4, "learning_rate": 1e-3, "warmup_ratio": 0.0, "weight_decay": 0.0, "max_steps": 3,
        "save_steps": 100, "logging_steps": 1, "progress": False, "max_length": 96, "seed": 0,
    }))
    return cfg


def _run(args, timeout=600):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    p = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env)
    assert p.returncode == 0, p.stderr[-4000:]
    return p


def test_two_cpu_processes_match_one(tmp_path, world, tiny_model, bpe_tokenizer):
    launcher = os.path.join(os.path.dirname(sys.executable), "accelerate")
    if not os.path.exists(launcher):
        launcher = shutil.which("accelerate") or pytest.skip("the accelerate launcher is not installed")
    from transformers import AutoModelForCausalLM

    model_dir = tmp_path / "model"
    tiny_model.save_pretrained(model_dir)
    bpe_tokenizer.save_pretrained(model_dir)
    data = _data(tmp_path, world)

    one = _config(tmp_path, "one", model_dir, data, batch_size=2)  # 1 process x 2 rows x 2 accumulation steps
    _run([sys.executable, "-m", "derta.cli", "train", "--config", str(one)])
    two = _config(tmp_path, "two", model_dir, data, batch_size=2)  # 2 processes x 2 rows, no accumulation
    # --multi_gpu is accelerate's torchrun launcher; with no GPU, derta trains with gloo on the CPU
    _run([launcher, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
          "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "derta.cli", "train", "--config", str(two)])

    rec_one = json.loads((tmp_path / "one" / "final" / "derta_run.json").read_text())
    rec_two = json.loads((tmp_path / "two" / "final" / "derta_run.json").read_text())
    b1, b2 = rec_one["batching"], rec_two["batching"]
    assert (b1["processes"], b2["processes"]) == (1, 2)
    assert (b1["gradient_accumulation_steps"], b2["gradient_accumulation_steps"]) == (2, 1)
    # the same rows and tokens per optimiser step, summed over the two processes
    assert b1["optimizer_steps"] == b2["optimizer_steps"] == 3
    assert (b1["rows"], b1["real_tokens"]) == (b2["rows"], b2["real_tokens"])

    a = AutoModelForCausalLM.from_pretrained(tmp_path / "one" / "final").state_dict()
    b = AutoModelForCausalLM.from_pretrained(tmp_path / "two" / "final").state_dict()
    start = tiny_model.state_dict()
    moved = max((a[k] - start[k]).abs().max().item() for k in a)
    assert moved > 1e-4  # three steps at lr 1e-3 moved the weights
    diff = max((a[k] - b[k]).abs().max().item() for k in a)
    assert diff < 1e-5 * max(1.0, moved) * 10, f"two processes ended {diff:.2e} away from one (weights moved {moved:.2e})"
    assert not any(torch.isnan(v).any() for v in b.values())
