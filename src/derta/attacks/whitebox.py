"""White-box scores of a target model: the loss of a response given a conversation.

GCG (the gradient of this loss with respect to a suffix) and AutoDAN's paper fitness (its
negative) share it. A prompt is rendered exactly as :class:`derta.backends.hf.HFBackend` renders
it for generation (:func:`derta.backends.hf.render_prompt` with the backend's template), and the
response is tokenized as the segment the model writes next (the template's lead + the response),
so the loss is the loss of the very tokens greedy generation would have to produce::

    row:     [pad ...] prompt ids             | ids(lead + response)
    scored:                                     every response token, mean cross-entropy

Rows are left-padded (position ids counted over real tokens), so only the last positions need
logits (``logits_to_keep``) and a padded row scores as it would alone.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

from ..records import AttackPrompt, Message, Question

#: Where an affirmative target comes from: a "Sure, ..." sentence made from the question, or the
#: first ``target_tokens`` tokens of the question's ``harmful_response``.
TARGET_SOURCES = ("affirmative", "harmful_response")


def affirmative_target(question: Question, source: str = "affirmative", tokenizer: Any = None, n_tokens: int = 20) -> str:
    """The response a white-box attack makes likely.

    "affirmative": "Sure, " + the question rewritten as the start of its answer ("How can I pick a
    lock?" -> "Sure, I will explain how to pick a lock"), "Sure, here is a detailed answer" when no
    rewrite rule fits; "harmful_response": the first ``n_tokens`` tokens of the question's
    harmful response (a ValueError when it has none).
    """
    from .completion import LIST, STEPS, TEXT, rewrite_as_completion
    from .prefill import cut_tokens

    if source == "harmful_response":
        if not question.harmful_response.strip():
            raise ValueError(f"question {question.id!r} has no harmful_response to take the target from (target_source: harmful_response)")
        return cut_tokens(question.harmful_response.strip(), n_tokens, tokenizer)
    if source != "affirmative":
        raise ValueError(f"unknown target_source {source!r} (have: {', '.join(TARGET_SOURCES)})")
    rewrite = rewrite_as_completion(question.text)
    if not rewrite.clean:
        return "Sure, here is a detailed answer"
    head = rewrite.text
    for end in (STEPS, LIST, TEXT):
        head = head.removesuffix(end)
    return f"Sure, {head.strip()}"


def mean_token_losses(logits: Any, labels: Any, ignore_index: int = -100) -> Any:
    """Per-row mean cross-entropy. logits [B, T, V] (position t predicts labels[:, t]), labels [B, T]
    with ``ignore_index`` where nothing is scored -> [B] (float32)."""
    import torch.nn.functional as F

    per = F.cross_entropy(logits.float().transpose(1, 2), labels, ignore_index=ignore_index, reduction="none")  # [B, T]
    keep = (labels != ignore_index).float()
    return (per * keep).sum(-1) / keep.sum(-1).clamp(min=1.0)


@dataclass
class WhiteBox:
    """A causal LM with its tokenizer and the template generation renders prompts with."""

    model: Any
    tokenizer: Any
    template: str | None = None

    def render(self, messages: list[Message]) -> tuple[list[int], str]:
        """Prompt ids as generation sees them, and the lead the response segment starts with."""
        from ..backends.hf import render_prompt

        r = render_prompt(AttackPrompt(id="whitebox", question="", attack="whitebox", messages=list(messages)), self.tokenizer, self.template)
        return list(r.ids), r.lead

    def encode(self, messages: list[Message], response: str) -> tuple[list[int], list[int]]:
        """(prompt ids, response ids): the response tokenized as one segment after the prompt."""
        ids, lead = self.render(messages)
        target = list(self.tokenizer(lead + response, add_special_tokens=False)["input_ids"])
        if not target:
            raise ValueError("the target response is empty")
        return ids, target

    def losses(self, conversations: list[list[Message]], responses: list[str], batch_size: int = 16) -> list[float]:
        """Mean cross-entropy of each response given its conversation (lower: more likely)."""
        if len(conversations) != len(responses):
            raise ValueError(f"{len(conversations)} conversations but {len(responses)} responses")
        rows = [self.encode(c, r) for c, r in zip(conversations, responses)]
        return [float(x) for x in self.row_losses(rows, batch_size)[0]]

    def row_losses(self, rows: list[tuple[list[int], list[int]]], batch_size: int = 16) -> tuple[list[float], list[bool]]:
        """Loss of each (prompt ids, target ids) row, and whether greedy decoding would write the
        whole target (the argmax at every target position is the target token)."""
        import torch

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        losses: list[float] = []
        exact: list[bool] = []
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                for start in range(0, len(rows), batch_size):
                    lo, ex = self._batch(rows[start : start + batch_size])
                    losses += lo
                    exact += ex
        finally:
            self.model.train(was_training)
        return losses, exact

    def _batch(self, rows: list[tuple[list[int], list[int]]]) -> tuple[list[float], list[bool]]:
        import torch

        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        width = max(len(p) + len(t) for p, t in rows)
        keep = max(len(t) for _, t in rows) + 1
        ids = torch.full((len(rows), width), int(pad), dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        labels = torch.full((len(rows), keep - 1), -100, dtype=torch.long)
        for r, (p, t) in enumerate(rows):
            seq = p + t
            ids[r, width - len(seq) :] = torch.tensor(seq)
            mask[r, width - len(seq) :] = 1
            labels[r, keep - 1 - len(t) :] = torch.tensor(t)
        logits = self.forward(ids, mask, keep)[:, :-1]  # position j predicts token j + 1
        loss = mean_token_losses(logits, labels.to(logits.device))
        hit = (logits.argmax(-1) == labels.to(logits.device)) | (labels.to(logits.device) == -100)
        return loss.tolist(), hit.all(-1).tolist()

    def forward(self, ids: Any, mask: Any, keep: int = 0, embeds: Any = None) -> Any:
        """Logits of the last ``keep`` positions (all when 0) of left-padded rows."""
        device = self.model.device
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        kwargs: dict[str, Any] = {"attention_mask": mask.to(device), "position_ids": positions.to(device)}
        if keep and "logits_to_keep" in inspect.signature(self.model.forward).parameters:
            kwargs["logits_to_keep"] = keep
        if embeds is not None:
            kwargs["inputs_embeds"] = embeds
        else:
            kwargs["input_ids"] = ids.to(device)
        logits = self.model(**kwargs).logits
        return logits[:, -keep:] if keep else logits


def white_box(backend: Any) -> WhiteBox | None:
    """The model of an HF backend (``.model``, ``.tokenizer``, ``.template``), or None for a
    backend without weights in this process (vLLM, API models, fakes)."""
    model, tokenizer = getattr(backend, "model", None), getattr(backend, "tokenizer", None)
    try:
        import torch
    except ImportError:  # pragma: no cover - torch ships with derta's HF extra
        return None
    if not isinstance(model, torch.nn.Module) or tokenizer is None:
        return None
    return WhiteBox(model, tokenizer, getattr(backend, "template", None))
