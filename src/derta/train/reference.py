"""Reference log-probs for ``objective: constrained``: computed once before training, cached on disk.

Qi et al.'s token-wise constrained loss (:func:`derta.train.loss.constrained_from_ce`) compares
the policy's log-prob of every trained token with the frozen starting model's. The starting model
is the policy before its first step, so no second model is kept beside it: :func:`use_reference`
renders every row the run will train (each epoch's rendering: a harmful-prefix cut resampled per
epoch makes another row), scores them with the model in padded batches without gradients, and
keeps log π_ref of each trained position under the row's content (its input ids and labels).
:class:`ReferenceDataset` then adds them, with the β of each position, to the rows it hands the
collator (``ref_logps`` and ``betas``, aligned with ``labels``), whatever the batching.

The cache file is named by the reference model's identity (its config name or folder, dtype and a
sample of every parameter tensor), the tokenizer's (vocabulary, special tokens, chat template) and
the rows' fingerprint; it is reused only when all of them match, and computed anew otherwise.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from array import array
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..io import atomic_file, write_json
from ..records import IGNORE_INDEX
from .collator import DeRTaCollator
from .identity import folder_identity
from .loss import _upcast, weighted_token_losses
from .packing import PackedDataset, base_model
from .trainer import chunked_loss_problem

log = logging.getLogger(__name__)

#: Elements of each parameter tensor read into the model's identity (evenly spaced, exact bytes).
SAMPLE = 4096


@dataclass(frozen=True)
class BetaSchedule:
    """β_t of a row's t-th trained token (t from 1): ``first`` at t = 1, ``early`` for 2 ≤ t ≤
    ``early_tokens``, ``late`` after. Defaults: Qi et al.'s harmful fine-tuning setting (β_1 = 0.5,
    β_t = 2 for 2 ≤ t ≤ 5, β_t = 0.1 for t > 5; their code's beta 0.1 × first-token factor 5 ×
    bias factor 20 over bias length 5). t counts the labelled positions of the row, as their
    reference code does (for a row after a harmful prefix, the first token of the safe answer is t = 1)."""

    first: float = 0.5
    early: float = 2.0
    late: float = 0.1
    early_tokens: int = 5

    @classmethod
    def from_config(cls, cfg: Any) -> "BetaSchedule":
        return cls(cfg.constrained_beta_first, cfg.constrained_beta_early, cfg.constrained_beta_late, cfg.constrained_early_tokens)

    def beta(self, t: int) -> float:
        return self.first if t == 1 else self.early if t <= self.early_tokens else self.late

    def for_labels(self, labels: list[int]) -> list[float]:
        """β aligned with ``labels`` (0.0 where the label is ignored; labels[0] is never trained)."""
        out, t = [0.0] * len(labels), 0
        for i in range(1, len(labels)):
            if labels[i] != IGNORE_INDEX:
                t += 1
                out[i] = self.beta(t)
        return out


def row_key(row: dict[str, Any]) -> str:
    """A rendered row named by its content: what the reference log-probs depend on."""
    h = hashlib.blake2b(array("q", row["input_ids"]).tobytes(), digest_size=16)
    h.update(b"|")
    h.update(array("q", row["labels"]).tobytes())
    return h.hexdigest()


class ReferenceLogps:
    """log π_ref of the trained positions of each row, by :func:`row_key`."""

    def __init__(self, table: dict[str, torch.Tensor]):
        self.table = table

    def aligned(self, row: dict[str, Any]) -> list[float]:
        """``row``'s reference log-probs aligned with its labels (0.0 where the label is ignored)."""
        values = self.table.get(row_key(row))
        labels = row["labels"]
        trained = [i for i in range(1, len(labels)) if labels[i] != IGNORE_INDEX]
        if values is None or len(values) != len(trained):
            raise RuntimeError("objective constrained: a training row has no cached reference log-probs (it was not among the rows "
                               "scored before training); delete the reference cache or report this")
        out = [0.0] * len(labels)
        for i, v in zip(trained, values.tolist()):
            out[i] = v
        return out

    def save(self, path: Path) -> None:
        keys = list(self.table)
        blob = {"keys": keys, "counts": torch.tensor([len(self.table[k]) for k in keys], dtype=torch.long),
                "values": torch.cat([self.table[k] for k in keys]) if keys else torch.zeros(0)}
        with atomic_file(path, "wb") as f:
            torch.save(blob, f)

    @classmethod
    def load(cls, path: Path) -> "ReferenceLogps":
        blob = torch.load(path, weights_only=True)
        return cls(dict(zip(blob["keys"], blob["values"].split(blob["counts"].tolist()))))


class ReferenceDataset(torch.utils.data.Dataset):
    """Rows of ``rows`` (a :class:`derta.data.render.RenderedDataset`) with ``ref_logps`` and ``betas``."""

    def __init__(self, rows: Any, reference: ReferenceLogps, schedule: BetaSchedule):
        self.rows, self.reference, self.schedule = rows, reference, schedule

    def set_epoch(self, epoch: int) -> None:
        self.rows.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, list]:
        row = dict(self.rows[i])
        row["ref_logps"] = self.reference.aligned(row)
        row["betas"] = self.schedule.for_labels(row["labels"])
        return row


def epochs_to_score(cfg: Any, n_items: int, accumulation: int) -> int:
    """Epochs the Trainer will start (its own count: ``max_steps`` over optimiser steps per epoch)."""
    if cfg.max_steps <= 0:
        return max(1, math.ceil(cfg.epochs))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    batches = math.ceil(math.ceil(n_items / world) / cfg.batch_size)
    per_epoch = max(1, math.ceil(batches / accumulation))
    return max(1, math.ceil(cfg.max_steps / per_epoch))


def rows_to_score(dataset: Any, epochs: int) -> tuple[dict[str, dict[str, Any]], str]:
    """The distinct rendered rows of ``epochs`` epochs (by :func:`row_key`) and the sha256 of all of them in order."""
    saved, h, rows = dataset.epoch, hashlib.sha256(), {}
    try:
        for e in range(epochs):
            dataset.set_epoch(e)
            for i in range(len(dataset)):
                row = dataset[i]
                key = row_key(row)
                h.update(key.encode())
                rows.setdefault(key, row)
    finally:
        dataset.set_epoch(saved)
    return rows, h.hexdigest()


def model_identity(model: Any, name: str = "") -> dict[str, Any]:
    """The reference model: its config name or folder (:func:`derta.train.identity.folder_identity`),
    class, dtype and the sha256 of :data:`SAMPLE` evenly spaced elements of every parameter."""
    h = hashlib.sha256()
    dtypes = set()
    for n, p in model.named_parameters():
        flat = p.detach().reshape(-1)
        idx = torch.linspace(0, flat.numel() - 1, min(flat.numel(), SAMPLE), device=flat.device).long()
        h.update(f"{n}:{tuple(p.shape)}:{p.dtype}".encode())
        h.update(flat[idx].contiguous().cpu().view(torch.uint8).numpy().tobytes())
        dtypes.add(str(p.dtype))
    return {"model": folder_identity(name) if name else None, "class": type(base_model(model)).__name__,
            "dtypes": sorted(dtypes), "parameters_sha256": h.hexdigest()}


def tokenizer_identity(tokenizer: Any) -> dict[str, Any]:
    vocab = json.dumps(sorted(tokenizer.get_vocab().items()), ensure_ascii=False)
    return {"class": type(tokenizer).__name__, "vocab_sha256": hashlib.sha256(vocab.encode()).hexdigest(),
            "special_tokens": {k: str(v) for k, v in tokenizer.special_tokens_map.items()},
            "chat_template_sha256": hashlib.sha256(str(getattr(tokenizer, "chat_template", "") or "").encode()).hexdigest()}


def _trained_logps(model: Any, batch: dict[str, torch.Tensor], chunk_size: int | None) -> torch.Tensor:
    """log π(labels_i | inputs_<i) of the batch's labelled positions, row-major, float32.

    Computed the way training computes the policy's: from the final hidden states ``chunk_size``
    trained positions at a time when the chunked loss applies, else from the full logits."""
    device = next(model.parameters()).device
    inputs = {"input_ids": batch["input_ids"].to(device), "attention_mask": batch["attention_mask"].to(device)}
    labels = batch["labels"].to(device)
    keep = labels[:, 1:].ne(IGNORE_INDEX)
    base = base_model(model)
    if not chunk_size or chunked_loss_problem(base):
        return -weighted_token_losses(model(**inputs, use_cache=False).logits, labels)[keep].float()
    seen: list[torch.Tensor] = []
    handle = base.get_decoder().register_forward_hook(lambda _m, _a, out: seen.append(out[0]))
    try:
        model(**inputs, use_cache=False, logits_to_keep=1)
    finally:
        handle.remove()
    head = base.get_output_embeddings()
    at = next(head.parameters()).device
    h, y = seen[0][:, :-1][keep].to(at), labels[:, 1:][keep].to(at)
    parts = [-F.cross_entropy(_upcast(head(h[s : s + chunk_size])), y[s : s + chunk_size], reduction="none") for s in range(0, h.size(0), chunk_size)]
    return torch.cat(parts).float() if parts else h.new_zeros(0, dtype=torch.float32)


@torch.no_grad()
def score_rows(model: Any, rows: list[dict[str, Any]], pad_token_id: int, batch_size: int = 8,
               chunk_size: int | None = 1024) -> list[torch.Tensor]:
    """For each row, log π(labels_i | inputs_<i) of its labelled positions (float32, on the CPU);
    rows are scored shortest first, ``batch_size`` at a time, with the model in eval mode."""
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]["input_ids"]))
    out: list[torch.Tensor] = [torch.zeros(0)] * len(rows)
    collate = DeRTaCollator(pad_token_id=pad_token_id)
    training = model.training
    model.eval()
    try:
        for s in range(0, len(order), batch_size):
            idx = order[s : s + batch_size]
            batch = collate([{k: rows[i][k] for k in ("input_ids", "labels", "loss_weights")} for i in idx])
            counts = batch["labels"][:, 1:].ne(IGNORE_INDEX).sum(1).tolist()
            for i, part in zip(idx, _trained_logps(model, batch, chunk_size).cpu().split(counts)):
                out[i] = part.clone()
    finally:
        model.train(training)
    return out


def _on_device(model: Any, device: torch.device) -> torch.device | None:
    """Move ``model`` to ``device`` for scoring; the device to move it back to (None: not moved)."""
    params = list(model.parameters())
    if any(p.numel() == 0 or p.device.type == "meta" for p in params):
        raise ValueError("objective constrained scores the training rows with the starting model before training; its weights are "
                         "sharded at load time here (DeepSpeed ZeRO-3 / FSDP meta init), which this does not support")
    before = params[0].device
    if getattr(model, "hf_device_map", None) or before == torch.device(device):
        return None
    model.to(device)
    return before


def use_reference(cfg: Any, model: Any, tokenizer: Any, dataset: Any, batching: Any, args: Any) -> dict[str, Any]:
    """Score (or load) the reference log-probs of every row the run trains, and make ``batching``
    hand them out: its dataset becomes a :class:`ReferenceDataset` (inside the bins when packed).
    Returns the run record's ``constrained`` entry: the β schedule and the cache used."""
    schedule = BetaSchedule.from_config(cfg)
    epochs = epochs_to_score(cfg, len(batching.dataset), args.gradient_accumulation_steps)
    rows, rows_sha = rows_to_score(dataset, epochs)
    chunk = cfg.loss_chunk_size
    identity = {"reference": model_identity(model, cfg.model), "tokenizer": tokenizer_identity(tokenizer),
                "rows": {"sha256": rows_sha, "distinct": len(rows), "epochs": epochs}, "scored": "chunked" if chunk else "full logits"}
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    path = Path(cfg.reference_cache_dir or Path(cfg.output_dir) / "reference") / f"{key[:32]}.pt"
    reused = False
    with args.main_process_first(local=False, desc="reference log-probs"):
        reference = _load(path, rows)
        if reference is not None:
            reused = True
            log.info("objective constrained: reference log-probs of %d rows reused from %s", len(rows), path)
        else:
            moved = _on_device(model, args.device)
            try:
                scores = score_rows(model, list(rows.values()), tokenizer.pad_token_id, cfg.batch_size, chunk)
            finally:
                if moved is not None:
                    model.to(moved)
            reference = ReferenceLogps(dict(zip(rows, scores)))
            if args.process_index == 0:
                reference.save(path)
                write_json(path.with_suffix(".json"), {"key": key, **identity})
            log.info("objective constrained: scored %d rows (%d epochs) with the starting model; cached in %s", len(rows), epochs, path)
    positions = sum(len(v) for v in reference.table.values())
    mean = float(sum(v.double().sum() for v in reference.table.values()) / positions) if positions else None
    batching.dataset = _with_reference(batching.dataset, reference, schedule)
    return {"objective": "constrained", "beta": {**asdict(schedule), "t": "labelled positions of a row, from 1"},
            "reference": {"model": "the starting model (before training)", "cache": str(path), "reused": reused, "key": key,
                          "rows": len(rows), "epochs": epochs, "positions": positions, "mean_logp": mean, "identity": identity}}


def _load(path: Path, rows: dict[str, Any]) -> ReferenceLogps | None:
    if not path.is_file():
        return None
    try:
        reference = ReferenceLogps.load(path)
    except (OSError, RuntimeError, ValueError, KeyError) as e:
        log.warning("objective constrained: the reference cache %s does not read (%s); scoring again", path, e)
        return None
    if set(reference.table) != set(rows):
        log.warning("objective constrained: the reference cache %s does not hold this run's rows; scoring again", path)
        return None
    return reference


def _with_reference(ds: Any, reference: ReferenceLogps, schedule: BetaSchedule) -> Any:
    if isinstance(ds, PackedDataset):
        return PackedDataset(ReferenceDataset(ds.rows, reference, schedule), ds.bins)
    return ReferenceDataset(ds, reference, schedule)
