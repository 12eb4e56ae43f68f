"""Stage 2 of data building: TrainingExample -> input_ids / labels / loss_weights (tokenizer).

Layout of one sequence (``|`` = segment boundary, each segment tokenized on its own)::

    [bos] prompt | lead + harmful_prefix[:k] | (" " if k) + target | end

A row longer than ``max_length`` loses harmful-prefix tokens first (k shrinks), so the safe target
is kept; only a prompt + target that alone exceed ``max_length`` are cut at the end, as the
reference implementation cuts (its tokenizer truncates on the right): an RTO row keeps the first
positions of h, and a prompt of ``max_length`` tokens or more leaves no trained token.
``Rendered.cut`` counts the tokens cut at the end; :func:`derta.train.objective.truncation_stats`
reports the rows cut and the rows left with no trained token.
    labels:   IGNORE ...        IGNORE ...        target ids          end ids      (objective "mle")
    labels:   IGNORE ...        refusal id at every position of h              (objective "rto")

``labels`` are aligned with ``input_ids`` (the model shifts them); ``loss_weights`` is 1.0 on MLE
positions, ``rto_weight`` on RTO positions and 0.0 where the label is ignored.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import torch

from ..records import IGNORE_INDEX, TrainingExample
from ..templates import Turn, get_template
from .recipes import sample_k


@dataclass
class Rendered:
    input_ids: list[int]
    labels: list[int]
    loss_weights: list[float]
    cut: int = 0  # tokens cut at the end to fit max_length (0: the row fits)


def _ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []


def cut_words(text: str, k: int) -> str:
    """The first k space-separated words (the reference's ``" ".join(words[:k])``)."""
    return " ".join(text.split(" ")[:k]) if k > 0 else ""


class Renderer:
    """Tokenizes TrainingExamples into training rows.

    rto_keep: share of RTO positions that keep their label (the reference drops 95% for full
    fine-tuning: 0.05; 1.0 keeps all). rto_weight: λ, the weight of each RTO position.
    rto_row_weight: when set (per-sequence normalisation), the kept RTO positions of one row share
    this total weight (times λ) instead of weighing 1 each, so a row with hundreds of harmful
    tokens counts as much as one MLE row of ``rto_row_weight`` positions.
    """

    def __init__(
        self,
        tokenizer: Any,
        refusal_id: int,
        template: str = "chat",
        max_length: int = 1024,
        rto_weight: float = 1.0,
        rto_keep: float = 1.0,
        rto_row_weight: float | None = None,
    ):
        if not 0.0 < rto_keep <= 1.0:
            raise ValueError(f"rto_keep must be in (0, 1], got {rto_keep}")
        if rto_weight < 0:
            raise ValueError(f"rto_weight must be >= 0, got {rto_weight}")
        self.tokenizer = tokenizer
        self.refusal_id = refusal_id
        self.template_name = template
        self.template = get_template(template)
        self._templates = {template: self.template}
        self.max_length = max_length
        self.rto_weight = rto_weight
        self.rto_keep = rto_keep
        if rto_row_weight is not None and rto_row_weight <= 0:
            raise ValueError(f"rto_row_weight must be > 0, got {rto_row_weight}")
        self.rto_row_weight = rto_row_weight
        # A row is rendered again every epoch (its harmful-prefix cut is resampled), but its chat
        # template and the token ids of each text piece never change: both are computed once.
        self._turns: dict[tuple[str, tuple[Any, ...]], Turn] = {}
        self._texts: dict[str, tuple[int, ...]] = {}

    def turn(self, example: TrainingExample) -> Turn:
        # An example may name its own template (e.g. raw documents mixed with chat data).
        name = example.metadata.get("template") or self.template_name
        key = (name, tuple(example.messages))
        if key not in self._turns:
            if name not in self._templates:
                self._templates[name] = get_template(name)
            self._turns[key] = self._templates[name](example.messages, self.tokenizer)
        return self._turns[key]

    def ids(self, text: str) -> list[int]:
        """``text``'s token ids (no special tokens), memoised."""
        if text not in self._texts:
            self._texts[text] = tuple(_ids(self.tokenizer, text))
        return list(self._texts[text])

    def prompt_ids(self, turn: Turn) -> list[int]:
        bos = self.tokenizer.bos_token_id
        head = [bos] if turn.add_bos and bos is not None else []
        return head + self.ids(turn.prompt)

    def __call__(self, example: TrainingExample, rng: random.Random | None = None) -> Rendered:
        rng = rng or random.Random(0)
        turn = self.turn(example)
        prompt = self.prompt_ids(turn)
        if example.objective == "rto":
            harmful = self.ids(turn.lead + example.target)
            kept = [rng.random() < self.rto_keep for _ in harmful] if self.rto_keep < 1.0 else [True] * len(harmful)
            labels = [self.refusal_id if keep else IGNORE_INDEX for keep in kept]
            n_kept = sum(kept[: max(0, self.max_length - len(prompt))])
            per = self.rto_weight if self.rto_row_weight is None else self.rto_weight * self.rto_row_weight / max(1, n_kept)
            weights = [per if keep else 0.0 for keep in kept]
            return self._truncate(prompt + harmful, [IGNORE_INDEX] * len(prompt) + labels, [0.0] * len(prompt) + weights)

        context: list[int] = []
        joiner = turn.lead
        hp = example.harmful_prefix
        if hp is not None:
            if hp.unit == "tokens":
                h_ids = self.ids(turn.lead + hp.text)
                k = hp.k if hp.k is not None else sample_k(len(h_ids), hp.zero_share, "tokens", rng)
                context = h_ids[: min(k, len(h_ids))]
            else:
                words = hp.text.split(" ")
                k = hp.k if hp.k is not None else sample_k(len(words), hp.zero_share, "words", rng)
                text = cut_words(hp.text, k)
                context = _ids(self.tokenizer, turn.lead + text) if text else []  # one per cut: not memoised
            if context:
                joiner = " "
        target = self.ids(joiner + example.target) + self.ids(turn.end)
        over = len(prompt) + len(context) + len(target) - self.max_length
        if over > 0 and context:
            # a long harmful prefix gives way to the safe target: the row still teaches the refusal
            context = context[: max(0, len(context) - over)]
            if not context:
                target = self.ids(turn.lead + example.target) + self.ids(turn.end)
        ids = prompt + context + target
        n_ctx = len(prompt) + len(context)
        return self._truncate(ids, [IGNORE_INDEX] * n_ctx + target, [0.0] * n_ctx + [1.0] * len(target))

    def _truncate(self, ids: list[int], labels: list[int], weights: list[float]) -> Rendered:
        n = self.max_length
        return Rendered(ids[:n], labels[:n], weights[:n], cut=max(0, len(ids) - n))


class RenderedDataset(torch.utils.data.Dataset):
    """Renders on the fly; the harmful-prefix cut k is resampled every epoch.

    The randomness of row i in epoch e depends only on (seed, e, i), so a resumed run sees exactly
    the rows it would have seen. ``set_epoch`` is called by :class:`derta.train.trainer.EpochCallback`.
    """

    def __init__(self, examples: list[TrainingExample], renderer: Renderer, seed: int = 0):
        self.examples = examples
        self.renderer = renderer
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> dict[str, list]:
        rng = random.Random(f"{self.seed}/{self.epoch}/{i}")
        r = self.renderer(self.examples[i], rng)
        return {"input_ids": r.input_ids, "labels": r.labels, "loss_weights": r.loss_weights}
