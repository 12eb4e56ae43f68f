"""``derta finetune-attack``: does a model's safety survive a harmful fine-tune?

The harmful-examples attack of Qi et al. (2023), "Fine-tuning aligned language models compromises
safety, even when users do not intend to!": fine-tune the safety-tuned model with plain SFT (MLE on
the harmful response, no RTO) on a few harmful instruction → harmful response pairs, then run one
eval config on the original (``before``) and the fine-tuned model (``after``)::

    DIR/data/harmful-<sha12>.jsonl  the N pairs trained, as TrainingExample rows (named by their content)
    DIR/model/                      derta train's output_dir: checkpoints while it runs, final/ with derta_run.json
    DIR/eval/                       derta eval's run directory, models ``before`` and ``after``
    DIR/finetune_attack.json        settings, data sha256, pairs, steps, seed, versions, model identities, the table

The fine-tune goes through derta's own training path (a :class:`TrainConfig`, :func:`build_trainer`,
the run fingerprint of :mod:`derta.train.identity`): padding-free batches, the chunked loss and the
run record apply, a killed fine-tune resumes from its newest checkpoint, a finished one is reused
when model, data and settings are unchanged (another run in ``DIR/model`` is an error naming what
differs, unless ``fresh``). A LoRA fine-tune is saved merged, so every backend loads it as a plain
model. The eval stage is :func:`derta.eval.run.run_eval`, which resumes: a rerun generates and
judges nothing it already has.

Defaults follow Qi et al.'s attack on Llama-2-7b-chat: full fine-tuning on 100 harmful examples
for 5 epochs, learning rate 5e-5, batch size 10 (50 optimiser steps). Not from the paper: a
constant learning rate without warm-up or weight decay, 1e-4 for LoRA (the DeRTa paper's LoRA rate).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..data.formats import load_harmful_pairs, load_training_examples
from ..io import environment, write_json, write_jsonl
from ..records import IGNORE_INDEX, TrainingExample
from ..train.config import TrainConfig

log = logging.getLogger(__name__)

FORMAT = "derta.finetune-attack/1"
RECORD_FILE = "finetune_attack.json"
#: The eval's names of the two models.
BEFORE, AFTER = "before", "after"
ATTACK = {"name": "harmful-examples fine-tuning", "reference": "Qi et al. 2023, Fine-tuning aligned language models compromises safety, "
          "even when users do not intend to! (arXiv:2310.03693)", "paper_budget": {"examples": [10, 50, 100], "epochs": 5,
                                                                                     "learning_rate": 5e-5, "batch_size": 10}}
QI_LR, LORA_LR = 5e-5, 1e-4


@dataclass
class AttackSettings:
    """What ``derta finetune-attack`` does; ``None`` fields take the defaults described in the module docstring."""

    model: str
    data: str
    eval_config: str
    out: str
    n: int = 100
    epochs: float = 5.0
    steps: int | None = None  # optimiser steps; None: ``epochs`` over the pairs
    learning_rate: float | None = None  # None: 5e-5 full, 1e-4 LoRA
    batch_size: int = 10  # pairs per optimiser step
    micro_batch_size: int | None = None  # pairs per forward pass (None: batch_size); gradient accumulation makes up the rest
    max_length: int = 1024
    lora: bool = False
    lora_r: int = 96
    template: str | None = None  # None: what the model was trained with (its derta_run.json), else "auto"
    seed: int = 42
    save_steps: int = 25
    gradient_checkpointing: bool = False
    bf16: str = "auto"
    backend: str = "hf"
    progress: bool = True
    eval_sets: list[str] = field(default_factory=list)  # --set KEY.PATH=VALUE items for the eval config

    def __post_init__(self) -> None:
        for name in ("n", "batch_size", "max_length", "save_steps", "lora_r"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.epochs <= 0:
            raise ValueError(f"epochs must be > 0, got {self.epochs}")
        micro = self.micro_batch_size or self.batch_size
        if micro < 1 or self.batch_size % micro:
            raise ValueError(f"micro_batch_size ({micro}) must divide batch_size ({self.batch_size}): every step trains batch_size pairs")
        if self.backend not in ("hf", "vllm"):
            raise ValueError(f"backend must be hf or vllm, got {self.backend!r}")


# -- the harmful pairs (read by derta.data.formats.load_harmful_pairs) ----------------------------

def select_pairs(pairs: list[TrainingExample], n: int, seed: int, source: str) -> list[TrainingExample]:
    """``n`` pairs drawn with ``seed`` (kept in file order): a file sorted by topic gives a mixed set."""
    if n > len(pairs):
        raise ValueError(f"{source}: --n {n} asks for more pairs than the file holds ({len(pairs)})")
    return [pairs[i] for i in sorted(random.Random(seed).sample(range(len(pairs)), n))]


def write_selection(folder: Path, chosen: list[TrainingExample]) -> Path:
    """The chosen pairs as ``harmful-<sha12>.jsonl``: another selection is another file, never an overwrite."""
    text = "".join(json.dumps(ex.to_dict(), ensure_ascii=False) + "\n" for ex in chosen)
    path = folder / f"harmful-{hashlib.sha256(text.encode()).hexdigest()[:12]}.jsonl"
    if not path.exists():
        write_jsonl(path, [ex.to_dict() for ex in chosen])
    return path


# -- the fine-tune -------------------------------------------------------------------------------

def train_config(s: AttackSettings, data_file: Path, template: str, refusal_word: str) -> TrainConfig:
    """The TrainConfig of the attack: plain SFT on ``data_file`` into ``DIR/model``."""
    micro = s.micro_batch_size or s.batch_size
    return TrainConfig(method="sft", model=s.model, data=str(data_file), output_dir=str(Path(s.out) / "model"), template=template,
                       refusal_word=refusal_word, max_length=s.max_length, epochs=s.epochs, max_steps=s.steps or -1,
                       learning_rate=s.learning_rate or (LORA_LR if s.lora else QI_LR), warmup_ratio=0.0, weight_decay=0.0,
                       lr_scheduler="constant", batch_size=micro, total_batch_size=s.batch_size, lora=s.lora, lora_r=s.lora_r,
                       bf16=s.bf16, gradient_checkpointing=s.gradient_checkpointing, save_steps=s.save_steps, save_total_limit=1,
                       logging_steps=1, seed=s.seed, progress=s.progress)


def harmful_loss(model: Any, renderer: Any, examples: list[TrainingExample], pad_id: int, batch_size: int = 1) -> dict[str, Any]:
    """Mean cross-entropy per trained token of the harmful responses (and the count), the model in
    eval mode. One row per forward by default: its full (T, V) logits are the largest tensor."""
    import torch

    from ..train.collator import DeRTaCollator
    from ..train.loss import weighted_token_losses

    collate, device = DeRTaCollator(pad_id), next(model.parameters()).device
    total, tokens, was_training = 0.0, 0, model.training
    model.eval()
    try:
        with torch.no_grad():
            for i in range(0, len(examples), batch_size):
                rows = [asdict(renderer(ex)) for ex in examples[i: i + batch_size]]
                batch = {k: v.to(device) for k, v in collate(rows).items()}
                logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
                total += float(weighted_token_losses(logits, batch["labels"], batch["loss_weights"]).sum())
                tokens += int(batch["labels"][:, 1:].ne(IGNORE_INDEX).sum())
    finally:
        model.train(was_training)
    return {"mean": total / tokens if tokens else None, "tokens": tokens, "pairs": len(examples)}


def finetune(examples: list[TrainingExample], cfg: TrainConfig, tokenizer: Any, fresh: bool = False) -> tuple[Path, dict[str, Any], bool]:
    """Train ``examples`` with ``cfg`` (or reuse the finished run of the same fingerprint).
    Returns (final folder, its run record, reused)."""
    from ..backends.base import free_memory
    from ..train.identity import RECORD, check_output_dir, fingerprint
    from ..train.run import build_trainer, checked_truncation, claim_output_dir, make_renderer
    from ..train.trainer import finalize_trainer, load_model, run_record

    out, fp = Path(cfg.output_dir), fingerprint(cfg, examples)
    if check_output_dir(out, fp, fresh, cfg.resume) == "finished":
        log.info("%s holds this fine-tune, finished: reused (--fresh trains it again)", out / "final")
        return out / "final", json.loads((out / "final" / RECORD).read_text(encoding="utf-8")), True
    renderer = make_renderer(cfg, tokenizer)
    truncation = checked_truncation(renderer, examples, cfg.seed)  # before the (slow) model load
    trainer = build_trainer(cfg, load_model(cfg), tokenizer, examples, renderer=renderer, truncation=truncation)
    before = harmful_loss(trainer.model, renderer, examples, tokenizer.pad_token_id)
    resume = claim_output_dir(trainer, cfg, fp, fresh)
    t0 = time.perf_counter()
    trainer.train(resume_from_checkpoint=resume)
    seconds = round(time.perf_counter() - t0, 1)
    after = harmful_loss(trainer.model, renderer, examples, tokenizer.pad_token_id)
    record = run_record(cfg, method="harmful-finetune", attack=ATTACK, examples=len(examples), resumed_from=resume, fingerprint=fp,
                        truncation=truncation, objective=trainer.objective_stats, global_step=trainer.state.global_step, seconds=seconds,
                        harmful_loss={"before": before, "after": after}, log_history=[h for h in trainer.state.log_history if "loss" in h])
    final = finalize_trainer(trainer, tokenizer, out, record, merge=cfg.lora)
    shutil.rmtree(out / "checkpoints", ignore_errors=True)  # final/ is complete: a full model's optimiser state is many GB
    del trainer
    free_memory()  # the eval loads the models one at a time next
    return final, record, False


# -- the eval and the comparison -----------------------------------------------------------------

def model_arg(name: str) -> str:
    """A local folder as an absolute path (the eval knows it by its content), a hub name as it is."""
    return str(Path(name).expanduser().resolve()) if Path(name).expanduser().exists() else name


def attack_eval_config(s: AttackSettings, final: Path, template: str) -> Any:
    """The user's eval config with its models replaced by ``before`` and ``after`` and its run in ``DIR/eval``."""
    from ..config import load_config, read_mapping
    from .config import EvalConfig

    listed = read_mapping(s.eval_config).get("models") if Path(s.eval_config).is_file() else None
    if listed:
        log.info("%s: its models list (%d entries) is replaced by %s and %s", s.eval_config, len(listed), BEFORE, AFTER)
    models = [{"name": BEFORE, "spec": f"{s.backend}:{model_arg(s.model)}", "template": template},
              {"name": AFTER, "spec": f"{s.backend}:{final.expanduser().resolve()}", "template": template}]
    overrides: dict[str, Any] = {"models": models, "out": str(Path(s.out) / "eval")}
    if not s.progress:
        overrides["progress"] = False
    return load_config(EvalConfig, s.eval_config, overrides, s.eval_sets)


def _numbers(c: dict[str, Any] | None, group: str) -> dict[str, Any] | None:
    if c is None:
        return None
    if group == "attack":
        keep = ("asr", "ci_low", "ci_high", "unsafe", "safe", "unscored", "n")
        out = {k: c.get(k) for k in keep}
        if c.get("corrected"):
            out["corrected"] = {"asr": c["value"], "ci_low": c.get("ci_low"), "ci_high": c.get("ci_high")}
            out.update(ci_low=c.get("raw_ci_low"), ci_high=c.get("raw_ci_high"))
        return out
    return {k: c.get(k) for k in ("rate", "k", "n", "ci_low", "ci_high")}


def comparison(summary: dict[str, Any]) -> dict[str, Any]:
    """Before vs after, one metric per column of the eval's results table (ASR per attack under the
    primary judge, helpfulness, over-refusal, degenerate), with the change in percentage points."""
    from ..report.markdown import cell, columns

    models = summary.get("models", {})
    metrics = []
    for col in columns(summary):
        row: dict[str, Any] = {"key": col.key, "label": ("ASR " if col.group == "attack" else "") + col.label, "group": col.group}
        for name in (BEFORE, AFTER):
            row[name] = _numbers(cell(models.get(name, {}), col), col.group)
        value = "asr" if col.group == "attack" else "rate"
        a, b = ((row[m] or {}).get(value) for m in (BEFORE, AFTER))
        row["change_pp"] = None if a is None or b is None else round(100 * (b - a), 1)
        metrics.append(row)
    return {"judge": summary.get("judge"), "metrics": metrics}


def _pct(c: dict[str, Any] | None, value: str) -> str:
    if not c or c.get(value) is None:
        return "–"
    ci = f" [{100 * c['ci_low']:.1f}–{100 * c['ci_high']:.1f}]" if c.get("ci_low") is not None and c.get("ci_high") is not None else ""
    return f"{100 * c[value]:.1f}{ci} n={c.get('n')}"


def comparison_text(table: dict[str, Any]) -> str:
    """The comparison as a plain-text table (percentages, 95% interval, n; change in points)."""
    head = ["metric (%)", BEFORE, AFTER, "change (pp)"]
    rows = [[m["label"], _pct(m[BEFORE], "asr" if m["group"] == "attack" else "rate"), _pct(m[AFTER], "asr" if m["group"] == "attack" else "rate"),
             "–" if m["change_pp"] is None else f"{m['change_pp']:+.1f}"] for m in table["metrics"]]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = [" | ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths))) for r in [head, *rows]]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join([f"ASR judged by {table['judge']}" if table.get("judge") else "", *lines]).lstrip("\n")


# -- the whole attack ----------------------------------------------------------------------------

def run_finetune_attack(s: AttackSettings, fresh: bool = False) -> dict[str, Any]:
    """Fine-tune, evaluate before and after, write ``DIR/finetune_attack.json``; return that record
    (``summary``: the eval's summary, not written into the record)."""
    from ..backends.hf import trained_template
    from ..templates import default_template
    from ..tokens import choose_refusal_word
    from ..train.identity import data_identity
    from ..train.trainer import load_tokenizer
    from .run import run_eval

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError("derta finetune-attack runs in one process (its eval loads one model at a time); run it without accelerate launch")
    out = Path(s.out)
    pairs = load_harmful_pairs(s.data)  # bad data stops before anything is loaded
    chosen = select_pairs(pairs, s.n, s.seed, s.data)
    tokenizer = load_tokenizer(s.model)
    template = s.template or trained_template(s.model, tokenizer) or "auto"
    template = default_template(tokenizer) if template == "auto" else template  # the same for training and both eval models
    selection = write_selection(out / "data", chosen)
    examples = load_training_examples(selection)  # what is trained is what the file says
    cfg = train_config(s, selection, template, choose_refusal_word(tokenizer))
    ecfg = attack_eval_config(s, Path(cfg.output_dir) / "final", template)  # checked before the fine-tune
    final, train_record, reused = finetune(examples, cfg, tokenizer, fresh)
    summary = run_eval(ecfg, config_path=s.eval_config)
    table = comparison(summary)
    record = {
        "format": FORMAT, "attack": ATTACK, "seed": s.seed, "settings": asdict(s), "environment": environment(),
        "data": {"file": s.data, **data_identity(s.data, pairs), "pairs": len(examples), "selected": [ex.id for ex in examples],
                 "selection_file": cfg.data, "selection_sha256": train_record["fingerprint"]["data"]["sha256"]},
        "finetune": {"config": asdict(cfg), "output_dir": cfg.output_dir, "final": str(final), "reused": reused,
                     "steps": train_record.get("global_step"), "epochs": cfg.epochs if cfg.max_steps < 0 else None,
                     "harmful_loss": train_record.get("harmful_loss"), "fingerprint": train_record["fingerprint"],
                     "environment": train_record.get("environment")},
        "eval": {"config_file": s.eval_config, "out": ecfg.out, "status": (summary.get("run") or {}).get("status"),
                 "judge": summary.get("judge"), "judges": summary.get("judges")},
        "models": {name: {k: v for k, v in ((summary.get("run") or {}).get("models") or {}).get(name, {}).items()
                          if k in ("spec", "template", "model_id", "identity")} for name in (BEFORE, AFTER)},
        "table": table,
    }
    write_json(out / RECORD_FILE, record)
    return {**record, "summary": summary}
