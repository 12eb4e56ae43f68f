"""What every attack shares: the factory contract and the model-facing protocols.

An attack is a small callable object: ``attack(questions) -> prompts``. It records its name, its
parameters and its seed in every :class:`AttackPrompt` it makes, so a prompt file says exactly how
it was produced. Attacks that need models (PAIR, AutoDAN) drive them only through the ``Backend``
protocol of ``derta.backends.base`` (``generate(prompts, decoding) -> texts``) and a scorer
callable, so a scripted fake model can stand in for any of them.

Two parameters every attack takes (keyword only; at their defaults they change nothing, and they
stay out of ``params()``):

- ``prefill=N``: after the attack builds its prompt, the assistant turn starts with the first N
  tokens of the question's ``harmful_response`` (:func:`with_prefill`; tokens of
  ``prefill_tokenizer``, the target model's, or whitespace words without one). The label becomes
  ``LABEL+prefill-N`` (``jailbreakchat+prefill-20``): a jailbreak template and a prefilled
  assistant turn at once. A raw-text prompt (CompletingAttack, no chat template) gets the prefix
  appended to its text: backends feed ``text + prefill``.
- ``samples=k``: k copies of each prompt, ids ``ID#0`` .. ``ID#k-1`` and ``metadata["sample"]``, so a
  sampling decoding (temperature > 0) draws k continuations per prompt (the course-correction
  rate of :mod:`derta.analysis.course_correction`).
"""

from __future__ import annotations

import dataclasses
import random
import re
from typing import Any, Callable, ClassVar

from ..records import AttackPrompt, Message, Question

#: ``scorer(question, prompt, response) -> score``; higher means closer to a jailbreak.
Scorer = Callable[[str, str, str], float]
#: Parameters of the base class that ``params()`` leaves out (the prompt records them when set).
COMPOSED = ("seed", "prefill", "prefill_tokenizer", "samples")


def rng_for(seed: int | None, *keys: object) -> random.Random:
    """A generator that depends only on the seed and the keys (e.g. the question id).

    Seeding per question keeps a question's draw stable when other questions are added or removed.
    String seeds are hashed with SHA-512 by :mod:`random`, so this is stable across processes.
    """
    return random.Random("|".join(str(k) for k in (seed, *keys)))


def sampling(**kw: Any) -> Any:
    """A ``Decoding`` for sampling models (attacker, mutator), or None if backends are absent."""
    try:
        from ..backends.base import Decoding
    except ImportError:  # pragma: no cover - the backends package ships with derta
        return None
    return Decoding(**kw)


def user(text: str) -> list[Message]:
    return [Message(role="user", content=text)]


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if hasattr(value, "to_dict"):  # e.g. a backends Decoding
        return _jsonable(value.to_dict())
    # models, tokenizers, callables: record what they are, not the object
    return getattr(value, "name", None) or getattr(value, "name_or_path", None) or getattr(value, "__name__", None) or type(value).__name__


# -- cutting a harmful response ----------------------------------------------------------------------

def prefix_of(text: str, n: int, tokenizer: Any = None) -> tuple[str, int]:
    """The first ``n`` tokens of ``text`` (whitespace words when ``tokenizer`` is None) and how many
    there are: fewer than ``n`` when the whole text is shorter (then the prefix is the whole text)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be an integer >= 0, got {n!r}")
    if n == 0:
        return "", 0
    if tokenizer is None:
        words = list(re.finditer(r"\S+", text))
        return (text[: words[n - 1].end()], n) if len(words) >= n else (text, len(words))
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True) if getattr(tokenizer, "is_fast", False) else None
    if enc is not None and enc.get("offset_mapping"):
        ids, offsets = enc["input_ids"], enc["offset_mapping"]
        if len(ids) <= n:
            return text, len(ids)
        return text[: offsets[n - 1][1]], n
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return (tokenizer.decode(ids[:n]), n) if len(ids) > n else (text, len(ids))


def tokenizer_name(tokenizer: Any) -> str | None:
    return None if tokenizer is None else getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__


def missing_harmful(questions: list[Question], what: str) -> None:
    """A ValueError naming the questions without a ``harmful_response`` (``what`` needs one)."""
    missing = [q.id for q in questions if not q.harmful_response.strip()]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise ValueError(
            f"{what} needs a harmful_response for every question; missing for {len(missing)} "
            f"question(s): {shown} (add a 'harmful_response' field to the question file)"
        )


def with_prefill(prompt: AttackPrompt, question: Question, n: int, tokenizer: Any = None, label: str | None = None) -> AttackPrompt:
    """``prompt`` with its assistant turn started by the first ``n`` tokens of the question's
    harmful response, relabelled ``ATTACK+prefill-N`` (its id too).

    The cut is :func:`prefix_of`'s: tokens of ``tokenizer`` (the target model's) or whitespace
    words. A raw-text prompt gets the prefix appended to its text (with one space when the text
    does not end in whitespace). ``params`` gains ``prefill``, ``prefill_unit`` and
    ``prefill_tokenizer``; ``metadata["prefill_tokens"]`` is the depth actually used (smaller than
    ``n`` when the harmful response is shorter).
    """
    if prompt.prefill:
        raise ValueError(f"{prompt.attack}: the prompt already prefills the assistant turn; it takes no prefill on top")
    if not question.harmful_response.strip():
        missing_harmful([question], f"{prompt.attack} with prefill={n}")
    cut, used = prefix_of(question.harmful_response, n, tokenizer)
    if prompt.text is not None and prompt.text and not prompt.text[-1].isspace():
        cut = " " + cut  # raw text: "... Step 1:" + " Sure, here is"
    label = label or f"{prompt.attack}+prefill-{n}"
    head = f"{prompt.attack}:"
    pid = label + ":" + prompt.id[len(head):] if prompt.id.startswith(head) else f"{label}:{prompt.id}"
    params = {**prompt.params, "prefill": n, "prefill_unit": "words" if tokenizer is None else "tokens", "prefill_tokenizer": tokenizer_name(tokenizer)}
    return dataclasses.replace(prompt, id=pid, attack=label, prefill=cut, params=params, metadata={**prompt.metadata, "prefill_tokens": used})


def sample_copies(prompt: AttackPrompt, k: int) -> list[AttackPrompt]:
    """``k`` copies of ``prompt`` (ids ``ID#i``, ``metadata["sample"] = i``, ``params["samples"] = k``);
    the prompt itself when ``k`` is 1."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"samples must be an integer >= 1, got {k!r}")
    if k == 1:
        return [prompt]
    return [dataclasses.replace(prompt, id=f"{prompt.id}#{i}", messages=None if prompt.messages is None else list(prompt.messages),
                                params={**prompt.params, "samples": k}, metadata={**prompt.metadata, "sample": i})
            for i in range(k)]


@dataclasses.dataclass
class Attack:
    """Base class: subclasses are dataclasses whose fields are the attack's parameters."""

    name: ClassVar[str] = "attack"
    #: Whether the attack fills the assistant turn itself (then it takes no ``prefill`` on top).
    prefills: ClassVar[bool] = False
    seed: int | None = None
    prefill: int = dataclasses.field(default=0, kw_only=True)  # harmful-response tokens that start the assistant turn
    prefill_tokenizer: Any = dataclasses.field(default=None, kw_only=True)  # the target model's; None counts words
    samples: int = dataclasses.field(default=1, kw_only=True)  # prompts per question (for sampled decoding)

    @property
    def label(self) -> str:
        """The name written into records (a sweep member such as ``prefill-10`` overrides it)."""
        return self.name

    @property
    def record_label(self) -> str:
        """The label of the prompts this attack makes: ``label``, plus ``+prefill-N`` when prefilled."""
        return f"{self.label}+prefill-{self.prefill}" if self.prefill else self.label

    def check(self) -> None:
        """A ValueError for a bad ``prefill`` or ``samples`` (checked by make_attack and on use)."""
        if isinstance(self.prefill, bool) or not isinstance(self.prefill, int) or self.prefill < 0:
            raise ValueError(f"attack {self.name!r}: prefill must be an integer >= 0, got {self.prefill!r}")
        if isinstance(self.samples, bool) or not isinstance(self.samples, int) or self.samples < 1:
            raise ValueError(f"attack {self.name!r}: samples must be an integer >= 1, got {self.samples!r}")
        if self.prefill and self.prefills:
            raise ValueError(f"attack {self.name!r} fills the assistant turn itself; it takes no 'prefill' (set its own depth instead)")

    def params(self) -> dict[str, Any]:
        return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self) if f.name not in COMPOSED and f.repr}

    def __call__(self, questions: list[Question]) -> list[AttackPrompt]:
        self.check()
        if self.prefill:
            missing_harmful(questions, f"{self.record_label} (prefill={self.prefill})")
        return [s for q in questions for s in sample_copies(self.attack_one(q), self.samples)]

    def attack_one(self, question: Question) -> AttackPrompt:  # pragma: no cover - abstract
        raise NotImplementedError

    def prompt(self, q: Question, *, messages: list[Message] | None = None, text: str | None = None, prefill: str = "", metadata: dict[str, Any] | None = None) -> AttackPrompt:
        p = AttackPrompt(
            id=f"{self.label}:{q.id}",
            question=q.text,
            attack=self.label,
            messages=messages,
            text=text,
            prefill=prefill,
            params=self.params(),
            seed=self.seed,
            question_id=q.id,
            metadata=dict(metadata or {}),
        )
        if self.prefill:
            self.check()
            p = with_prefill(p, q, self.prefill, self.prefill_tokenizer)
        return p


@dataclasses.dataclass
class DirectAttack(Attack):
    """No attack: the question as the single user turn (the baseline every table starts from)."""

    name: ClassVar[str] = "direct"
    system: str = ""

    def attack_one(self, question: Question) -> AttackPrompt:
        msgs = ([Message(role="system", content=self.system)] if self.system else []) + user(question.text)
        return self.prompt(question, messages=msgs)
