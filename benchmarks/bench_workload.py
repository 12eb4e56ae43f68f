"""The benchmark's workload: a tokenizer trained here, a config-built LLaMA and DeRTa-like rows.

The rows are real: the harmful side of the triples is the DeRTa harmful fine-tuning file
(``derta-train/malicious_tuning_data_330.jsonl``), the helpful side real model answers to harmless
requests (``judge-labels/xstest_v2.jsonl``); they go through :func:`derta.data.recipes.build` and
the training renderer, so the lengths are the ones training sees. Without the data directory the
texts are synthetic (the JSON says so in ``workload.source``).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from derta.data.recipes import RecipeConfig, build
from derta.data.sources import data_dir
from derta.records import HelpfulExample, TrainingExample, Triple

#: Safe responses of the triples (the derta-train file holds only the harmful side); they start
#: with the refusal word, as RTO expects.
REFUSALS = (
    "Sorry, I cannot help with that request.",
    "Sorry, but I can't assist with this. It could cause real harm to other people.",
    "Sorry, I won't provide instructions for this. If you are facing a difficult situation, please reach out to someone you trust.",
)


@dataclass
class Workload:
    tokenizer: Any
    examples: list[TrainingExample]  # the DeRTa mix: harmful-prefix MLE + RTO rows + helpful rows
    source: str  # where the texts come from
    prompts: list[str]  # questions for the generation rows


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _synthetic(n: int, rng: random.Random) -> tuple[list[Triple], list[HelpfulExample]]:
    words = "the a model data step cut water soap plan map key door code list text answer reason".split()
    def text(k: int) -> str:
        return " ".join(rng.choice(words) for _ in range(k)) + "."
    triples = [Triple(query=text(rng.randint(10, 60)), safe_response=REFUSALS[i % 3], harmful_response=text(rng.randint(50, 700)), id=f"s{i}")
               for i in range(n)]
    helpful = [HelpfulExample(query=text(rng.randint(5, 30)), response=text(rng.randint(20, 400)), id=f"h{i}") for i in range(n)]
    return triples, helpful


def data_root(data: str | None = None) -> Path | None:
    """``data``, ``$DERTA_DATA``, ``../shared/data`` from the working directory or beside the checkout."""
    beside = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    return data_dir(data) or (beside if beside.is_dir() else None)


def load_texts(n_triples: int, data: str | None = None, seed: int = 0) -> tuple[list[Triple], list[HelpfulExample], str]:
    """Triples and helpful examples from the shared data files, else synthetic ones."""
    rng = random.Random(seed)
    root = data_root(data)
    harmful = root / "derta-train" / "malicious_tuning_data_330.jsonl" if root else None
    helpful_file = root / "judge-labels" / "xstest_v2.jsonl" if root else None
    if not (harmful and harmful.is_file() and helpful_file and helpful_file.is_file()):
        t, h = _synthetic(n_triples, rng)
        return t, h, "synthetic (derta-train / judge-labels not found: set DERTA_DATA or --data-dir)"
    rows = _jsonl(harmful)
    rng.shuffle(rows)
    triples = []
    for i, r in enumerate(rows[:n_triples]):
        query = r["prefix"].removeprefix("### Instruction:\n").removesuffix("\n\n### Response:").strip()
        triples.append(Triple(query=query, safe_response=REFUSALS[i % len(REFUSALS)], harmful_response=r["text"].strip(), id=f"t{i}"))
    answers = [r for r in _jsonl(helpful_file) if r["label"] == "safe" and "contrast" not in str(r.get("prompt_type")) and r["response"].strip()]
    rng.shuffle(answers)
    helpful = [HelpfulExample(query=r["question"], response=r["response"].strip(), id=f"h{i}") for i, r in enumerate(answers[:n_triples])]
    return triples, helpful, f"{harmful} (harmful side) + {helpful_file} (helpful answers, label safe)"


def make_tokenizer(texts: list[str], vocab_size: int) -> Any:
    from derta.demo.model import train_tokenizer

    return train_tokenizer(texts, vocab_size=vocab_size, kind="bpe")


def make_workload(n_triples: int, vocab_size: int, data: str | None = None, seed: int = 0) -> Workload:
    """The DeRTa recipe over ``n_triples`` triples (N/2 harmful-prefix MLE rows and N/2 RTO rows from
    N/2 triples), mixed 1:1 with helpful rows, and a tokenizer trained on those texts."""
    triples, helpful, source = load_texts(n_triples, data, seed)
    texts = [x for t in triples for x in (t.query, t.harmful_response, " " + t.safe_response)] + [x for h in helpful for x in (h.query, h.response)]
    tok = make_tokenizer(texts, vocab_size)
    examples = build("derta", triples, helpful, RecipeConfig(seed=seed), helpful_ratio=1.0)
    return Workload(tok, [e for e in examples if isinstance(e, TrainingExample)], source, [t.query for t in triples] + [h.query for h in helpful])


def make_model(tokenizer: Any, hidden: int, layers: int, vocab_size: int | None = None, seed: int = 0, max_positions: int = 1024) -> Any:
    """A randomly initialised LLaMA built from a config (like :func:`derta.demo.model.tiny_llama`),
    optionally with a larger vocabulary than the tokenizer's (the loss-memory rows)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size or len(tokenizer), hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=max_positions,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config)
