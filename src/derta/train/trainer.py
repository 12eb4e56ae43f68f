"""Training glue: a config dataclass, one ``compute_loss`` override on ``transformers.Trainer``.

Any ``AutoModelForCausalLM`` works, fully fine-tuned or with LoRA (PEFT). Several processes or
GPUs (DDP, DeepSpeed, FSDP) come from ``accelerate launch`` and its config files; nothing here is
specific to one device count.
"""

from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

from ..io import environment, write_json

from .loss import weighted_causal_lm_loss


def _h(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class TrainConfig:
    """Everything ``derta train`` needs. Paper defaults (full tuning) where they exist."""

    model: str = field(default="", metadata=_h("HF model name or local path (AutoModelForCausalLM)"))
    data: str = field(default="", metadata=_h("training data built by `derta data build` (JSONL)"))
    output_dir: str = field(default="runs/train", metadata=_h("where checkpoints and the final model go"))
    tokenizer: str | None = field(default=None, metadata=_h("tokenizer name/path (default: the model's)"))
    template: str = field(default="auto", metadata=_h("auto | chat | reference | plain"))
    refusal_word: str = field(default="Sorry", metadata=_h("RTO transition word, looked up in the tokenizer"))
    refusal_token: str | None = field(default=None, metadata=_h("RTO transition token as a vocabulary entry (wins over the word)"))
    rto_weight: float = field(default=1.0, metadata=_h("λ, the weight of the RTO term"))
    rto_keep: float = field(default=1.0, metadata=_h("share of RTO positions kept (0.05 = reference full-parameter run)"))
    rto_norm: str = field(default="auto", metadata=_h("token (each RTO position weighs λ, the paper) | sequence (an RTO row weighs λ × one average safe response) | auto (sequence when RTO would be over rto_max_share of the trained positions)"))
    rto_max_share: float = field(default=0.25, metadata=_h("auto: the share of trained positions above which RTO is normalised per sequence (with a warning)"))
    max_length: int = field(default=1024, metadata=_h("truncate rendered rows to this many tokens"))
    epochs: float = field(default=2.0, metadata=_h("training epochs"))
    max_steps: int = field(default=-1, metadata=_h("stop after this many optimiser steps (-1: use epochs)"))
    learning_rate: float = field(default=2e-5, metadata=_h("peak learning rate (paper: 2e-5 full, 1e-4 LoRA)"))
    warmup_ratio: float = field(default=0.03, metadata=_h("linear warm-up share of steps"))
    weight_decay: float = field(default=2e-5, metadata=_h("AdamW weight decay"))
    lr_scheduler: str = field(default="cosine", metadata=_h("transformers scheduler name"))
    batch_size: int = field(default=4, metadata=_h("rows per device per micro-batch"))
    total_batch_size: int = field(default=128, metadata=_h("rows per optimiser step over all devices (sets gradient accumulation)"))
    dpo_beta: float = field(default=0.1, metadata=_h("β of DPO (used when the data are preference pairs)"))
    lora: bool = field(default=False, metadata=_h("train LoRA adapters instead of all parameters"))
    lora_r: int = field(default=96, metadata=_h("LoRA rank"))
    lora_alpha: int = field(default=16, metadata=_h("LoRA alpha"))
    lora_dropout: float = field(default=0.05, metadata=_h("LoRA dropout"))
    lora_target_modules: list[str] = field(default_factory=lambda: ["all-linear"], metadata=_h("modules to adapt (all-linear = attention + MLP)"))
    bf16: str = field(default="auto", metadata=_h("auto (on a bf16 GPU) | true | false"))
    gradient_checkpointing: bool = field(default=False, metadata=_h("trade compute for memory"))
    save_steps: int = field(default=500, metadata=_h("checkpoint every N steps"))
    save_total_limit: int = field(default=2, metadata=_h("keep at most N checkpoints"))
    logging_steps: int = field(default=10, metadata=_h("log every N steps"))
    resume: bool = field(default=True, metadata=_h("resume from the newest checkpoint in output_dir"))
    seed: int = field(default=42, metadata=_h("random seed (data order, k sampling, RTO dropout, init)"))
    progress: bool = field(default=True, metadata=_h("show progress bars"))
    report_to: str = field(default="none", metadata=_h("transformers report_to (none, tensorboard, wandb)"))

    def __post_init__(self) -> None:
        if self.template not in ("auto", "chat", "reference", "plain"):
            raise ValueError(f"template must be auto, chat, reference or plain, got {self.template!r}")
        if self.bf16 not in ("auto", "true", "false"):
            raise ValueError(f"bf16 must be auto, true or false, got {self.bf16!r}")
        if self.rto_norm not in ("auto", "token", "sequence"):
            raise ValueError(f"rto_norm must be auto, token or sequence, got {self.rto_norm!r}")
        if not 0.0 < self.rto_max_share <= 1.0:
            raise ValueError(f"rto_max_share must be in (0, 1], got {self.rto_max_share}")
        if self.total_batch_size < self.batch_size:
            raise ValueError(f"total_batch_size ({self.total_batch_size}) < batch_size ({self.batch_size})")

    def use_bf16(self) -> bool:
        if self.bf16 == "auto":
            return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return self.bf16 == "true"


class DeRTaTrainer(Trainer):
    """``Trainer`` whose loss is :func:`weighted_causal_lm_loss` (MLE + λ·RTO)."""

    def __init__(self, *args: Any, count_weights: bool = False, objective_stats: dict[str, Any] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        # Our compute_loss consumes num_items_in_batch itself (it is never passed to the model), so
        # the Trainer must count the trained positions of the whole accumulated step for us.
        self.model_accepts_loss_kwargs = True
        # Per-sequence RTO normalisation: an RTO row counts as its total weight, not as its number
        # of positions, in the step's denominator (otherwise its positions would dilute MLE).
        self.count_weights = count_weights
        self.objective_stats = objective_stats or {}

    def _get_num_items_in_batch(self, batch_samples: list, device: torch.device) -> Any:
        if not self.count_weights or not batch_samples or "loss_weights" not in batch_samples[0]:
            return super()._get_num_items_in_batch(batch_samples, device)
        total = sum((b["loss_weights"][..., 1:] * b["labels"][..., 1:].ne(-100)).sum() for b in batch_samples)
        total = torch.as_tensor(total, dtype=torch.float32, device=device)
        if self.args.average_tokens_across_devices and self.args.world_size > 1:
            total = self.accelerator.gather(total).sum()
        return total

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # type: ignore[override]
        labels = inputs.pop("labels")
        weights = inputs.pop("loss_weights", None)
        outputs = model(**inputs)
        loss = weighted_causal_lm_loss(outputs.logits, labels, weights, num_items_in_batch)
        if num_items_in_batch is not None and self.args.average_tokens_across_devices and self.accelerator.num_processes > 1:
            # num_items_in_batch is summed over processes and DDP averages gradients over them.
            loss = loss * self.accelerator.num_processes
        return (loss, outputs) if return_outputs else loss


class EpochCallback(TrainerCallback):
    """Tells the dataset which epoch starts, so the harmful-prefix cut is resampled each epoch."""

    def __init__(self, dataset: Any):
        self.dataset = dataset

    def on_epoch_begin(self, args, state, control, **kwargs):  # noqa: D401
        self.dataset.set_epoch(int(math.floor((state.epoch or 0.0) + 1e-6)))


def load_tokenizer(name: str) -> Any:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(name)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(cfg: TrainConfig) -> Any:
    from transformers import AutoModelForCausalLM

    dtype = torch.bfloat16 if cfg.use_bf16() else torch.float32
    model = AutoModelForCausalLM.from_pretrained(cfg.model, dtype=dtype)
    if cfg.lora:
        from peft import LoraConfig, get_peft_model

        targets: Any = cfg.lora_target_modules
        if targets == ["all-linear"]:
            targets = "all-linear"
        lcfg = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout, target_modules=targets, task_type="CAUSAL_LM")
        model = get_peft_model(model, lcfg)
    return model


def training_arguments(cfg: TrainConfig, **extra: Any) -> TrainingArguments:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    accum = max(1, cfg.total_batch_size // (cfg.batch_size * world))
    return TrainingArguments(
        output_dir=str(Path(cfg.output_dir) / "checkpoints"),
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        learning_rate=cfg.learning_rate,
        warmup_steps=cfg.warmup_ratio,
        weight_decay=cfg.weight_decay,
        lr_scheduler_type=cfg.lr_scheduler,
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=accum,
        bf16=cfg.use_bf16(),
        activation_checkpointing=cfg.gradient_checkpointing,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        logging_steps=cfg.logging_steps,
        seed=cfg.seed,
        data_seed=cfg.seed,
        remove_unused_columns=False,
        disable_tqdm=not cfg.progress,
        report_to=cfg.report_to,
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),
        **extra,
    )


def latest_checkpoint(output_dir: str | Path) -> str | None:
    ckpts = sorted(Path(output_dir, "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    return str(ckpts[-1]) if ckpts else None


def finalize_trainer(trainer: Any, tokenizer: Any, output_dir: str | Path, record: dict[str, Any], merge: bool = False) -> Path:
    """Save the final model under ``output_dir/final`` atomically, with its run record.

    Works on one process or several (DDP, FSDP, DeepSpeed): every process takes part in ``save_model`` (FSDP and ZeRO-3 gather the shards collectively);
    only the main process writes and renames, so processes never race on ``final``. ``merge``: a
    LoRA model (one process) is saved with its adapters merged into the weights.
    """
    out = Path(output_dir)
    tmp, final = out / "final.tmp", out / "final"
    main = trainer.is_world_process_zero()
    if main:
        shutil.rmtree(tmp, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()
    if merge and hasattr(trainer.model, "merge_and_unload") and trainer.accelerator.num_processes == 1:
        # LoRA folded into the weights: every backend loads the folder as a plain model
        trainer.model.merge_and_unload().save_pretrained(str(tmp))
    else:
        trainer.save_model(str(tmp))
    if main:
        tokenizer.save_pretrained(tmp)
        write_json(tmp / "derta_run.json", record)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
    trainer.accelerator.wait_for_everyone()
    return final


def run_record(cfg: TrainConfig, **extra: Any) -> dict[str, Any]:
    from dataclasses import asdict

    return {"config": asdict(cfg), "environment": environment(), "seed": cfg.seed, **extra}
