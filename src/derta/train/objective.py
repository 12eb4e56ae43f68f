"""What the DeRTa objective will actually train, measured before training starts.

Each RTO row labels EVERY position of a harmful response with the refusal token: a few hundred
targets per row, against one short answer per MLE row. The paper mixed ~60K helpful rows with 3K
triples, so RTO targets were a few % of the trained positions; with a 1:1 mix they are the
majority, the cheapest way to lower the loss is to say the refusal token everywhere, and the
model answers every prompt with "SorrySorrySorry…". :func:`objective_stats` counts the trained
positions and weights of each objective on (a sample of) the rendered rows;
:func:`plan_objective` turns that into the RTO normalisation (``rto_norm``), with warnings that name
the numbers:

- ``token``: each RTO position weighs λ (the paper);
- ``sequence``: the kept RTO positions of one row share λ × the mean length of the safe responses
  (the MLE rows of the safety data; of all MLE rows when there are none), so the RTO term and the
  refusal it transitions to carry the same total weight: RTO teaches where to switch, the safe
  rows teach what to say after the switch, and neither drowns the other (with token-level RTO on
  a small budget, the transition token is learned ~3× more often than its continuation and the
  model loops on it: "Unfortunately, Unfortunately, …");
- ``auto`` (default): ``token`` unless RTO would be more than ``rto_max_share`` (25%) of the
  trained positions, then ``sequence``. Measured on SmolLM2-135M-Instruct with LoRA (24 steps of 8
  rows, 34% RTO positions): token-level RTO left 29% of the responses degenerate and cut exact
  answers from 63% to 43%; per-sequence RTO left 10% degenerate and answers at 63%.

It also checks that the refusal token is how the safe responses start after a harmful prefix:
RTO teaches the transition token, the harmful-prefix rows teach what follows it, and the two must
meet (with a byte-level BPE where " Sorry" is two tokens, the bare "Sorry" target would be glued
to the previous word and never continued by a refusal sentence).
"""

from __future__ import annotations

import logging
import random
from typing import Any

from ..data.render import CutTally
from ..records import IGNORE_INDEX

log = logging.getLogger(__name__)

#: Rows rendered to estimate the shares (a seeded sample; the estimate is exact below this size).
SAMPLE_ROWS = 2000


def objective_stats(renderer: Any, examples: list[Any], seed: int = 0, sample: int = SAMPLE_ROWS) -> dict[str, Any]:
    """Trained positions and weights per objective over the rendered rows (epoch 0's cuts)."""
    idx = list(range(len(examples)))
    if len(idx) > sample:
        idx = sorted(random.Random(seed).sample(idx, sample))
    pos = {"mle": 0, "rto": 0}
    weight = {"mle": 0.0, "rto": 0.0}
    rows = {"mle": 0, "rto": 0}
    safe_rows = safe_pos = 0
    truncated = empty = 0
    prefixed = starts_with_refusal = 0
    for i in idx:
        ex = examples[i]
        obj = "rto" if ex.objective == "rto" else "mle"
        r = renderer(ex, random.Random(f"{seed}/0/{i}"))
        trained = [(lab, w) for lab, w in zip(r.labels[1:], r.loss_weights[1:]) if lab != IGNORE_INDEX and w > 0]
        rows[obj] += 1
        pos[obj] += len(trained)
        weight[obj] += sum(w for _, w in trained)
        empty += not trained
        if obj == "mle" and ex.source == "safety":
            safe_rows += 1
            safe_pos += len(trained)
        truncated += r.cut > 0
        hp = getattr(ex, "harmful_prefix", None)
        if obj == "mle" and ex.source == "safety" and hp is not None:
            # the first trained token after a non-empty harmful prefix: the refusal should start here
            first = next((lab for lab in r.labels if lab != IGNORE_INDEX), None)
            context = len(r.labels) - sum(lab != IGNORE_INDEX for lab in r.labels) - len(renderer.prompt_ids(renderer.turn(ex))) + r.cut_query
            if context > 0 and first is not None:
                prefixed += 1
                starts_with_refusal += first == renderer.refusal_id
    n_pos = pos["mle"] + pos["rto"]
    n_w = weight["mle"] + weight["rto"]
    return {
        "rows": rows, "sampled_rows": len(idx), "total_rows": len(examples),
        "positions": pos, "weights": {k: round(v, 3) for k, v in weight.items()},
        "rto_share": pos["rto"] / n_pos if n_pos else 0.0,
        "rto_weight_share": weight["rto"] / n_w if n_w else 0.0,
        "mle_positions_per_row": pos["mle"] / rows["mle"] if rows["mle"] else 0.0,
        "safe_positions_per_row": safe_pos / safe_rows if safe_rows else 0.0,
        "truncated_rows": truncated, "rows_without_trained_positions": empty,
        "prefixed_safe_rows": prefixed,
        "prefixed_safe_rows_starting_with_refusal_token": starts_with_refusal,
    }


def plan_objective(renderer: Any, examples: list[Any], rto_norm: str = "auto", rto_max_share: float = 0.25, seed: int = 0) -> dict[str, Any]:
    """Choose the RTO normalisation, set it on ``renderer`` and return the measured stats.

    The returned dict is what the run record stores under ``objective``: the shares before and
    after normalisation, the chosen ``rto_norm`` and the warnings that were logged.
    """
    stats = objective_stats(renderer, examples, seed)
    warnings: list[str] = []
    share = stats["rto_share"]
    chosen = rto_norm
    if rto_norm == "auto":
        chosen = "sequence" if share > rto_max_share else "token"
    if share > rto_max_share:
        msg = (f"RTO targets are {100 * share:.0f}% of the trained positions ({stats['positions']['rto']} RTO vs "
               f"{stats['positions']['mle']} MLE in {stats['sampled_rows']} rows; the paper's mix of 60K helpful rows and "
               "3K triples had a few %): RTO may dominate the loss, and the model may answer everything with the refusal token or loop on it. ")
        if chosen == "sequence":
            unit = stats["safe_positions_per_row"] or stats["mle_positions_per_row"]
            msg += (f"Normalising RTO per sequence: each RTO row weighs as much as an average safe response ({unit:.0f} positions). "
                    "Set rto_norm: token to train the paper's token-level term instead.")
        else:
            msg += "Consider rto_norm: sequence (or auto), more helpful data, or a lower rto_keep / rto_weight."
        warnings.append(msg)
    before = dict(stats)
    if chosen == "sequence" and stats["rows"]["rto"]:
        renderer.rto_row_weight = max(1.0, stats["safe_positions_per_row"] or stats["mle_positions_per_row"])
        stats = objective_stats(renderer, examples, seed)
    p, s = stats["prefixed_safe_rows"], stats["prefixed_safe_rows_starting_with_refusal_token"]
    if stats["rows"]["rto"] and p and s < 0.5 * p:
        tok = renderer.tokenizer.convert_ids_to_tokens(renderer.refusal_id)
        warnings.append(f"the RTO target {tok!r} starts only {s} of the {p} safe responses that follow a harmful prefix: RTO would "
                        "teach a transition token that no refusal sentence continues. Start the safe responses with the refusal "
                        "word (leading-space form a single token), or pick --refusal-word / --refusal-token to match them "
                        "(derta.tokens.choose_refusal_word lists candidates).")
    if stats["rows_without_trained_positions"]:
        warnings.append(f"{stats['rows_without_trained_positions']} of {stats['sampled_rows']} rows have no trained position "
                        f"left after truncation to {renderer.max_length} tokens: raise max_length")
    for w in warnings:
        log.warning(w)
    return {"rto_norm": chosen, "rto_norm_requested": rto_norm, "rto_max_share": rto_max_share,
            "rto_row_weight": renderer.rto_row_weight, "before": before, "after": stats, "warnings": warnings}


def truncation_stats(renderer: Any, examples: list[Any], seed: int = 0) -> dict[str, Any]:
    """Rows cut to ``max_length`` and rows left with no trained position, over EVERY row (epoch 0).

    Whether a row keeps a trained position does not depend on the epoch's harmful-prefix cut (the
    prefix gives way before the target), so epoch 0 speaks for the run. ``rows_cut_untrained``
    are the rows that had trained positions before the cut and none after it.
    """
    cut = cut_untrained = untrained = 0
    examples_cut: list[str] = []
    tally = CutTally()
    for i, ex in enumerate(examples):
        r = renderer(ex, random.Random(f"{seed}/0/{i}"))
        tally.add(r)
        trained = any(lab != IGNORE_INDEX and w > 0 for lab, w in zip(r.labels[1:], r.loss_weights[1:]))
        untrained += not trained
        if r.cut:
            cut += 1
            cut_untrained += not trained
            if len(examples_cut) < 5:
                examples_cut.append(ex.id or f"row {i + 1}")
    return {"max_length": renderer.max_length, "rows": len(examples), "rows_cut": cut, "rows_cut_untrained": cut_untrained,
            "rows_untrained": untrained, "rows_trained": len(examples) - untrained, "first_cut_ids": examples_cut, **tally.record()}


def check_truncation(stats: dict[str, Any]) -> None:
    """Log a warning when rows were cut; a ValueError when no row keeps a trained position."""
    n, m = stats["rows"], stats["max_length"]
    if n and not stats["rows_trained"]:
        raise ValueError(f"no row keeps a trained token at max_length {m}: {stats['rows_cut']} of {n} rows are cut to {m} tokens "
                         f"and {stats['rows_untrained']} of {n} have no trained token left; raise max_length")
    if stats["rows_cut"]:
        log.warning("%d of %d rows are longer than max_length %d and were cut (the middle of the query first, then the end of the target; %d of them lost every trained token; "
                    "first: %s); raise max_length to train them whole", stats["rows_cut"], n, m, stats["rows_cut_untrained"],
                    ", ".join(stats["first_cut_ids"]))
