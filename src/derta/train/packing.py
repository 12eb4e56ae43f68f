"""How rendered rows become micro-batches: padded, padding-free (flattened) or best-fit-decreasing packed.

- **padded** (:class:`derta.train.collator.DeRTaCollator`): ``batch_size`` rows padded to the longest
  one; ``group_by_length`` orders rows so that a micro-batch holds rows of similar length
  (transformers' ``LengthGroupedSampler``, ``train_sampling_strategy="group_by_length"``).
- **padding-free** (:class:`derta.train.collator.PaddingFreeCollator`): the same ``batch_size`` rows
  concatenated with ``position_ids`` that restart at 0 on each row; the attention keeps the rows
  apart (transformers builds a block-diagonal causal mask from the position resets, or
  FlashAttention's varlen kernel reads the row boundaries). With a varlen kernel the micro-batch is
  one sequence and no pad token is computed; otherwise (SDPA, eager: a dense mask, whose cost grows
  with the square of a sequence's length) its rows are packed into sequences of at most
  ``max_length`` tokens, padded to the longest of them.
- **bfd**: rows packed into bins of ``max_length`` tokens with TRL's best-fit-decreasing (:func:`bfd_bins`),
  ``batch_size`` bins per padding-free micro-batch.

:func:`plan_batching` picks one for a TrainConfig and a model, and says in its record what it chose and why.
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass, field
from typing import Any

import torch

from .bfd import bfd_bins
from .collator import DeRTaCollator, PaddingFreeCollator

log = logging.getLogger(__name__)

#: Attention implementations of transformers that keep rows flattened into one sequence apart, given
#: ``position_ids`` and no attention mask (and no cache: see :class:`derta.train.trainer.DeRTaTrainer`).
PACKED_ATTENTION = ("eager", "sdpa", "flash_attention_2", "flash_attention_3", "flex_attention")


class PackedDataset(torch.utils.data.Dataset):
    """Bins of rows of a :class:`derta.data.render.RenderedDataset`: item ``j`` is ``{"rows": [row, ...]}``.

    The bins are fixed for the run (packed from epoch 0's lengths), so a resumed run sees the same
    bins; each row is still rendered anew every epoch (its harmful-prefix cut is resampled), so a
    bin may hold a few tokens more or fewer than at packing time.
    """

    def __init__(self, rows: Any, bins: list[list[int]]):
        self.rows = rows
        self.bins = bins

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.rows, "set_epoch"):  # rows rendered per epoch (a plain list of rows has no epochs)
            self.rows.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.bins)

    def __getitem__(self, j: int) -> dict[str, list]:
        return {"rows": [self.rows[i] for i in self.bins[j]]}


def base_model(model: Any) -> Any:
    """The transformers model under a PEFT wrapper (whose LoRA layers are injected in place)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def packed_attention_problem(model: Any) -> str | None:
    """Why ``model`` cannot train on flattened rows, or None when it can.

    Checks the forward takes ``position_ids`` and the attention implementation is one that builds
    the packed mask (:data:`PACKED_ATTENTION`); then, where the weights are materialised (not
    sharded at load time), a test forward: the logits of a second packed row must not depend on the
    row before it.
    """
    base = base_model(model)
    if "position_ids" not in inspect.signature(base.forward).parameters:
        return f"{type(base).__name__}.forward takes no position_ids"
    impl = getattr(base.config, "_attn_implementation", None)
    if impl not in PACKED_ATTENTION:
        return f"attention implementation {impl!r} is not one that keeps packed rows apart ({', '.join(PACKED_ATTENTION)})"
    params = list(base.parameters())
    if not params or any(p.numel() == 0 or p.device.type == "meta" for p in params):
        return None  # sharded at load time (ZeRO-3): no test forward, the implementation check stands
    return _leak_probe(base)


def _leak_probe(model: Any) -> str | None:
    """Two rows packed as [a, b] and [a', b]: b's logits must not move with the row before it (compared
    with how much they move when b is let attend to it, through a full attention mask)."""
    device = next(model.parameters()).device
    vocab = model.get_input_embeddings().num_embeddings
    g = torch.Generator().manual_seed(0)
    a, a2, b = (torch.randint(0, vocab, (n,), generator=g) for n in (5, 5, 6))
    pos = torch.cat([torch.arange(5), torch.arange(6)])[None].to(device)

    def logits_of_b(first: torch.Tensor, **kw: Any) -> torch.Tensor:
        ids = torch.cat([first, b])[None].to(device)
        return model(input_ids=ids, position_ids=pos, use_cache=False, **kw).logits[0, 5:].float()

    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            moved = (logits_of_b(a) - logits_of_b(a2)).abs().max().item()
            full = torch.ones_like(pos)
            leak = (logits_of_b(a, attention_mask=full) - logits_of_b(a2, attention_mask=full)).abs().max().item()
    finally:
        model.train(training)
    if leak > 0 and moved > 0.01 * leak:
        return f"in a test forward, a packed row's logits depend on the row before it (by {moved:.3g}; {leak:.3g} when it attends to it)"
    return None


@dataclass
class Batching:
    """What :func:`plan_batching` chose: the dataset and collator to train on, and its record."""

    dataset: Any
    collator: Any
    rows_per_item: float = 1.0  # rows per dataset item (a bin holds several)
    arguments: dict[str, Any] = field(default_factory=dict)  # extra TrainingArguments
    record: dict[str, Any] = field(default_factory=dict)


def plan_batching(cfg: Any, model: Any, dataset: Any, pad_token_id: int) -> Batching:
    """The batching of a run: ``cfg.padding_free`` / ``packing`` / ``group_by_length`` on ``model``.

    Padding-free on a model whose attention cannot keep flattened rows apart is switched off with a
    warning (the padded path trains the same rows); ``packing: bfd`` there is a ValueError.
    """
    record: dict[str, Any] = {"padding_free_requested": cfg.padding_free, "packing": cfg.packing, "group_by_length": cfg.group_by_length}
    padding_free = cfg.padding_free
    if padding_free:
        problem = packed_attention_problem(model)
        if problem and cfg.packing == "bfd":
            raise ValueError(f"packing bfd needs padding-free batches, which this model cannot train on: {problem}")
        if problem:
            log.warning("padding_free is off: %s; training on padded batches", problem)
            record["padding_free_off"] = problem
            padding_free = False
    record["padding_free"] = padding_free
    arguments = {"train_sampling_strategy": "group_by_length"} if cfg.group_by_length else {}
    impl = getattr(base_model(model).config, "_attn_implementation", "") or ""
    if not padding_free:
        mode = "padded, length-grouped" if cfg.group_by_length else "padded"
        return Batching(dataset, DeRTaCollator(pad_token_id=pad_token_id), arguments=arguments, record={"mode": mode, **record})
    # without a varlen kernel the packed mask is dense: sequences of at most max_length tokens, not one
    flash = impl.startswith("flash")
    collator = PaddingFreeCollator(flash_attn_kwargs=flash, row_tokens=None if flash else cfg.max_length, pad_token_id=pad_token_id)
    record["sequences"] = "one per micro-batch (varlen kernel)" if flash else f"rows packed into sequences of at most {cfg.max_length} tokens"
    if cfg.packing == "none":
        mode = "padding-free, length-grouped" if cfg.group_by_length else "padding-free"
        return Batching(dataset, collator, arguments=arguments, record={"mode": mode, **record})
    lengths = [len(dataset[i]["input_ids"]) for i in range(len(dataset))]
    bins = bfd_bins(lengths, cfg.max_length)
    per_bin = len(lengths) / max(1, len(bins))
    record.update(mode="bfd", bins=len(bins), bin_tokens=cfg.max_length, rows_per_bin=round(per_bin, 3),
                  bin_fill=round(sum(lengths) / max(1, len(bins) * cfg.max_length), 4))
    return Batching(PackedDataset(dataset, bins), collator, rows_per_item=per_bin, record=record)
