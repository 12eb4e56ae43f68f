"""``train(cfg)``: data file -> trained model directory; ``cfg.method`` says how: ``sft`` (MLE +
λ·RTO over TrainingExamples) or ``dpo`` (PreferencePairs). A row that does not fit the method is an
error naming the file, the line and the method it needs; the method is never switched silently.

``output_dir`` belongs to one run, named by its fingerprint (:mod:`derta.train.identity`): a rerun
of the same run resumes from its newest complete checkpoint (:mod:`derta.train.checkpoints`), or
does nothing when it has finished; another run there is refused unless ``fresh``.
"""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..data.formats import load_preference_pairs, load_training_examples
from ..data.render import RenderedDataset, Renderer
from ..io import environment, write_json
from ..templates import default_template, get_template
from ..tokens import refusal_token_id
from .checkpoints import latest_checkpoint
from .identity import RECORD, check_output_dir, clear_run, fingerprint
from .objective import check_truncation, plan_objective, truncation_stats
from .packing import plan_batching
from .trainer import DeRTaTrainer, EpochCallback, TrainConfig, finalize_trainer, load_model, load_tokenizer, run_record, training_arguments

log = logging.getLogger(__name__)


def make_renderer(cfg: TrainConfig, tokenizer: Any) -> Renderer:
    template = default_template(tokenizer) if cfg.template == "auto" else cfg.template
    refusal = refusal_token_id(tokenizer, cfg.refusal_word, cfg.refusal_token)
    return Renderer(tokenizer, refusal, template=template, max_length=cfg.max_length, rto_weight=cfg.rto_weight, rto_keep=cfg.rto_keep,
                    truncate_query=cfg.truncate_query)


def checked_truncation(renderer: Renderer, examples: list, seed: int) -> dict[str, Any]:
    """:func:`truncation_stats` of every row, logged; a ValueError when no row keeps a trained token."""
    stats = truncation_stats(renderer, examples, seed=seed)
    check_truncation(stats)
    return stats


def build_trainer(cfg: TrainConfig, model: Any, tokenizer: Any, examples: list, callbacks: list | None = None,
                  renderer: Renderer | None = None, truncation: dict[str, Any] | None = None) -> DeRTaTrainer:
    """The DeRTa trainer over in-memory TrainingExamples (what `train` and the demo share).

    ``renderer`` / ``truncation``: made (and checked) here unless the caller already did, before
    loading the model. ``cfg.objective`` "constrained": the rows are first scored with ``model`` as
    it is (the reference, :mod:`derta.train.reference`; cached in ``cfg.reference_cache_dir``) and
    ``objective_stats["constrained"]`` records the β schedule and the cache."""
    renderer = renderer or make_renderer(cfg, tokenizer)
    truncation = truncation or checked_truncation(renderer, examples, cfg.seed)
    objective = plan_objective(renderer, examples, cfg.rto_norm, cfg.rto_max_share, seed=cfg.seed)
    objective["truncation"] = truncation
    objective["objective"] = cfg.objective
    after = objective["after"]
    log.info("objective: %d MLE and %d RTO trained positions (RTO %.1f%% of positions, %.1f%% of the loss weight; rto_norm %s)",
             after["positions"]["mle"], after["positions"]["rto"], 100 * after["rto_share"], 100 * after["rto_weight_share"], objective["rto_norm"])
    dataset = RenderedDataset(examples, renderer, seed=cfg.seed)
    batching = plan_batching(cfg, model, dataset, tokenizer.pad_token_id)
    log.info("batching: %s, %d %s per micro-batch; loss: %s", batching.record["mode"], cfg.batch_size,
             "bins" if cfg.packing == "bfd" and batching.record["padding_free"] else "rows",
             f"chunked, {cfg.loss_chunk_size} trained positions at a time" if cfg.loss_chunk_size else "full logits")
    args = training_arguments(cfg, rows_per_item=batching.rows_per_item, **batching.arguments)
    if cfg.objective == "constrained":
        from .reference import use_reference

        objective["constrained"] = use_reference(cfg, model, tokenizer, dataset, batching, args)
        log.info("objective: constrained (Qi et al.), β %s", objective["constrained"]["beta"])
    return DeRTaTrainer(
        count_weights=objective["rto_norm"] == "sequence",
        objective_stats=objective,
        loss_chunk_size=cfg.loss_chunk_size,
        batching=batching.record,
        objective=cfg.objective,
        model=model,
        args=args,
        train_dataset=batching.dataset,
        data_collator=batching.collator,
        processing_class=tokenizer,
        callbacks=[EpochCallback(batching.dataset), *(callbacks or [])],
    )


def train(cfg: TrainConfig, fresh: bool = False) -> Path:
    """Train and save ``output_dir/final`` (written atomically, with ``derta_run.json``).

    ``fresh``: delete what another run left in ``output_dir`` (checkpoints, final model, record)
    and train from the start; without it such a folder is a RunMismatch naming what differs.
    """
    if not cfg.model:
        raise ValueError("no model given (--model NAME_OR_PATH)")
    if not cfg.data:
        raise ValueError("no training data given (--data FILE from `derta data build`)")
    if cfg.method == "dpo":
        return train_dpo(cfg, fresh)
    examples = load_training_examples(cfg.data)
    fp = fingerprint(cfg, examples)
    if check_output_dir(cfg.output_dir, fp, fresh, cfg.resume) == "finished":
        return _finished(cfg)
    tokenizer = load_tokenizer(cfg.tokenizer or cfg.model)
    renderer = make_renderer(cfg, tokenizer)
    truncation = checked_truncation(renderer, examples, cfg.seed)  # before the (slow) model load
    trainer = build_trainer(cfg, load_model(cfg), tokenizer, examples, renderer=renderer, truncation=truncation)
    resume = claim_output_dir(trainer, cfg, fp, fresh)
    trainer.train(resume_from_checkpoint=resume)
    refusal = refusal_token_id(tokenizer, cfg.refusal_word, cfg.refusal_token)
    record = run_record(cfg, method="derta-objective", examples=len(examples), refusal_token=tokenizer.convert_ids_to_tokens(refusal), refusal_token_id=refusal,
                        resumed_from=resume, fingerprint=fp, truncation=trainer.objective_stats["truncation"], objective=trainer.objective_stats)
    return finalize_trainer(trainer, tokenizer, cfg.output_dir, record)


def _finished(cfg: TrainConfig) -> Path:
    final = Path(cfg.output_dir) / "final"
    log.warning("%s holds this run, finished (%s): nothing to train; its record is kept as it is (--fresh trains it again)",
                cfg.output_dir, final / RECORD)
    return final


def _recorded_fingerprint(out: Path) -> Any:
    try:
        return json.loads((out / RECORD).read_text()).get("fingerprint")
    except (OSError, ValueError, AttributeError):
        return None


def claim_output_dir(trainer: Any, cfg: TrainConfig, fp: dict[str, Any], fresh: bool) -> str | None:
    """Make ``output_dir`` this run's: clear another run (``fresh``), write the record, and
    return the checkpoint to resume from (the newest complete one; torn ones are removed).

    Only the main process writes; the others wait for it, then pick the same checkpoint.
    """
    out = Path(cfg.output_dir)
    if trainer.is_world_process_zero():
        if fresh:
            for gone in clear_run(out):
                log.warning("--fresh: removed %s", gone)
        if fresh or _recorded_fingerprint(out) != fp:  # a record left by a run killed before its first checkpoint
            write_json(out / RECORD, {"fingerprint": fp, "config": asdict(cfg), "environment": environment()})
        resume = latest_checkpoint(out, remove_torn=True) if cfg.resume else None
    trainer.accelerator.wait_for_everyone()
    if not trainer.is_world_process_zero():
        resume = latest_checkpoint(out) if cfg.resume else None
    if resume:
        log.info("resuming from %s", resume)
    return resume


def dpo_rows(pairs: list, tokenizer: Any, template: str) -> list[dict[str, str]]:
    """Preference pairs rendered with the same template as MLE training (prompt/chosen/rejected text).

    TRL's DPOTrainer tokenizes the prompt text with the tokenizer's own special tokens. The BOS is
    therefore written into the text only for a tokenizer that does not add it itself (where the
    template asks for one, as the MLE rows do); for a tokenizer that adds it, a BOS the chat
    template wrote is taken out of the text. The prompt ids then start with one BOS exactly where
    :meth:`derta.data.render.Renderer.prompt_ids` has one (never two). A chat turn ends where the
    assistant's turn closes (:func:`derta.data.render.closed_turn`), as in MLE rows.
    """
    from ..data.render import adds_bos, closed_turn

    render = get_template(template)
    bos = tokenizer.bos_token or ""
    adds = adds_bos(tokenizer)
    ends: dict[str, str] = {}
    rows = []
    for p in pairs:
        turn = render(p.messages, tokenizer)
        if template == "chat":
            turn = closed_turn(turn, tokenizer, ends)
        prompt = turn.prompt
        if bos and adds and prompt.startswith(bos):
            prompt = prompt[len(bos):]
        elif bos and not adds and turn.add_bos:
            prompt = bos + prompt
        rows.append({"prompt": prompt, "chosen": turn.lead + p.chosen + turn.end, "rejected": turn.lead + p.rejected + turn.end})
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


def dpo_truncation(rows: list[dict[str, str]], tokenizer: Any, max_length: int, ids: list[str] | None = None) -> dict[str, Any]:
    """Pairs cut to ``max_length`` (TRL keeps the start: an answer loses its end) and pairs whose
    prompt alone fills it (TRL drops those: no answer token is left to train), counted on the ids
    TRL's DPOTrainer makes (the tokenizer's own special tokens; an EOS appended to an answer that
    does not end with one). ``tokens_cut``: answer tokens cut, over the longer answer of each pair."""
    eos = tokenizer.eos_token or ""
    cut = untrained = tokens = longest = 0
    first: list[str] = []
    for i, r in enumerate(rows):
        prompt = len(tokenizer(r["prompt"])["input_ids"])
        answers = [r[k] if not eos or r[k].endswith(eos) else r[k] + eos for k in ("chosen", "rejected")]
        over = max(len(tokenizer(r["prompt"] + a)["input_ids"]) for a in answers) - max_length
        untrained += prompt >= max_length
        if over > 0:
            cut += 1
            tokens += over
            longest = max(longest, over)
            if len(first) < 5:
                first.append(ids[i] if ids else f"row {i + 1}")
    return {"max_length": max_length, "rows": len(rows), "rows_cut": cut, "rows_cut_untrained": untrained,
            "rows_untrained": untrained, "rows_trained": len(rows) - untrained, "first_cut_ids": first,
            "tokens_cut": tokens, "max_tokens_cut": longest}


def train_dpo(cfg: TrainConfig, fresh: bool = False) -> Path:
    """DPO on top of a tuned model with TRL (chosen = safe, rejected = harmful)."""
    pairs = load_preference_pairs(cfg.data)
    fp = fingerprint(cfg, pairs)
    if check_output_dir(cfg.output_dir, fp, fresh, cfg.resume) == "finished":
        return _finished(cfg)
    tokenizer = load_tokenizer(cfg.tokenizer or cfg.model)
    template = default_template(tokenizer) if cfg.template == "auto" else cfg.template
    truncation = dpo_truncation(dpo_rows(pairs, tokenizer, template), tokenizer, cfg.max_length, [p.id for p in pairs])
    check_truncation(truncation)
    trainer = build_dpo_trainer(cfg, load_model(cfg), tokenizer, pairs)
    resume = claim_output_dir(trainer, cfg, fp, fresh)
    trainer.train(resume_from_checkpoint=resume)
    record = run_record(cfg, method="dpo", beta=cfg.dpo_beta, pairs=len(pairs), resumed_from=resume, fingerprint=fp, truncation=truncation)
    return finalize_trainer(trainer, tokenizer, cfg.output_dir, record)
