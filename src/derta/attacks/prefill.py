"""The prefilling attack (Qi et al., 2024): the assistant turn starts with N harmful tokens.

The question is the user turn; the first N tokens of ``Question.harmful_response`` are placed at the
start of the assistant turn (``AttackPrompt.prefill``), and the model continues from there. ASR as
a function of N (5, 10, 20, 40, or hundreds of tokens deep) shows how deep a model's safety goes.
N counts tokens of the tokenizer given (the target model's, ideally), or whitespace-separated words
when none is given. The cut is taken from the original text, so spacing and newlines inside the
prefix are kept. A harmful response shorter than N is prefilled whole, and
``metadata["prefill_tokens"]`` records the depth actually used.

Any other attack takes the same prefix on top of its own prompt with ``prefill=N``
(:func:`derta.attacks.base.with_prefill`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from ..records import AttackPrompt, Question
from .base import Attack, missing_harmful, prefix_of, tokenizer_name, user

DEFAULT_SWEEP = (5, 10, 20, 40)


def cut_tokens(text: str, n: int, tokenizer: Any = None) -> str:
    """The first ``n`` tokens of ``text`` (whitespace words when ``tokenizer`` is None)."""
    return prefix_of(text, n, tokenizer)[0]


@dataclasses.dataclass
class PrefillAttack(Attack):
    """Prefill the assistant turn with the first ``n`` tokens of the question's harmful response."""

    name: ClassVar[str] = "prefill"
    prefills: ClassVar[bool] = True
    n: int = 10
    tokenizer: Any = None  # the target model's tokenizer; None counts whitespace words

    @property
    def label(self) -> str:
        return f"prefill-{self.n}"

    def params(self) -> dict[str, Any]:
        unit = "words" if self.tokenizer is None else "tokens"
        return {"n": self.n, "unit": unit, "tokenizer": tokenizer_name(self.tokenizer)}

    def __call__(self, questions: list[Question]) -> list[AttackPrompt]:
        missing_harmful(questions, "the prefill attack")
        return super().__call__(questions)

    def attack_one(self, question: Question) -> AttackPrompt:
        prefix, used = prefix_of(question.harmful_response, self.n, self.tokenizer)
        return self.prompt(question, messages=user(question.text), prefill=prefix, metadata={"prefill_tokens": used})


def expand_sweep(name: str = "prefill", values: tuple[int, ...] | list[int] = DEFAULT_SWEEP) -> list[str]:
    """``expand_sweep("prefill", [5, 10])`` -> ``["prefill-5", "prefill-10"]`` (names for make_attack)."""
    return [f"{name}-{v}" for v in values]
