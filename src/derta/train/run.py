"""``train(cfg)``: data file -> trained model directory (MLE + λ·RTO, or DPO pairs)."""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

from ..data.formats import load_preference_pairs, load_training_examples
from ..data.render import RenderedDataset, Renderer
from ..io import iter_rows
from ..templates import default_template, get_template
from ..tokens import refusal_token_id
from .collator import DeRTaCollator
from .objective import plan_objective
from .trainer import DeRTaTrainer, EpochCallback, TrainConfig, finalize_trainer, latest_checkpoint, load_model, load_tokenizer, run_record, training_arguments

log = logging.getLogger(__name__)


def _is_preference_file(path: str) -> bool:
    for _, _, row in iter_rows(path):
        return "chosen" in row and "rejected" in row
    return False


def build_trainer(cfg: TrainConfig, model: Any, tokenizer: Any, examples: list, callbacks: list | None = None) -> DeRTaTrainer:
    """The DeRTa trainer over in-memory TrainingExamples (what `train` and the demo share)."""
    template = default_template(tokenizer) if cfg.template == "auto" else cfg.template
    refusal = refusal_token_id(tokenizer, cfg.refusal_word, cfg.refusal_token)
    renderer = Renderer(tokenizer, refusal, template=template, max_length=cfg.max_length, rto_weight=cfg.rto_weight, rto_keep=cfg.rto_keep)
    objective = plan_objective(renderer, examples, cfg.rto_norm, cfg.rto_max_share, seed=cfg.seed)
    after = objective["after"]
    log.info("objective: %d MLE and %d RTO trained positions (RTO %.1f%% of positions, %.1f%% of the loss weight; rto_norm %s)",
             after["positions"]["mle"], after["positions"]["rto"], 100 * after["rto_share"], 100 * after["rto_weight_share"], objective["rto_norm"])
    dataset = RenderedDataset(examples, renderer, seed=cfg.seed)
    return DeRTaTrainer(
        count_weights=objective["rto_norm"] == "sequence",
        objective_stats=objective,
        model=model,
        args=training_arguments(cfg),
        train_dataset=dataset,
        data_collator=DeRTaCollator(pad_token_id=tokenizer.pad_token_id),
        processing_class=tokenizer,
        callbacks=[EpochCallback(dataset), *(callbacks or [])],
    )


def train(cfg: TrainConfig) -> Path:
    """Train and save ``output_dir/final`` (written atomically, with ``derta_run.json``)."""
    if not cfg.model:
        raise ValueError("no model given (--model NAME_OR_PATH)")
    if not cfg.data:
        raise ValueError("no training data given (--data FILE from `derta data build`)")
    if _is_preference_file(cfg.data):
        return train_dpo(cfg)
    examples = load_training_examples(cfg.data)
    tokenizer = load_tokenizer(cfg.tokenizer or cfg.model)
    model = load_model(cfg)
    trainer = build_trainer(cfg, model, tokenizer, examples)
    resume = latest_checkpoint(cfg.output_dir) if cfg.resume else None
    if resume:
        log.info("resuming from %s", resume)
    trainer.train(resume_from_checkpoint=resume)
    refusal = refusal_token_id(tokenizer, cfg.refusal_word, cfg.refusal_token)
    record = run_record(cfg, method="derta-objective", examples=len(examples), refusal_token=tokenizer.convert_ids_to_tokens(refusal), refusal_token_id=refusal,
                        resumed_from=resume, objective=trainer.objective_stats)
    return finalize_trainer(trainer, tokenizer, cfg.output_dir, record)


def dpo_rows(pairs: list, tokenizer: Any, template: str) -> list[dict[str, str]]:
    """Preference pairs rendered with the same template as MLE training (prompt/chosen/rejected text)."""
    render = get_template(template)
    rows = []
    for p in pairs:
        turn = render(p.messages, tokenizer)
        bos = tokenizer.bos_token if turn.add_bos and tokenizer.bos_token else ""
        rows.append({"prompt": bos + turn.prompt, "chosen": turn.lead + p.chosen + turn.end, "rejected": turn.lead + p.rejected + turn.end})
    return rows


def build_dpo_trainer(cfg: TrainConfig, model: Any, tokenizer: Any, pairs: list) -> Any:
    """TRL's DPOTrainer over in-memory PreferencePairs (what `train_dpo` and the demo share).

    The reference model is a frozen copy of ``model`` (TRL's default); β is ``cfg.dpo_beta``.
    """
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    template = default_template(tokenizer) if cfg.template == "auto" else cfg.template
    base = training_arguments(cfg).to_dict()
    keep = {k: v for k, v in base.items() if k in DPOConfig.__dataclass_fields__ and not k.startswith("_")}
    for k in ("push_to_hub_token", "hub_token"):
        keep.pop(k, None)
    args = DPOConfig(**{**keep, "beta": cfg.dpo_beta, "max_length": cfg.max_length})
    ref_model = None
    if not getattr(model.config, "_name_or_path", "") and not hasattr(model, "peft_config"):
        # TRL rebuilds the reference from the policy's path; a model built in memory has none
        ref_model = copy.deepcopy(model).eval().requires_grad_(False)
    return DPOTrainer(model=model, ref_model=ref_model, args=args, train_dataset=Dataset.from_list(dpo_rows(pairs, tokenizer, template)),
                      processing_class=tokenizer)


def train_dpo(cfg: TrainConfig) -> Path:
    """DPO on top of a tuned model with TRL (chosen = safe, rejected = harmful)."""
    pairs = load_preference_pairs(cfg.data)
    tokenizer = load_tokenizer(cfg.tokenizer or cfg.model)
    trainer = build_dpo_trainer(cfg, load_model(cfg), tokenizer, pairs)
    resume = latest_checkpoint(cfg.output_dir) if cfg.resume else None
    trainer.train(resume_from_checkpoint=resume)
    return finalize_trainer(trainer, tokenizer, cfg.output_dir, run_record(cfg, method="dpo", beta=cfg.dpo_beta, pairs=len(pairs), resumed_from=resume))
