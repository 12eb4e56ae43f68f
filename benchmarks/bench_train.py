"""Training throughput arms: effective (non-pad) tokens per second over one epoch of the same rows.

Every arm trains a copy of the same model on the same rendered rows (epoch 0 of
:class:`derta.data.render.RenderedDataset`), one optimiser step per micro-batch, through its
trainer's own dataloader, collator and ``training_step``; only the epoch is timed (trainer
construction, TRL's dataset packing and the first allocations are not). Effective tokens are the
rows' real tokens, the same count for every arm, so a ratio of rates is a ratio of epoch times.

| arm | what |
| --- | --- |
| ``derta`` | :func:`derta.train.run.build_trainer` with the TrainConfig defaults |
| ``padmax`` | the same trainer, every row padded to ``max_length`` |
| ``reference`` | ``transformers.Trainer`` + ``DataCollatorForSeq2Seq(pad_to_multiple_of=8)``, batch 16, the model's own loss |
| ``trl_packed`` | TRL ``SFTTrainer``, ``packing=True`` (best-fit decreasing), completion-only loss |
| ``sft`` | the derta trainer's batches, the model's own loss (plain SFT on the same tokens) |
| ``padded`` / ``bfd`` / ``grouped`` / ``full_logits`` | derta with one setting changed (``padding_free`` off, ``packing: bfd``, ``group_by_length`` with padding, ``loss_chunk_size: null``) |
"""

from __future__ import annotations

import copy
import dataclasses
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench_timing import Unavailable

#: derta variants: arm -> TrainConfig settings changed from the defaults.
VARIANTS: dict[str, dict[str, Any]] = {
    "padded": {"padding_free": False},
    "bfd": {"packing": "bfd"},
    "grouped": {"padding_free": False, "group_by_length": True},
    "full_logits": {"loss_chunk_size": None},
}


def train_config(tmp: Path, batch_size: int, max_length: int, **settings: Any) -> Any:
    """A TrainConfig for an in-memory run; :class:`Unavailable` when a setting is not a field."""
    from derta.train.config import TrainConfig

    names = {f.name for f in dataclasses.fields(TrainConfig)}
    missing = sorted(set(settings) - names)
    if missing:
        raise Unavailable(f"TrainConfig has no field {', '.join(missing)}")
    return TrainConfig(model="benchmark", data="benchmark", output_dir=str(tmp), batch_size=batch_size, total_batch_size=batch_size,
                       max_length=max_length, progress=False, logging_steps=10**9, save_steps=10**9, **settings)


def rendered_rows(cfg: Any, workload: Any) -> list[dict[str, list]]:
    """Epoch 0 of the rows every arm trains on (what ``build_trainer``'s dataset renders)."""
    from derta.data.render import RenderedDataset
    from derta.train.run import make_renderer

    ds = RenderedDataset(workload.examples, make_renderer(cfg, workload.tokenizer), seed=cfg.seed)
    return [ds[i] for i in range(len(ds))]


class TrainArms:
    """Builds each arm on its first call (untimed) and times one epoch per later call."""

    def __init__(self, workload: Any, model: Any, tmp: Path, batch_size: int = 4, max_length: int = 1024, reference_batch: int = 16):
        self.w, self.base, self.tmp = workload, model, tmp
        self.batch_size, self.max_length, self.reference_batch = batch_size, max_length, reference_batch
        self.rows = rendered_rows(train_config(tmp, batch_size, max_length), workload)
        self.real_tokens = sum(len(r["input_ids"]) for r in self.rows)
        self.computed: dict[str, int] = {}  # tokens the model computed per epoch (pads and packing included)
        self._built: dict[str, tuple[Any, Any]] = {}

    def arm(self, name: str, build: Callable[[Any], Any]) -> Callable[[bool], float]:
        def run(warm: bool = False) -> float:
            if name not in self._built:
                trainer = build(copy.deepcopy(self.base))
                trainer.current_gradient_accumulation_steps = 1  # set by Trainer.train, which the timed loop replaces
                self._built[name] = (trainer, trainer.create_optimizer())
            trainer, opt = self._built[name]
            return self._epoch(name, trainer, opt, batches=1 if warm else None)

        return run

    def _epoch(self, name: str, trainer: Any, opt: Any, batches: int | None = None) -> float:
        model = trainer.model
        model.train()
        computed = 0
        start = time.perf_counter()
        for i, batch in enumerate(trainer.get_train_dataloader()):
            if batches is not None and i >= batches:
                return float("nan")  # a warm-up: not a measurement
            computed += int(batch["input_ids"].numel())
            trainer.training_step(model, batch)
            opt.step()
            opt.zero_grad(set_to_none=True)
        seconds = time.perf_counter() - start
        if batches is None:
            self.computed[name] = computed
        return self.real_tokens / seconds

    # --- the arms -------------------------------------------------------------------------

    def derta(self, **settings: Any) -> Callable[[Any], Any]:
        def build(model: Any) -> Any:
            from derta.train.run import build_trainer

            cfg = train_config(self.tmp / "derta", self.batch_size, self.max_length, **settings)
            return build_trainer(cfg, model, self.w.tokenizer, self.w.examples)

        return build

    def padmax(self, model: Any) -> Any:
        from derta.train.collator import DeRTaCollator

        off = {"padding_free": False} if _has_field("padding_free") else {}
        trainer = self.derta(**off)(model)
        trainer.data_collator = DeRTaCollator(pad_token_id=self.w.tokenizer.pad_token_id, pad_to_multiple_of=self.max_length)
        return trainer

    def sft(self, model: Any) -> Any:
        from derta.train.collator import BATCH_COUNTS

        trainer = self.derta()(model)

        def builtin_loss(self_: Any, model: Any, inputs: dict, return_outputs: bool = False, num_items_in_batch: Any = None) -> Any:
            inputs = {k: v for k, v in inputs.items() if k not in ("loss_weights", *BATCH_COUNTS)}
            out = model(**inputs)  # labels included: the model's own (unweighted) cross-entropy
            return (out.loss, out) if return_outputs else out.loss

        trainer.compute_loss = types.MethodType(builtin_loss, trainer)
        return trainer

    def reference(self, model: Any) -> Any:
        from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

        rows = [{"input_ids": r["input_ids"], "labels": r["labels"]} for r in self.rows]
        args = TrainingArguments(output_dir=str(self.tmp / "reference"), per_device_train_batch_size=self.reference_batch, report_to="none",
                                 disable_tqdm=True, remove_unused_columns=False, dataloader_num_workers=0, seed=42, save_strategy="no", bf16=_bf16())
        collator = DataCollatorForSeq2Seq(self.w.tokenizer, pad_to_multiple_of=8, label_pad_token_id=-100)
        return Trainer(model=model, args=args, train_dataset=rows, data_collator=collator)

    def trl_packed(self, model: Any) -> Any:
        try:
            from datasets import Dataset
            from trl import SFTConfig, SFTTrainer
        except ImportError as e:
            raise Unavailable(f"trl is not importable ({e})") from e
        rows = [{"input_ids": r["input_ids"], "completion_mask": [int(lab != -100) for lab in r["labels"]]} for r in self.rows]
        args = SFTConfig(output_dir=str(self.tmp / "trl"), per_device_train_batch_size=self.batch_size, max_length=self.max_length, packing=True,
                         packing_strategy="bfd", completion_only_loss=True, report_to="none", disable_tqdm=True, dataloader_num_workers=0,
                         seed=42, save_strategy="no", logging_steps=10**9, bf16=_bf16(), use_cpu=not _cuda())
        return SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=self.w.tokenizer)

    def arms(self, variants: bool = True) -> dict[str, Callable[[bool], float]]:
        out = {
            "derta": self.arm("derta", self.derta()),
            "padmax": self.arm("padmax", self.padmax),
            "reference": self.arm("reference", self.reference),
            "trl_packed": self.arm("trl_packed", self.trl_packed),
            "sft": self.arm("sft", self.sft),
        }
        if variants:
            out.update({name: self.arm(name, self.derta(**settings)) for name, settings in VARIANTS.items()})
        return out


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _bf16() -> bool:
    """What the derta trainer does with ``bf16: auto``: bf16 on a GPU that has it."""
    import torch

    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def _has_field(name: str) -> bool:
    from derta.train.config import TrainConfig

    return name in {f.name for f in dataclasses.fields(TrainConfig)}
