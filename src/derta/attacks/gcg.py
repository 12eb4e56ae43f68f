"""GCG (Zou et al., 2023): greedy coordinate gradient search for an adversarial suffix.

A suffix of ``suffix_tokens`` tokens (initially ``init_token`` repeated, "! ! ! ..." as in the
paper; the token is looked up by string) is appended to the user turn. Each step:

1. the gradient of the target loss (mean cross-entropy of an affirmative target response, see
   :func:`derta.attacks.whitebox.affirmative_target`) with respect to the one-hot suffix;
2. per suffix position, the ``topk`` tokens with the most negative gradient, among printable,
   non-special tokens;
3. ``search_width`` candidates, each the current suffix with one random position set to one of
   that position's top-k tokens, scored in batches; the best becomes the current suffix.

The search stops when the loss drops below ``stop_loss`` or greedy decoding would write the whole
target (the model's argmax is the target token at every target position).

The prompt is rendered as generation renders it (:func:`derta.backends.hf.render_prompt`, the
backend's template), and a candidate counts only if the text it decodes to renders back to the
very same ids in the same place (``before + suffix + after``): the suffix optimised is the
suffix the model sees at generation. The returned prompt is the question plus the best suffix
found; ``metadata`` records the suffix (text and ids), the steps run, the loss before, after and
at every step, and why the search stopped.

Budget: the paper runs 500 steps with search width 512 and top-k 256 on a 7B model; the defaults
here (50 steps, width 64, top-k 256) are a small budget for evaluation sweeps. Measured: 0.25 s
per step at the defaults for the tests' tiny LLaMA (hidden 64, 2 layers, 1,000-token vocabulary)
on one CPU thread. White-box: the target must be an in-process HF backend (``hf:PATH``); any
other backend is an error. The search is deterministic for a seed (candidate sampling uses its
own generator, seeded per question).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from ..records import AttackPrompt, Message, Question
from .base import Attack, rng_for, user
from .whitebox import TARGET_SOURCES, WhiteBox, affirmative_target, mean_token_losses, white_box


def allowed_tokens(tokenizer: Any, n_rows: int) -> list[bool]:
    """Per embedding row: may a suffix use it (printable ASCII, not blank, not a special token)?
    Rows past the tokenizer's vocabulary (padding of the embedding matrix) are not allowed."""
    special = set(tokenizer.all_special_ids)
    out = []
    for i in range(min(n_rows, len(tokenizer))):
        text = tokenizer.decode([i], clean_up_tokenization_spaces=False)
        out.append(i not in special and bool(text.strip()) and text.isascii() and text.isprintable())
    return out + [False] * (n_rows - len(out))


@dataclasses.dataclass
class GCGAttack(Attack):
    name: ClassVar[str] = "gcg"
    target: Any = None  # an HF backend: the model under attack, white box
    steps: int = 50
    search_width: int = 64
    topk: int = 256
    suffix_tokens: int = 20
    init_token: str = "!"
    target_source: str = "affirmative"  # or "harmful_response"
    target_str: str | None = None  # one fixed target for every question (overrides target_source)
    target_tokens: int = 20  # harmful_response targets: their first N tokens
    stop_loss: float = 0.05
    batch_size: int = 64  # candidates per forward pass
    seed: int | None = 0

    def __post_init__(self) -> None:
        self._wb: WhiteBox | None = white_box(self.target)
        if self._wb is None:
            name = getattr(self.target, "name", type(self.target).__name__)
            raise ValueError(f"gcg needs the gradients of the target: an in-process HF backend (hf:PATH), got {name!r}")
        for f in ("steps", "search_width", "topk", "suffix_tokens", "batch_size"):
            if getattr(self, f) < 1:
                raise ValueError(f"gcg: {f} must be >= 1, got {getattr(self, f)}")
        if self.target_source not in TARGET_SOURCES:
            raise ValueError(f"gcg: unknown target_source {self.target_source!r} (have: {', '.join(TARGET_SOURCES)})")
        self._allowed: Any = None

    # -- layout ------------------------------------------------------------------------------------
    def _text(self, ids: list[int], anchor: list[int]) -> str:
        """The text of suffix ids as it reads after ``anchor`` (keeps a SentencePiece word-start space)."""
        tok = self._wb.tokenizer  # type: ignore[union-attr]
        head = tok.decode(anchor, clean_up_tokenization_spaces=False)
        full = tok.decode(anchor + ids, clean_up_tokenization_spaces=False)
        return full[len(head) :] if full.startswith(head) else tok.decode(ids, clean_up_tokenization_spaces=False)

    def _messages(self, question: str, sep: str, suffix: str) -> list[Message]:
        return user(question + sep + suffix)

    def _init_ids(self) -> list[int]:
        from ..tokens import single_token_id

        tok = self._wb.tokenizer  # type: ignore[union-attr]
        for form in (" " + self.init_token, self.init_token):  # the form it takes after a space first
            tid = single_token_id(tok, form)
            if tid is not None:
                return [tid] * self.suffix_tokens
        tid = tok.get_vocab().get(self.init_token)  # a vocabulary entry as stored (a SentencePiece piece without "▁")
        if tid is None:
            raise ValueError(f"gcg: init_token {self.init_token!r} is not a single token of this tokenizer; choose another")
        return [int(tid)] * self.suffix_tokens

    def _layout(self, question: str, init: list[int], anchor: list[int]) -> tuple[str, list[int], list[int]]:
        """(separator, ids before the suffix, ids after it) for the initial suffix."""
        text = self._text(init, anchor)
        sep = "" if text[:1].isspace() else " "
        ids, _ = self._wb.render(self._messages(question, sep, text))  # type: ignore[union-attr]
        n = len(init)
        at = next((i for i in range(len(ids) - n, -1, -1) if ids[i : i + n] == init), None)
        if at is None:
            raise ValueError(f"gcg: the initial suffix {text!r} does not tokenize back to {n} {self.init_token!r} tokens in the prompt; choose another init_token")
        return sep, ids[:at], ids[at + n :]

    # -- search ------------------------------------------------------------------------------------
    def _gradient(self, full: list[int], start: int, n: int, target_len: int) -> tuple[Any, float]:
        """d loss / d one-hot suffix [n, V] and the loss of the current suffix."""
        import torch

        wb = self._wb
        emb = wb.model.get_input_embeddings()  # type: ignore[union-attr]
        ids = torch.tensor([full], device=wb.model.device)  # type: ignore[union-attr]
        one_hot = torch.zeros(n, emb.weight.shape[0], device=emb.weight.device, dtype=emb.weight.dtype)
        one_hot[torch.arange(n), ids[0, start : start + n]] = 1
        one_hot.requires_grad_(True)
        embeds = emb(ids).detach()
        embeds = torch.cat([embeds[:, :start], (one_hot @ emb.weight)[None], embeds[:, start + n :]], dim=1)
        mask = torch.ones_like(ids)
        logits = wb.forward(ids, mask, keep=target_len + 1, embeds=embeds)[:, :-1]  # type: ignore[union-attr]
        loss = mean_token_losses(logits, ids[:, -target_len:])[0]
        (grad,) = torch.autograd.grad(loss, [one_hot])
        return grad, float(loss.detach())

    def _candidates(self, suffix: Any, grad: Any, gen: Any) -> Any:
        import torch

        grad = grad.float().clone()
        grad[:, ~self._allowed.to(grad.device)] = float("inf")
        top = (-grad).topk(min(self.topk, int(self._allowed.sum())), dim=1).indices.cpu()  # [n, k]
        n, k = top.shape
        pos = torch.randint(0, n, (self.search_width,), generator=gen)
        pick = torch.randint(0, k, (self.search_width,), generator=gen)
        cands = suffix.repeat(self.search_width, 1)
        cands[torch.arange(self.search_width), pos] = top[pos, pick]
        return torch.unique(cands, dim=0)  # sorted rows: the order does not depend on sampling ties

    def attack_one(self, question: Question) -> AttackPrompt:
        import torch

        wb = self._wb
        assert wb is not None
        if self._allowed is None:
            self._allowed = torch.tensor(allowed_tokens(wb.tokenizer, wb.model.get_input_embeddings().weight.shape[0]))
        target = self.target_str if self.target_str is not None else affirmative_target(question, self.target_source, wb.tokenizer, self.target_tokens)
        anchor = list(wb.tokenizer(question.text, add_special_tokens=False)["input_ids"])
        init = self._init_ids()
        sep, before, after = self._layout(question.text, init, anchor)
        _, target_ids = wb.encode(self._messages(question.text, sep, self._text(init, anchor)), target)
        gen = torch.Generator().manual_seed(rng_for(self.seed, "gcg", question.id).randrange(2**62))

        def fits(ids: list[int]) -> bool:  # the decoded suffix renders back to itself, in place
            rendered, _ = wb.render(self._messages(question.text, sep, self._text(ids, anchor)))
            return rendered == before + ids + after

        suffix = torch.tensor(init)
        losses: list[float] = []
        best = {"loss": float("inf"), "ids": init, "exact": False, "step": None}
        stopped, evaluated, skipped, steps_run = "steps", 0, 0, 0
        was_training = wb.model.training
        wb.model.eval()
        try:
            for step in range(self.steps):
                steps_run += 1
                grad, current = self._gradient(before + suffix.tolist() + after + target_ids, len(before), len(init), len(target_ids))
                if step == 0:
                    losses.append(current)  # the loss before any swap
                cands = [c for c in self._candidates(suffix, grad, gen).tolist() if c != suffix.tolist() and fits(c)]
                if not cands:  # no candidate survives the round trip: resample next step
                    skipped += 1
                    continue
                scores, exact = wb.row_losses([(before + c + after, target_ids) for c in cands], self.batch_size)
                evaluated += len(cands)
                i = min(range(len(cands)), key=lambda j: scores[j])
                suffix = torch.tensor(cands[i])
                losses.append(scores[i])
                if scores[i] < best["loss"] or exact[i]:  # a suffix that makes greedy write the target wins
                    best = {"loss": scores[i], "ids": cands[i], "exact": exact[i], "step": step}
                if exact[i]:
                    stopped = "match"
                    break
                if scores[i] < self.stop_loss:
                    stopped = "loss"
                    break
        finally:
            wb.model.train(was_training)
        text = self._text(best["ids"], anchor)
        meta = {
            "suffix": text, "suffix_ids": best["ids"], "init_suffix": self._text(init, anchor), "target": target,
            "initial_loss": losses[0], "final_loss": best["loss"] if best["step"] is not None else losses[0],
            "best_step": best["step"], "steps_run": steps_run, "losses": losses, "stopped": stopped,
            "success": bool(best["exact"]), "candidates_evaluated": evaluated, "skipped_steps": skipped,
        }
        return self.prompt(question, messages=self._messages(question.text, sep, text), metadata=meta)
