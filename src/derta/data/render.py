"""Stage 2 of data building: TrainingExample -> input_ids / labels / loss_weights (tokenizer).

Layout of one sequence (``|`` = segment boundary, each segment tokenized on its own)::

    [bos] prompt | lead + harmful_prefix[:k] | (" " if k) + target | end

    labels:   IGNORE ...        IGNORE ...        target ids          end ids      (objective "mle")
    labels:   IGNORE ...        refusal id at every position of h              (objective "rto")

``labels`` are aligned with ``input_ids`` (the model shifts them); ``loss_weights`` is 1.0 on MLE
positions, ``rto_weight`` on RTO positions and 0.0 where the label is ignored.

A row longer than ``max_length`` gives way in this order, and never loses its trained target
while anything else can go (a row that fits is rendered exactly as it would be without a limit):

1. the harmful prefix keeps its start and loses its end (k shrinks: h_<k is a random-length prefix
   anyway, so a shorter one is still a valid example);
2. the query loses tokens from its middle (its start and its end stay, and so do the template's
   markers around it), but only as many as the target needs: min(its length, half of
   ``max_length``) target tokens must fit, so a long answer keeps its question;
3. then the target is cut at its end (an RTO row: the end of h).

``Rendered`` counts what each step removed (``cut_prefix``, ``cut_query``, ``cut_target``; ``cut``
is query + target tokens); :class:`CutTally` sums them over rows for the run record.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
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
    cut: int = 0  # query + target tokens removed to fit max_length (0: the row fits, maybe with a shorter prefix)
    cut_prefix: int = 0  # harmful-prefix tokens given up (k shrank)
    cut_query: int = 0  # tokens taken from the middle of the query
    cut_target: int = 0  # tokens cut from the end of the target (the end of h for RTO)


class CutTally:
    """Rows and tokens that truncation to ``max_length`` removed, summed over rendered rows."""

    KEYS = ("prefix", "query", "target")

    def __init__(self) -> None:
        self.rows = {k: 0 for k in self.KEYS}
        self.tokens = {k: 0 for k in self.KEYS}
        self.max_cut = 0

    def add(self, r: Rendered) -> None:
        for k in self.KEYS:
            n = getattr(r, f"cut_{k}")
            self.rows[k] += n > 0
            self.tokens[k] += n
        self.max_cut = max(self.max_cut, r.cut)

    def record(self) -> dict[str, Any]:
        """``rows_cut_by`` / ``tokens_cut_by``: per part (prefix, query, target); ``max_tokens_cut``:
        the most query + target tokens one row lost."""
        return {"rows_cut_by": dict(self.rows), "tokens_cut_by": dict(self.tokens), "max_tokens_cut": self.max_cut}


def _ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []


def adds_bos(tokenizer: Any) -> bool:
    """Whether ``tokenizer(text)`` puts its BOS in front of the text on its own."""
    bos = tokenizer.bos_token_id
    if bos is None:
        return False
    return tokenizer("a")["input_ids"][:1] == [bos] and tokenizer("a", add_special_tokens=False)["input_ids"][:1] != [bos]


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
        truncate_query: bool = True,
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
        self.truncate_query = truncate_query  # False: the query never gives way (the prefix, then the target's end)
        self.rto_weight = rto_weight
        self.rto_keep = rto_keep
        if rto_row_weight is not None and rto_row_weight <= 0:
            raise ValueError(f"rto_row_weight must be > 0, got {rto_row_weight}")
        self.rto_row_weight = rto_row_weight
        # A row is rendered again every epoch (its harmful-prefix cut is resampled), but its chat
        # template and the token ids of each text piece never change: both are computed once.
        self._turns: dict[tuple[str, tuple[Any, ...]], Turn] = {}
        self._texts: dict[str, tuple[int, ...]] = {}
        self._spans: dict[str, tuple[int, int]] = {}  # where the query sits in a prompt's ids (rows that must be cut)
        self._ends: dict[str, str] = {}  # a chat template's end of turn, without a trailing header (closed_turn)

    def turn(self, example: TrainingExample) -> Turn:
        # An example may name its own template (e.g. raw documents mixed with chat data).
        name = example.metadata.get("template") or self.template_name
        key = (name, tuple(example.messages))
        if key not in self._turns:
            if name not in self._templates:
                self._templates[name] = get_template(name)
            turn = self._templates[name](example.messages, self.tokenizer)
            self._turns[key] = closed_turn(turn, self.tokenizer, self._ends) if name == "chat" else turn
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
            prompt, n_target, cut_query, cut_target = self._fit(example, turn, prompt, [], len(harmful))
            kept = kept[:n_target]
            labels = [self.refusal_id if keep else IGNORE_INDEX for keep in kept]
            per = self.rto_weight if self.rto_row_weight is None else self.rto_weight * self.rto_row_weight / max(1, sum(kept))
            weights = [per if keep else 0.0 for keep in kept]
            return self._row(prompt, [], harmful[:n_target], labels, weights, 0, cut_query, cut_target)

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
        cut_prefix = 0
        if over > 0 and context:
            # a long harmful prefix gives way to the safe target: the row still teaches the refusal
            cut_prefix = min(over, len(context))
            context = context[: len(context) - cut_prefix]
            if not context:
                target = self.ids(turn.lead + example.target) + self.ids(turn.end)
        prompt, n_target, cut_query, cut_target = self._fit(example, turn, prompt, context, len(target))
        target = target[:n_target]
        return self._row(prompt, context, target, target, [1.0] * len(target), cut_prefix, cut_query, cut_target)

    def _fit(self, example: TrainingExample, turn: Turn, prompt: list[int], context: list[int], n_target: int) -> tuple[list[int], int, int, int]:
        """``(prompt, n_target, cut_query, cut_target)``: the prompt with tokens taken from the middle
        of its query, then the target's length, so that the row fits ``max_length``."""
        over = len(prompt) + len(context) + n_target - self.max_length
        if over <= 0:
            return prompt, n_target, 0, 0
        start, end = self.query_span(example, turn)
        if turn.add_bos and self.tokenizer.bos_token_id is not None:
            start, end = start + 1, end + 1
        # the query gives way only as far as the target needs: min(its length, half of max_length)
        # target tokens must fit; beyond that the target's end is cut, so a long answer keeps its question
        must_keep = min(n_target, max(1, self.max_length // 2))
        cut_query = max(0, min(len(prompt) + len(context) + must_keep - self.max_length, end - start)) if self.truncate_query else 0
        if cut_query:
            keep = end - start - cut_query
            left = (keep + 1) // 2
            prompt = prompt[: start + left] + prompt[end - (keep - left):]
        cut_target = min(n_target, over - cut_query)
        return prompt, n_target - cut_target, cut_query, cut_target

    def query_span(self, example: TrainingExample, turn: Turn) -> tuple[int, int]:
        """``[start, end)`` of the query's tokens within ``self.ids(turn.prompt)``: the tokens of the
        last user message. Without character offsets (a slow tokenizer), or when the template
        rewrote the message, the whole prompt counts as the query."""
        if turn.prompt not in self._spans:
            self._spans[turn.prompt] = _query_span(self.tokenizer, turn.prompt, example.messages, len(self.ids(turn.prompt)))
        return self._spans[turn.prompt]

    def _row(self, prompt: list[int], context: list[int], inputs: list[int], labels: list[int], weights: list[float],
             cut_prefix: int, cut_query: int, cut_target: int) -> Rendered:
        n_ctx = len(prompt) + len(context)
        ids, labels, weights = prompt + context + inputs, [IGNORE_INDEX] * n_ctx + labels, [0.0] * n_ctx + weights
        n = self.max_length
        over = max(0, len(ids) - n)  # a template whose markers alone exceed max_length: cut at the end
        return Rendered(ids[:n], labels[:n], weights[:n], cut=cut_query + cut_target + over, cut_prefix=cut_prefix,
                        cut_query=cut_query, cut_target=cut_target + over)


def _query_span(tokenizer: Any, prompt: str, messages: list[Any], n_ids: int) -> tuple[int, int]:
    users = [m.content for m in messages if m.role == "user"]
    query = users[-1].strip() if users else ""
    at = prompt.rfind(query) if query else -1
    if at < 0 or not getattr(tokenizer, "is_fast", False):
        return 0, n_ids
    offsets = tokenizer(prompt, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    inside = [i for i, (a, b) in enumerate(offsets) if a >= at and b <= at + len(query) and b > a]
    if not inside or len(offsets) != n_ids:
        return 0, n_ids
    return inside[0], inside[-1] + 1


_ANSWER, _NEXT = "\x00DERTA_ANSWER\x00", "\x00DERTA_NEXT\x00"


def closed_turn(turn: Turn, tokenizer: Any, cache: dict[str, str] | None = None) -> Turn:
    """``turn`` whose ``end`` stops where the assistant's turn closes.

    Some chat templates write the next assistant header after every conversation, whatever
    ``add_generation_prompt`` says (the first Llama-3-Instruct template ends with
    ``{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}``): the end read after an answer
    is then ``<|eot_id|>`` plus a header the model would learn to write after each answer. The end
    is kept when it is how an answer closes mid-conversation (the text between an answer and the
    next user message starts with it); otherwise it is cut at the first token boundary after which
    the rest is the generation prompt's header, the text between the close and the next user message
    is the header that opens a user turn, and the prompt ends with the rest. ``cache``: ends
    already resolved (the fix depends on the template only).
    """
    if cache is not None and turn.end in cache:
        return replace(turn, end=cache[turn.end])
    end = _closed_end(turn, tokenizer)
    if cache is not None:
        cache[turn.end] = end
    return replace(turn, end=end)


def _closed_end(turn: Turn, tokenizer: Any) -> str:
    end = turn.end
    try:
        mid = tokenizer.apply_chat_template([{"role": "user", "content": _NEXT}, {"role": "assistant", "content": _ANSWER},
                                             {"role": "user", "content": _NEXT}], tokenize=False)
        first = tokenizer.apply_chat_template([{"role": "user", "content": _NEXT}], tokenize=False)
    except Exception:  # a template that takes no such conversation: keep what it wrote
        return end
    between = mid.partition(_ANSWER)[2].partition(_NEXT)[0]
    if not between or between.startswith(end):
        return end
    opens_user = first.partition(_NEXT)[0]
    shared = next((i for i, (a, b) in enumerate(zip(end, between)) if a != b), min(len(end), len(between)))
    whole = _ids(tokenizer, end)
    for i in range(1, shared + 1):
        if opens_user.endswith(between[i:]) and turn.prompt.endswith(end[i:]) and _ids(tokenizer, end[:i]) + _ids(tokenizer, end[i:]) == whole:
            return end[:i]
    return end


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
