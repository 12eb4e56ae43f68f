"""Batching rendered rows: right padding to the longest row of the batch (never to max length)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..records import IGNORE_INDEX
from .bfd import bfd_bins

#: Per-position float fields a row may carry besides ``loss_weights`` (``objective: constrained``:
#: the reference log-prob and the β of each label, :mod:`derta.train.reference`); 0 where padded.
EXTRA_FLOATS = ("ref_logps", "betas")
#: Counts a packed batch carries for the batching record (:class:`PaddingFreeCollator` with
#: ``row_tokens``): not model inputs, dropped before the forward.
BATCH_COUNTS = ("packed_rows", "packed_tokens")


@dataclass
class DeRTaCollator:
    """Pads ``input_ids``/``labels``/``loss_weights`` rows into tensors.

    Example (pad id 0)::

        rows:  [5, 6, 7] labels [-100, 6, 7] weights [0, 1, 1]
               [5, 8]    labels [-100, 9]    weights [0, .5]
        input_ids      [[5, 6, 7], [5, 8, 0]]
        attention_mask [[1, 1, 1], [1, 1, 0]]
        labels         [[-100, 6, 7], [-100, 9, -100]]
        loss_weights   [[0, 1, 1], [0, .5, 0]]

    Rows with ``ref_logps`` and ``betas`` (:data:`EXTRA_FLOATS`) get them padded like ``loss_weights``.
    """

    pad_token_id: int
    pad_to_multiple_of: int | None = None

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        n = max(len(r["input_ids"]) for r in rows)
        if self.pad_to_multiple_of:
            m = self.pad_to_multiple_of
            n = (n + m - 1) // m * m
        ids = torch.full((len(rows), n), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), n), dtype=torch.long)
        labels = torch.full((len(rows), n), IGNORE_INDEX, dtype=torch.long)
        weights = torch.zeros((len(rows), n), dtype=torch.float32)
        for i, r in enumerate(rows):
            k = len(r["input_ids"])
            ids[i, :k] = torch.tensor(r["input_ids"], dtype=torch.long)
            mask[i, :k] = 1
            labels[i, :k] = torch.tensor(r["labels"], dtype=torch.long)
            weights[i, :k] = torch.tensor(r["loss_weights"], dtype=torch.float32)
        batch = {"input_ids": ids, "attention_mask": mask, "labels": labels, "loss_weights": weights}
        for key in (k for k in EXTRA_FLOATS if k in rows[0]):
            batch[key] = torch.zeros((len(rows), n), dtype=torch.float32)
            for i, r in enumerate(rows):
                batch[key][i, : len(r[key])] = torch.tensor(r[key], dtype=torch.float32)
        return batch


@dataclass
class PaddingFreeCollator:
    """Rows (or bins of rows: items ``{"rows": [...]}``) flattened, with no padding between them.

    transformers' ``DataCollatorWithFlattening`` builds ``input_ids``, ``labels`` and
    ``position_ids``; this adds ``loss_weights`` aligned with them. Each row's first label is
    ``-100`` and its weight 0: in the padded layout nothing predicts a row's first token (the loss
    shift drops it), and here the position before it is the previous row's last token. Example::

        rows:  [5, 6, 7] labels [-100, 6, 7] weights [0, 1, 1]
               [5, 8]    labels [-100, 9]    weights [0, .5]
        input_ids    [[5, 6, 7, 5, 8]]
        position_ids [[0, 1, 2, 0, 1]]
        labels       [[-100, 6, 7, -100, 9]]
        loss_weights [[0, 1, 1, 0, .5]]

    ``ref_logps`` and ``betas`` (:data:`EXTRA_FLOATS`), when the rows carry them, are flattened
    like ``loss_weights``. ``flash_attn_kwargs``: also the row boundaries FlashAttention's varlen kernel reads
    (``cu_seq_lens_q/k``, ``max_length_q/k``), computed here on the CPU rather than in every layer.

    ``row_tokens``: instead of ONE sequence, the rows are laid out in several of at most
    ``row_tokens`` tokens (best fit decreasing; a bin item is one sequence; a longer row is one of
    its own), right-padded to the longest. For attention without a varlen kernel (SDPA, eager),
    whose packed mask is dense: one flattened sequence of T tokens costs T² in attention, these
    cost the sum of their own squares. The pad tail of a sequence is a segment of its own
    (positions restart at 0, labels ``-100``, weight 0), so no row attends to it. Example
    (``row_tokens=4``, pad id 0)::

        input_ids    [[5, 6, 7, 0], [5, 8, 0, 0]]
        position_ids [[0, 1, 2, 0], [0, 1, 0, 1]]

    Laid out this way the batch also carries ``packed_rows`` and ``packed_tokens`` (how many rows
    and real tokens it holds), which the trainer reads for its batching record and drops before
    the forward.
    """

    flash_attn_kwargs: bool = False
    row_tokens: int | None = None
    pad_token_id: int = 0

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        if self.row_tokens and not self.flash_attn_kwargs:
            return self._rows_of(items)
        from transformers import DataCollatorWithFlattening

        rows = [r for item in items for r in (item["rows"] if "rows" in item else [item])]
        rows = [r for r in rows if len(r["input_ids"])]  # as DataCollatorWithFlattening drops them
        batch = DataCollatorWithFlattening(return_flash_attn_kwargs=self.flash_attn_kwargs)(rows, return_tensors="pt")
        weights = [w for r in rows for w in [0.0, *r["loss_weights"][1:]]]
        batch["loss_weights"] = torch.tensor([weights], dtype=torch.float32)
        for key in (k for k in EXTRA_FLOATS if k in rows[0]):
            batch[key] = torch.tensor([[v for r in rows for v in [0.0, *r[key][1:]]]], dtype=torch.float32)
        return batch

    def _rows_of(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        if any("rows" in item for item in items):  # bins packed ahead: one sequence each
            groups = [[r for r in (item["rows"] if "rows" in item else [item]) if len(r["input_ids"])] for item in items]
        else:
            rows = [r for r in items if len(r["input_ids"])]
            groups = [[rows[i] for i in b] for b in bfd_bins([len(r["input_ids"]) for r in rows], self.row_tokens)]
        groups = [g for g in groups if g]
        n = max(sum(len(r["input_ids"]) for r in g) for g in groups)
        shape = (len(groups), n)
        ids = torch.full(shape, self.pad_token_id, dtype=torch.long)
        pos = torch.zeros(shape, dtype=torch.long)
        labels = torch.full(shape, IGNORE_INDEX, dtype=torch.long)
        floats = {k: torch.zeros(shape, dtype=torch.float32) for k in ("loss_weights", *(k for k in EXTRA_FLOATS if k in groups[0][0]))}
        for i, group in enumerate(groups):
            at = 0
            for r in group:
                k = len(r["input_ids"])
                ids[i, at:at + k] = torch.tensor(r["input_ids"], dtype=torch.long)
                pos[i, at:at + k] = torch.arange(k)
                labels[i, at + 1:at + k] = torch.tensor(r["labels"][1:], dtype=torch.long)
                for key, t in floats.items():
                    t[i, at + 1:at + k] = torch.tensor(r[key][1:], dtype=torch.float32)
                at += k
            pos[i, at:] = torch.arange(n - at)  # the pad tail: a segment of its own
        return {"input_ids": ids, "position_ids": pos, "labels": labels, **floats,
                "packed_rows": torch.tensor(sum(len(g) for g in groups)),
                "packed_tokens": torch.tensor(sum(len(r["input_ids"]) for g in groups for r in g))}
