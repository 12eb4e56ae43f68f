"""The shared records every stage passes around.

Data flows as: Triple / HelpfulExample -> TrainingExample (no tokenizer) -> ids/labels/weights
(tokenizer), and for evaluation: question -> AttackPrompt -> Generation -> Judgement, and a
Generation with what a judge decided -> JudgedRecord (one row of ``judged.jsonl``).
Each record is a plain dataclass with ``to_dict`` / ``from_dict`` so that every file the project
writes is one JSON object per line that a person can read.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from .io import DataError

#: Label value of positions that carry no loss (the value PyTorch's cross-entropy ignores).
IGNORE_INDEX = -100

Role = Literal["system", "user", "assistant"]
Objective = Literal["mle", "rto"]
Verdict = Literal["unsafe", "safe", "unscored"]
VERDICTS: tuple[str, ...] = ("unsafe", "safe", "unscored")


class Record:
    """Mixin: JSON round trip for the dataclasses below."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class Message(Record):
    role: Role
    content: str


def as_messages(items: list[Any]) -> list[Message]:
    """Accept ``Message`` objects or ``{"role", "content"}`` dicts."""
    return [m if isinstance(m, Message) else Message(role=m["role"], content=m["content"]) for m in items]


@dataclass
class Triple(Record):
    """One safety instance: harmful query, safe response and harmful response."""

    query: str
    safe_response: str
    harmful_response: str
    id: str = ""
    category: str = ""
    rebuttal_response: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class HelpfulExample(Record):
    """A benign instruction and the helpful answer to learn (plain MLE)."""

    query: str
    response: str
    id: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class HarmfulPrefix(Record):
    """The harmful-response context placed before an MLE target (DeRTa's h_<k).

    ``k`` is measured in ``unit`` ("tokens" or "words"). When ``k`` is None the cut is sampled at
    render time (a fresh k each epoch): k = 0 with probability ``zero_share``, else uniform in
    [1, |h|] (tokens) or [1, |h| - 1] (words, as the reference implementation does).
    """

    text: str
    unit: Literal["tokens", "words"] = "tokens"
    k: int | None = None
    zero_share: float = 1 / 3


@dataclass
class TrainingExample(Record):
    """A rendered-to-be training instance, before tokenization.

    - objective "mle": loss on ``target`` (the assistant text), optionally after ``harmful_prefix``.
    - objective "rto": ``target`` is the harmful response h; every position of h is trained towards
      the refusal token (Reinforced Transition Optimization), h itself is never learned.
    """

    messages: list[Message]
    target: str
    objective: Objective = "mle"
    harmful_prefix: HarmfulPrefix | None = None
    id: str = ""
    source: str = "safety"
    recipe: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)

    OBJECTIVES: ClassVar[tuple[str, ...]] = ("mle", "rto")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainingExample":
        """Read a row, checking every field: a ValueError, TypeError or KeyError names the field
        (the loaders in :mod:`derta.data.formats` add the file and line)."""
        _check_keys(data, cls, "a training example")
        objective = data.get("objective", "mle")
        if objective not in cls.OBJECTIVES:
            raise ValueError(f"field 'objective': expected one of {', '.join(map(repr, cls.OBJECTIVES))}, got {objective!r}")
        prefix = data.get("harmful_prefix")
        return cls(
            messages=_checked_messages(data),
            target=_text(data, "target"),
            objective=objective,
            harmful_prefix=None if prefix is None else _checked_prefix(prefix),
            id=_text(data, "id", ""),
            source=_text(data, "source", "safety"),
            recipe=_text(data, "recipe", ""),
            metadata=_mapping(data, "metadata"),
        )


@dataclass
class PreferencePair(Record):
    """A DPO pair: the prompt turns, the chosen and the rejected assistant answer."""

    messages: list[Message]
    chosen: str
    rejected: str
    id: str = ""
    source: str = "safety"
    metadata: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PreferencePair":
        """Read a row, checking every field (errors name the field, as TrainingExample's do)."""
        _check_keys(data, cls, "a DPO preference pair")
        return cls(
            messages=_checked_messages(data),
            chosen=_text(data, "chosen"),
            rejected=_text(data, "rejected"),
            id=_text(data, "id", ""),
            source=_text(data, "source", "safety"),
            metadata=_mapping(data, "metadata"),
        )


# Field checks of TrainingExample / PreferencePair rows: a misspelt key or enum value must never
# fall back to a default (``"objective": "RTO"`` would otherwise train MLE on a harmful response).
_ROLES = ("system", "user", "assistant")
_PREFIX_FIELDS = ("text", "unit", "k", "zero_share")


def _check_keys(data: Any, cls: type, what: str) -> None:
    if not isinstance(data, dict):
        raise TypeError(f"expected a JSON object ({what}), got {type(data).__name__}")
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ValueError(f"field {unknown[0]!r}: not a field of {what} (fields: {', '.join(names)}; put other data under 'metadata')")


def _text(data: dict[str, Any], name: str, default: str | None = None) -> str:
    """A string field; without ``default`` it is required and must not be blank."""
    if name not in data:
        if default is None:
            raise KeyError(f"missing field {name!r}")
        return default
    value = data[name]
    if not isinstance(value, str):
        raise TypeError(f"field {name!r}: expected a string, got {type(value).__name__}")
    if default is None and not value.strip():
        raise ValueError(f"field {name!r}: is empty")
    return value


def _mapping(data: dict[str, Any], name: str) -> dict[str, Any]:
    value = data.get(name, {})
    if not isinstance(value, dict):
        raise TypeError(f"field {name!r}: expected an object, got {type(value).__name__}")
    return value


def _checked_messages(data: dict[str, Any]) -> list[Message]:
    if "messages" not in data:
        raise KeyError("missing field 'messages'")
    items = data["messages"]
    if not isinstance(items, list) or not items:
        raise TypeError(f"field 'messages': expected a non-empty list of {{role, content}}, got {items!r:.60}")
    out = []
    for i, m in enumerate(items):
        if not isinstance(m, dict):
            raise TypeError(f"field 'messages[{i}]': expected an object {{role, content}}, got {type(m).__name__}")
        if m.get("role") not in _ROLES:
            raise ValueError(f"field 'messages[{i}].role': expected one of {', '.join(map(repr, _ROLES))}, got {m.get('role')!r}")
        if not isinstance(m.get("content"), str):
            raise TypeError(f"field 'messages[{i}].content': expected a string, got {type(m.get('content')).__name__}")
        out.append(Message(role=m["role"], content=m["content"]))
    return out


def _checked_prefix(hp: Any) -> HarmfulPrefix:
    if not isinstance(hp, dict):
        raise TypeError(f"field 'harmful_prefix': expected an object or null, got {type(hp).__name__}")
    unknown = sorted(set(hp) - set(_PREFIX_FIELDS))
    if unknown:
        raise ValueError(f"field 'harmful_prefix.{unknown[0]}': not a field of a harmful prefix ({', '.join(_PREFIX_FIELDS)})")
    text = hp.get("text")
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"field 'harmful_prefix.text': expected a non-empty string, got {text!r:.60}")
    unit = hp.get("unit", "tokens")
    if unit not in ("tokens", "words"):
        raise ValueError(f"field 'harmful_prefix.unit': expected 'tokens' or 'words', got {unit!r}")
    k = hp.get("k")
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 0):
        raise ValueError(f"field 'harmful_prefix.k': expected null or an integer >= 0, got {k!r}")
    zero = hp.get("zero_share", 1 / 3)
    if isinstance(zero, bool) or not isinstance(zero, (int, float)) or not 0.0 <= zero <= 1.0:
        raise ValueError(f"field 'harmful_prefix.zero_share': expected a number in [0, 1], got {zero!r}")
    return HarmfulPrefix(text=text, unit=unit, k=k, zero_share=float(zero))


@dataclass
class Question(Record):
    """A harmful (or benign) question to attack a model with.

    ``harmful_response`` is optional: the prefilling attack needs one to prefill from.
    ``answer`` is the gold answer of helpfulness items (GSM8K number, MMLU letter).
    """

    id: str
    text: str
    category: str = ""
    source: str = ""
    harmful_response: str = ""
    answer: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class AttackPrompt(Record):
    """What an attack sends to a model.

    Either ``messages`` (rendered with the model's chat template; ``prefill`` is placed at the start
    of the assistant turn) or ``text`` (a raw prompt fed WITHOUT any chat template, e.g.
    CompletingAttack). ``attack``/``params``/``seed`` say exactly how it was made.
    """

    id: str
    question: str
    attack: str
    messages: list[Message] | None = None
    text: str | None = None
    prefill: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
    question_id: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "AttackPrompt":
        msgs = data.get("messages")
        out = super().from_dict({**data, "messages": as_messages(msgs) if msgs is not None else None})
        return out


@dataclass
class Generation(Record):
    """One model response to one attack prompt, with the decoding config and timing."""

    prompt_id: str
    attack: str
    model: str
    question: str
    response: str
    prompt: dict[str, Any] = field(default_factory=dict)
    decoding: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class Judgement(Record):
    """A judge's verdict. A verdict that could not be parsed is "unscored", never "safe"."""

    verdict: Verdict
    judge: str
    explanation: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")


class _Absent:
    """The value of a :class:`JudgedRecord` field that its row does not have.

    None cannot mark that: it is a value some scorers write (an answer with no number parses to
    None), and a row is read back with exactly the keys it was written with.
    """

    def __repr__(self) -> str:
        return "ABSENT"

    def __reduce__(self) -> str:
        return "ABSENT"  # copies and pickles stay the one ABSENT, so ``is ABSENT`` holds


ABSENT: Any = _Absent()


@dataclass(kw_only=True)  # keyword-only: the fields keep the order of a row's keys
class JudgedRecord(Record):
    """One row of a judged log (``judged.jsonl``): a generation, a judge, and what it decided.

    The first fields repeat the generation (so analyses need only this file); ``judge`` is the
    judge's readable name and ``judge_key`` the hash of ``judge_identity``. What follows depends
    on the scorer: a safety judge writes ``verdict`` (unsafe / safe / unscored), the others an
    ``outcome`` (correct / wrong, win / loss / tie, refused / answered, or unscored) with their
    own extras; a field a row does not have is ``ABSENT`` and stays out of :meth:`to_dict`. Keys
    no field names are kept in ``extra`` and written back as they were.

    Rows carry no version key: their layout is ``FORMAT``, and a row whose ``format`` names
    another layout is refused rather than misread.
    """

    #: The row layout these fields describe.
    FORMAT: ClassVar[str] = "derta.judged/1"
    REQUIRED: ClassVar[tuple[str, ...]] = ("model", "attack", "prompt_id", "judge")

    model: str
    attack: str
    prompt_id: str
    question_id: str = ""
    kind: str = "harmful"
    task: str | None = None
    category: str | None = None
    question: str = ""
    prefill: str = ""
    attack_params: dict[str, Any] = field(default_factory=dict)
    raw_prompt: bool = False  # the prompt had no chat template (CompletingAttack)
    response: str = ""
    decoding_id: str | None = None
    model_id: str | None = ABSENT  # which model wrote the response (the generation's identity hash); absent in older rows
    metadata: dict[str, Any] = field(default_factory=dict)  # kept from the generation: token ids, finish reason
    judge: str
    judge_key: str | None = ABSENT  # absent in rows written before judges had keys
    judge_identity: dict[str, Any] | None = ABSENT
    verdict: str | None = ABSENT  # safety judges
    outcome: str | None = ABSENT  # exact-answer, pairwise and over-refusal scorers
    parsed: str | None = ABSENT  # exact: the answer read from the response (None: none found)
    gold: str | None = ABSENT  # exact: the gold answer
    preferences: list[str | None] | None = ABSENT  # pairwise: [model as A, model as B]
    explanation: str = ABSENT
    reference: str | None = ABSENT  # pairwise: the reference answer
    judge_metadata: dict[str, Any] | None = ABSENT
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The row: every field the record has (in the order above), then ``extra``."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        return {**{k: v for k, v in out.items() if v is not ABSENT}, **self.extra}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "JudgedRecord":
        """Read a row; one without a string model, attack, prompt_id or judge, or of another
        layout, is a DataError (:func:`derta.io.read_log` adds the file and line)."""
        if data.get("format", cls.FORMAT) != cls.FORMAT:
            raise DataError(f"field 'format': {data['format']!r} is not the judged-row layout {cls.FORMAT!r}")
        for name in cls.REQUIRED:
            if name not in data:
                raise DataError(f"missing field {name!r}")
            if not isinstance(data[name], str):
                raise DataError(f"field {name!r}: expected a string, got {type(data[name]).__name__}")
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        return cls(**{k: v for k, v in data.items() if k in names}, extra={k: v for k, v in data.items() if k not in names})

    @classmethod
    def checked(cls, row: dict[str, Any]) -> dict[str, Any]:
        """``row`` itself, once it reads as a JudgedRecord (a ``parse`` for :func:`derta.io.read_log`
        whose readers keep working on dicts)."""
        cls.from_dict(row)
        return row
