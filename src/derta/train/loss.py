"""The training losses as plain functions: over logits, or over final hidden states and the LM head.

:func:`weighted_causal_lm_loss` scores every position of (B, T, V) logits;
:func:`chunked_weighted_causal_lm_loss` computes the same value from the model's final hidden
states, projecting only the trained positions through the LM head, ``chunk_size`` positions at a
time, each chunk recomputed in the backward pass (activation checkpointing): the float32 logits of
one chunk are the largest tensor of the loss, whatever B·T. DeRTa rows are mostly prompt and
harmful prefix, which carry no label.

:func:`constrained_causal_lm_loss` and :func:`chunked_constrained_causal_lm_loss` are the same two
ways of computing Qi et al.'s token-wise constrained loss (``objective: constrained``) from the
reference model's log-probs of the same labels.

Liger's fused linear cross-entropy (the ``liger-kernel`` extra, CUDA) would fuse the projection
and the cross-entropy further; it reads the LM head's weight directly, so it would silently skip a
LoRA adapter on the head, and it is not wired in here.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from ..records import IGNORE_INDEX


def _upcast(logits: torch.Tensor) -> torch.Tensor:
    """float32 logits (float64 ones stay float64: upcast, never down)."""
    return logits if logits.dtype == torch.float64 else logits.float()


def _num_items(num_items: torch.Tensor | int | None, labels: torch.Tensor, ignore_index: int, device: torch.device) -> torch.Tensor | int:
    if num_items is None:
        num_items = labels[:, 1:].ne(ignore_index).sum()
    if isinstance(num_items, torch.Tensor):
        return num_items.to(device).clamp(min=1)
    return max(int(num_items), 1)


def weighted_token_losses(
    logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None = None, ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """(B, T - 1) float32: w_{t+1} · CE(logits_t, labels_{t+1}), 0 where the label is ignored.

    The labels are shifted rather than the logits, so the (B, T, V) logits are upcast once and
    never copied into a (B, T - 1, V) slice.
    """
    targets = F.pad(labels[:, 1:], (0, 1), value=ignore_index)
    per_token = F.cross_entropy(_upcast(logits).flatten(0, 1), targets.flatten(), ignore_index=ignore_index, reduction="none")
    per_token = per_token.view(labels.shape)[:, :-1]
    if weights is not None:
        per_token = per_token * weights[:, 1:].to(per_token.dtype)
    return per_token


def weighted_causal_lm_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    weights: torch.Tensor | None = None,
    num_items: torch.Tensor | int | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """Σ_i w_i · CE(logits_{i-1}, labels_i) / N.

    Args:
        logits: (B, T, V) next-token logits, position t predicts token t + 1.
        labels: (B, T) token ids aligned with the inputs; ``ignore_index`` carries no loss. MLE
            positions hold the response token, RTO positions hold the refusal token id.
        weights: (B, T) per-position weights aligned with ``labels`` (1.0 for MLE, λ for RTO);
            None means 1.0 everywhere.
        num_items: N, the number of trained (non-ignored) positions in the WHOLE optimisation step
            (all gradient-accumulation micro-batches and devices). When None, the count of this
            micro-batch is used (a plain token mean).

    Dividing by the count of positions rather than by the sum of weights keeps λ a true multiplier
    of the RTO term, and dividing by the step-wide count makes the gradient independent of how the
    step is split into micro-batches. With λ = 1 this is the reference implementation's token mean.
    """
    per_token = weighted_token_losses(logits, labels, weights, ignore_index)
    return per_token.sum() / _num_items(num_items, labels, ignore_index, per_token.device)


def _chunk_loss(hidden: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor, lm_head: Any) -> torch.Tensor:
    per_token = F.cross_entropy(_upcast(lm_head(hidden)), targets, reduction="none")
    return (per_token * weights.to(per_token.dtype)).sum()


def chunked_weighted_causal_lm_loss(
    hidden: torch.Tensor,
    lm_head: Any,
    labels: torch.Tensor,
    weights: torch.Tensor | None = None,
    num_items: torch.Tensor | int | None = None,
    chunk_size: int = 1024,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """``weighted_causal_lm_loss(lm_head(hidden), labels, weights, num_items)`` without the (B, T, V) logits.

    Args:
        hidden: (B, T, H) final hidden states (the LM head's input), position t predicts token t + 1.
        lm_head: the output projection, called on (n, H) slices (a LoRA-adapted head keeps its adapter).
        labels, weights, num_items: as in :func:`weighted_causal_lm_loss` (same N).
        chunk_size: trained positions projected at a time; peak memory O(chunk_size · V).

    Positions whose label is ignored or whose weight is 0 add exactly 0 and are skipped.
    """
    targets = labels[:, 1:]
    keep = targets.ne(ignore_index)
    if weights is not None:
        w = weights[:, 1:]
        keep = keep & w.ne(0)
    device = next(lm_head.parameters()).device
    h = hidden[:, :-1][keep].to(device)  # (n, H)
    y = targets[keep].to(device)
    w = (weights[:, 1:][keep] if weights is not None else torch.ones(y.shape)).to(device=device, dtype=torch.float32)
    total = _chunk_loss(h[:0], y[:0], w[:0], lm_head)  # 0, still connected to the head and the model
    recompute = torch.is_grad_enabled()
    for s in range(0, h.size(0), chunk_size):
        part = (h[s : s + chunk_size], y[s : s + chunk_size], w[s : s + chunk_size], lm_head)
        total = total + (checkpoint(_chunk_loss, *part, use_reentrant=False, preserve_rng_state=False) if recompute else _chunk_loss(*part))
    return total / _num_items(num_items, labels, ignore_index, total.device)


def constrained_from_ce(ce: torch.Tensor, ref_logps: torch.Tensor, betas: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
    """Qi et al.'s per-token loss from the cross-entropy ``ce`` = −log π_θ(y_t | x, y_<t)::

        ℓ_t = −(2/β_t) · log σ(β_t · (log π_θ(y_t | ·) − log π_ref(y_t | ·))) = (2/β_t) · softplus(β_t · (ce_t + log π_ref(y_t | ·)))

    (Qi et al., "Safety alignment should be made more than just a few tokens deep", ICLR 2025,
    Eqn. 3; its gradient is 2·(1 − σ(β_t·Δ_t)) times the cross-entropy's, which is 1 at θ = ref).
    At θ = ref, ℓ_t = (2/β_t)·log 2; as β_t -> 0 it is the cross-entropy plus a constant; a large
    β_t stops rewarding a token once the policy puts more mass on it than the reference. All
    arguments have one shape; ``keep`` (bool) marks the trained positions, the others give 0.
    """
    ref, beta = ref_logps.to(ce.dtype), betas.to(ce.dtype)
    if keep is not None:  # untrained positions carry β = 0: keep their (discarded) value finite
        beta, ref = torch.where(keep, beta, torch.ones_like(beta)), torch.where(keep, ref, torch.zeros_like(ref))
    out = 2.0 / beta * F.softplus(beta * (ce + ref))
    return out if keep is None else torch.where(keep, out, torch.zeros_like(out))


def constrained_causal_lm_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    ref_logps: torch.Tensor,
    betas: torch.Tensor,
    weights: torch.Tensor | None = None,
    num_items: torch.Tensor | int | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """Σ_i w_i · ℓ_i / N, with ℓ_i of :func:`constrained_from_ce`.

    Args:
        logits, labels, weights, num_items: as in :func:`weighted_causal_lm_loss`.
        ref_logps: (B, T) log π_ref(labels_i | inputs_<i), aligned with ``labels`` (any value where
            the label is ignored).
        betas: (B, T) β_i aligned with ``labels`` (any value where the label is ignored).
    """
    ce = weighted_token_losses(logits, labels, None, ignore_index)
    per_token = constrained_from_ce(ce, ref_logps[:, 1:], betas[:, 1:], labels[:, 1:].ne(ignore_index))
    if weights is not None:
        per_token = per_token * weights[:, 1:].to(per_token.dtype)
    return per_token.sum() / _num_items(num_items, labels, ignore_index, per_token.device)


def _constrained_chunk_loss(hidden: torch.Tensor, targets: torch.Tensor, ref: torch.Tensor, beta: torch.Tensor, weights: torch.Tensor,
                            lm_head: Any) -> torch.Tensor:
    ce = F.cross_entropy(_upcast(lm_head(hidden)), targets, reduction="none")
    return (constrained_from_ce(ce, ref, beta) * weights.to(ce.dtype)).sum()


def chunked_constrained_causal_lm_loss(
    hidden: torch.Tensor,
    lm_head: Any,
    labels: torch.Tensor,
    ref_logps: torch.Tensor,
    betas: torch.Tensor,
    weights: torch.Tensor | None = None,
    num_items: torch.Tensor | int | None = None,
    chunk_size: int = 1024,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """``constrained_causal_lm_loss(lm_head(hidden), ...)`` without the (B, T, V) logits, as
    :func:`chunked_weighted_causal_lm_loss` computes the cross-entropy (same arguments, plus
    ``ref_logps`` and ``betas`` of :func:`constrained_causal_lm_loss`)."""
    targets = labels[:, 1:]
    keep = targets.ne(ignore_index)
    if weights is not None:
        keep = keep & weights[:, 1:].ne(0)
    device = next(lm_head.parameters()).device
    h = hidden[:, :-1][keep].to(device)  # (n, H)
    y = targets[keep].to(device)
    ref, beta = (t[:, 1:][keep].to(device=device, dtype=torch.float32) for t in (ref_logps, betas))
    w = (weights[:, 1:][keep] if weights is not None else torch.ones(y.shape)).to(device=device, dtype=torch.float32)
    total = _constrained_chunk_loss(h[:0], y[:0], ref[:0], beta[:0], w[:0], lm_head)  # 0, still connected to the model
    recompute = torch.is_grad_enabled()
    for s in range(0, h.size(0), chunk_size):
        part = (h[s : s + chunk_size], y[s : s + chunk_size], ref[s : s + chunk_size], beta[s : s + chunk_size], w[s : s + chunk_size], lm_head)
        total = total + (checkpoint(_constrained_chunk_loss, *part, use_reentrant=False, preserve_rng_state=False) if recompute else _constrained_chunk_loss(*part))
    return total / _num_items(num_items, labels, ignore_index, total.device)
