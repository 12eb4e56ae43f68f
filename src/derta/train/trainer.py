"""Training glue: one ``compute_loss`` override on ``transformers.Trainer`` (the config: :mod:`derta.train.config`).

Any ``AutoModelForCausalLM`` works, fully fine-tuned or with LoRA (PEFT). Several processes or
GPUs (DDP, DeepSpeed, FSDP) come from ``accelerate launch`` and its config files; nothing here is
specific to one device count.
"""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

from ..io import environment, write_json

from .checkpoints import latest_checkpoint  # noqa: F401 - re-exported: the newest complete checkpoint
from .config import TrainConfig  # noqa: F401 - re-exported: derta.train.trainer.TrainConfig
from .loss import weighted_causal_lm_loss


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


def finalize_trainer(trainer: Any, tokenizer: Any, output_dir: str | Path, record: dict[str, Any], merge: bool = False) -> Path:
    """Save the final model under ``output_dir/final`` atomically, with its run record.

    Works on one process or several (DDP, FSDP, DeepSpeed): every process takes part in ``save_model`` (FSDP and ZeRO-3 gather the shards collectively);
    only the main process writes and renames, so processes never race on ``final``. ``merge``: a
    LoRA model (one process) is saved with its adapters merged into the weights.
    """
    out = Path(output_dir)
    tmp, final, old = out / "final.tmp", out / "final", out / "final.old"
    main = trainer.is_world_process_zero()
    if main:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()
    if merge and hasattr(trainer.model, "merge_and_unload") and trainer.accelerator.num_processes == 1:
        # LoRA folded into the weights: every backend loads the folder as a plain model
        trainer.model.merge_and_unload().save_pretrained(str(tmp))
    else:
        trainer.save_model(str(tmp))
    if main:
        tokenizer.save_pretrained(tmp)
        write_json(tmp / "derta_run.json", record)  # written last: a final/ with its record is complete
        if final.exists():
            os.replace(final, old)  # renames only: a kill leaves final, or final.tmp + final.old, never half a final
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()
    return final


def run_record(cfg: TrainConfig, **extra: Any) -> dict[str, Any]:
    from dataclasses import asdict

    return {"config": asdict(cfg), "environment": environment(), "seed": cfg.seed, **extra}
