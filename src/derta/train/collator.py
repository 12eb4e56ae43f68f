"""Batching rendered rows: right padding to the longest row of the batch (never to max length)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..records import IGNORE_INDEX

#: Per-position float fields a row may carry besides ``loss_weights`` (``objective: constrained``:
#: the reference log-prob and the β of each label, :mod:`derta.train.reference`); 0 where padded.
EXTRA_FLOATS = ("ref_logps", "betas")


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
    """Rows (or bins of rows: items ``{"rows": [...]}``) flattened into ONE sequence, no padding.

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
    """

    flash_attn_kwargs: bool = False

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        from transformers import DataCollatorWithFlattening

        rows = [r for item in items for r in (item["rows"] if "rows" in item else [item])]
        rows = [r for r in rows if len(r["input_ids"])]  # as DataCollatorWithFlattening drops them
        batch = DataCollatorWithFlattening(return_flash_attn_kwargs=self.flash_attn_kwargs)(rows, return_tensors="pt")
        weights = [w for r in rows for w in [0.0, *r["loss_weights"][1:]]]
        batch["loss_weights"] = torch.tensor([weights], dtype=torch.float32)
        for key in (k for k in EXTRA_FLOATS if k in rows[0]):
            batch[key] = torch.tensor([[v for r in rows for v in [0.0, *r[key][1:]]]], dtype=torch.float32)
        return batch
