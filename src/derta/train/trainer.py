"""Training glue: one ``compute_loss`` override on ``transformers.Trainer`` (the config: :mod:`derta.train.config`).

Any ``AutoModelForCausalLM`` works, fully fine-tuned or with LoRA (PEFT). Several processes or
GPUs (DDP, DeepSpeed, FSDP) come from ``accelerate launch`` and its config files; nothing here is
specific to one device count.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

from ..io import environment, write_json

from .checkpoints import latest_checkpoint  # noqa: F401 - re-exported: the newest complete checkpoint
from .collator import BATCH_COUNTS
from .config import TrainConfig  # noqa: F401 - re-exported: derta.train.trainer.TrainConfig
from .loss import chunked_constrained_causal_lm_loss, chunked_weighted_causal_lm_loss, constrained_causal_lm_loss, weighted_causal_lm_loss
from .packing import base_model

log = logging.getLogger(__name__)


class DeRTaTrainer(Trainer):
    """``Trainer`` whose loss is the DeRTa objective (MLE + λ·RTO).

    ``objective`` "constrained": Qi et al.'s token-wise constrained loss instead of the cross-entropy,
    from the ``ref_logps`` and ``betas`` the rows carry (:mod:`derta.train.reference`), weighted
    and normalised as the cross-entropy is.
    ``loss_chunk_size``: the loss is :func:`chunked_weighted_causal_lm_loss` over the model's final
    hidden states (None: :func:`weighted_causal_lm_loss` over the full logits). ``batching``: the
    record of :func:`derta.train.packing.plan_batching`, completed with what the run measured
    (:meth:`batching_record`).
    """

    def __init__(self, *args: Any, count_weights: bool = False, objective_stats: dict[str, Any] | None = None,
                 loss_chunk_size: int | None = None, batching: dict[str, Any] | None = None, objective: str = "derta", **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.objective = objective
        # Our compute_loss consumes num_items_in_batch itself (it is never passed to the model), so
        # the Trainer must count the trained positions of the whole accumulated step for us.
        self.model_accepts_loss_kwargs = True
        # Per-sequence RTO normalisation: an RTO row counts as its total weight, not as its number
        # of positions, in the step's denominator (otherwise its positions would dilute MLE).
        self.count_weights = count_weights
        self.objective_stats = objective_stats or {}
        self.loss_chunk_size = loss_chunk_size
        self.batching = dict(batching or {"mode": "padded"})
        self._chunked: str | None = None  # "" when the chunked loss applies, else why not (decided on the first step)
        self._tally: dict[str, Any] = {"micro_batches": 0, "rows": 0, "real_tokens": 0, "computed_tokens": 0}

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
        ref, betas = inputs.pop("ref_logps", None), inputs.pop("betas", None)
        if self.objective == "constrained" and (ref is None or betas is None):
            raise ValueError("objective constrained: the batch carries no reference log-probs (build the trainer with derta.train.run.build_trainer)")
        packed = {k: inputs.pop(k, None) for k in BATCH_COUNTS}
        if model.training:
            self._count(inputs, **packed)
        # use_cache=False always: with a cache, transformers does not build the packed-rows mask
        # from position_ids, and flattened rows would attend to each other.
        if self.loss_chunk_size and not return_outputs and self._chunked_loss_applies(model):
            hidden, outputs = self._final_hidden_states(model, inputs)
            lm_head = base_model(self.accelerator.unwrap_model(model)).get_output_embeddings()
            if ref is not None:
                loss = chunked_constrained_causal_lm_loss(hidden, lm_head, labels, ref, betas, weights, num_items_in_batch, self.loss_chunk_size)
            else:
                loss = chunked_weighted_causal_lm_loss(hidden, lm_head, labels, weights, num_items_in_batch, self.loss_chunk_size)
        else:
            outputs = model(**inputs, use_cache=False)
            if ref is not None:
                loss = constrained_causal_lm_loss(outputs.logits, labels, ref, betas, weights, num_items_in_batch)
            else:
                loss = weighted_causal_lm_loss(outputs.logits, labels, weights, num_items_in_batch)
        if num_items_in_batch is not None and self.args.average_tokens_across_devices and self.accelerator.num_processes > 1:
            # num_items_in_batch is summed over processes and DDP averages gradients over them.
            loss = loss * self.accelerator.num_processes
        return (loss, outputs) if return_outputs else loss

    def _final_hidden_states(self, model: Any, inputs: dict[str, Any]) -> tuple[torch.Tensor, Any]:
        """The decoder's output, read by a hook during the model's own forward (which DDP and
        DeepSpeed need to see), with the logits of one position only (``logits_to_keep=1``)."""
        decoder = base_model(self.accelerator.unwrap_model(model)).get_decoder()
        seen: list[torch.Tensor] = []
        handle = decoder.register_forward_hook(lambda _m, _a, out: seen.append(out[0]))
        try:
            outputs = model(**inputs, use_cache=False, logits_to_keep=1)
        finally:
            handle.remove()
        return seen[0], outputs

    def _chunked_loss_applies(self, model: Any) -> bool:
        if self._chunked is None:
            self._chunked = chunked_loss_problem(base_model(self.accelerator.unwrap_model(model)), self.accelerator)
            if self._chunked:
                log.warning("loss_chunk_size: computing the loss from the full logits: %s", self._chunked)
        return not self._chunked

    def _count(self, inputs: dict[str, Any], packed_rows: Any = None, packed_tokens: Any = None) -> None:
        """Real and computed tokens of a training micro-batch (device tensors: no sync per step).
        ``packed_*``: the counts of rows laid out in several sequences with pad tails (the collator's)."""
        ids, t = inputs["input_ids"], self._tally
        mask, pos = inputs.get("attention_mask"), inputs.get("position_ids")
        t["micro_batches"] += 1
        t["computed_tokens"] += ids.numel()
        if packed_rows is not None:
            real, rows = packed_tokens, packed_rows
        else:
            real = mask.sum() if mask is not None else ids.numel()
            rows = pos.eq(0).sum() if mask is None and pos is not None else ids.size(0)
        t["real_tokens"] = t["real_tokens"] + real
        t["rows"] = t["rows"] + rows

    def loss_mode(self) -> str:
        if not self.loss_chunk_size:
            return "full logits"
        if self._chunked:
            return f"full logits ({self._chunked})"
        return f"chunked over trained positions ({self.loss_chunk_size} at a time)"

    def batching_record(self) -> dict[str, Any]:
        """The batching mode and what this process's training steps computed, summed over processes:
        padding efficiency (real / computed tokens), real tokens and rows per optimiser step. Every
        process must call it (with several, the counts are summed by a collective)."""
        t = self._tally
        keys = ("micro_batches", "rows", "real_tokens", "computed_tokens")
        counts = torch.stack([torch.as_tensor(t[k], dtype=torch.int64, device=self.args.device) for k in keys])
        if self.accelerator.num_processes > 1:
            counts = self.accelerator.reduce(counts, reduction="sum")
        micro, rows, real, computed = (int(v) for v in counts.tolist())
        steps = self.state.global_step - getattr(self, "_initial_global_step", 0)
        out = {**self.batching, "loss": self.loss_mode(), "micro_batches": micro, "rows": rows, "real_tokens": real, "computed_tokens": computed,
               "padding_efficiency": round(real / computed, 4) if computed else None, "optimizer_steps": steps,
               "tokens_per_step": round(real / steps, 1) if steps else None, "rows_per_step": round(rows / steps, 2) if steps else None,
               "gradient_accumulation_steps": self.args.gradient_accumulation_steps, "processes": self.accelerator.num_processes}
        if computed:
            log.info("batching %s: padding efficiency %.3f (%d real of %d computed tokens), %s tokens/step, %s rows/step; loss: %s",
                     out["mode"], real / computed, real, computed, out["tokens_per_step"], out["rows_per_step"], out["loss"])
        return out


#: Config attributes of models that transform the logits after the LM head (soft-capping, scaling).
_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier", "lm_head_multiplier")


def chunked_loss_problem(model: Any, accelerator: Any = None) -> str:
    """Why the chunked loss cannot be computed for ``model`` ("" when it can): it needs the final
    hidden states to be the LM head's whole input, a forward taking ``logits_to_keep``, and an LM
    head that can be called outside the forward (not under FSDP or DeepSpeed ZeRO-3, which gather
    it only inside)."""
    import inspect

    from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled

    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    transforms = [a for a in _LOGIT_TRANSFORMS if getattr(config, a, None) not in (None, 1, 1.0)]
    if transforms:
        return f"{type(model).__name__} transforms its logits after the LM head ({', '.join(transforms)})"
    if "logits_to_keep" not in inspect.signature(model.forward).parameters:
        return f"{type(model).__name__}.forward takes no logits_to_keep"
    head, decoder = model.get_output_embeddings(), model.get_decoder() if hasattr(model, "get_decoder") else None
    if head is None or decoder is None or decoder is model:
        return f"{type(model).__name__} exposes no separate decoder and LM head"
    if accelerator is not None and (getattr(accelerator, "is_fsdp2", False) or str(accelerator.distributed_type).endswith("FSDP")):
        return "under FSDP the LM head is gathered only inside the model's forward"
    if is_deepspeed_zero3_enabled():
        return "under DeepSpeed ZeRO-3 the LM head is gathered only inside the model's forward"
    return ""


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
    if not cfg.lora:
        return model
    from .lora import add_lora

    return add_lora(model, cfg)


def _has_accelerator() -> bool:
    acc = getattr(torch, "accelerator", None)
    return bool(acc.is_available()) if acc is not None else torch.cuda.is_available()


def training_arguments(cfg: TrainConfig, rows_per_item: float = 1.0, **extra: Any) -> TrainingArguments:
    """``rows_per_item``: rows in one dataset item (a packed bin holds several); gradient
    accumulation keeps about ``total_batch_size`` rows per optimiser step."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if rows_per_item == 1.0:
        accum = max(1, cfg.total_batch_size // (cfg.batch_size * world))
    else:
        accum = max(1, round(cfg.total_batch_size / (cfg.batch_size * world * rows_per_item)))
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
        # several processes on a machine without an accelerator: gloo data parallel on the CPU
        # (without it, transformers starts every process as a single, independent run)
        use_cpu=world > 1 and not _has_accelerator(),
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
    if hasattr(trainer, "batching_record") and "batching" not in record:
        record = {**record, "batching": trainer.batching_record()}  # a collective with several processes: all are here
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
