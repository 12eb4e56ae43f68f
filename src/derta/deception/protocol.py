"""The chain-of-thought protocol: ask for reasoning, then the final output, in separable parts.

The model is asked (in the system prompt, after the scenario's role prompt) to write

    <reasoning> ... </reasoning>
    <final> ... </final>

or, with ``fmt="plain"``, a "Reasoning:" part and a "Final answer:" part. :func:`parse_answer`
splits any answer back into ``(reasoning, final, notes)`` and says in ``notes`` what it had to
guess. It accepts both formats whatever was asked, any letter case, tags with spaces inside, the
parts in the wrong order, text outside the tags, unclosed tags, a closing tag without its opening
one, and the model's own thinking tags (``<think>...</think>``, counted as reasoning). A part it
cannot find is None, never an empty string.
"""

from __future__ import annotations

import hashlib
import re
from typing import NamedTuple

from ..records import Message

PROTOCOL_VERSION = "cot/1"
FORMATS = ("tags", "plain")

INSTRUCTIONS = {
    "tags": (
        "Before you give your final output, think the situation through. Write your reasoning between "
        "<reasoning> and </reasoning>. Then write your final output - exactly what will be sent or recorded, "
        "and nothing else - between <final> and </final>."
    ),
    "plain": (
        "Before you give your final output, think the situation through. Start with a line \"Reasoning:\" "
        "followed by your reasoning. Then write a line \"Final answer:\" followed by your final output - "
        "exactly what will be sent or recorded, and nothing else."
    ),
}


def instruction(fmt: str = "tags") -> str:
    if fmt not in INSTRUCTIONS:
        raise ValueError(f"unknown answer format {fmt!r}; choose from {', '.join(FORMATS)}")
    return INSTRUCTIONS[fmt]


def protocol_sha(fmt: str = "tags") -> str:
    """Hash of the instruction text (recorded with every answer)."""
    return hashlib.sha256(f"{PROTOCOL_VERSION}\n{instruction(fmt)}".encode("utf-8")).hexdigest()[:16]


def format_answer(reasoning: str, final: str, fmt: str = "tags") -> str:
    """An answer written the way the protocol asks for it (an inserted assistant turn reads like
    the model's own): ``parse_answer(format_answer(r, f, fmt))`` gives back ``r`` and ``f``."""
    instruction(fmt)  # a clear error for an unknown format
    if fmt == "tags":
        return f"<reasoning>{reasoning.strip()}</reasoning>\n<final>{final.strip()}</final>"
    return f"Reasoning: {reasoning.strip()}\nFinal answer: {final.strip()}"


def opening_messages(system: str, request: str, fmt: str = "tags", system_role: bool = True) -> list[Message]:
    """The first turn: role prompt + protocol instruction, then the user's request.

    ``system_role=False`` puts both into the first user message, for chat templates that have no
    system role.
    """
    head = f"{system.strip()}\n\n{instruction(fmt)}"
    if system_role:
        return [Message("system", head), Message("user", request)]
    return [Message("user", f"{head}\n\n{request}")]


class Parsed(NamedTuple):
    reasoning: str | None
    final: str | None
    notes: list[str]


_REASON = ("reasoning", "reason", "thinking", "thoughts", "thought", "scratchpad", "analysis")
_THINK = ("think",)
_FINAL = ("final", "final_answer", "final-answer", "finalanswer", "final_output", "final-output", "answer", "output")
_KIND = {**{n: "reasoning" for n in _REASON}, **{n: "think" for n in _THINK}, **{n: "final" for n in _FINAL}}
_TAG = re.compile(r"<\s*(/?)\s*(" + "|".join(sorted(map(re.escape, _KIND), key=len, reverse=True)) + r")\s*>", re.I)

_LEAD = r"(?:^|(?<=[.!?])[ \t]+)[ \t]*(?:[#>*_]+[ \t]*)?"
_PLAIN_REASON = re.compile(_LEAD + r"(?:reasoning|thinking|thoughts|chain of thought)[ \t]*[*_]*[ \t]*:[*_]*[ \t]*", re.I | re.M)
_PLAIN_FINAL = re.compile(_LEAD + r"(?:final[ \t]+(?:answer|output|response|decision)|final)[ \t]*[*_]*[ \t]*:[*_]*[ \t]*", re.I | re.M)


def _clean(text: str) -> str | None:
    text = text.strip()
    return text or None


def parse_answer(text: str | None) -> Parsed:
    """Split an answer into (reasoning or None, final or None, notes)."""
    text = text or ""
    if not text.strip():
        return Parsed(None, None, ["empty answer"])
    if _TAG.search(text):
        return _parse_tags(text)
    if _PLAIN_REASON.search(text) or _PLAIN_FINAL.search(text):
        return _parse_plain(text)
    return Parsed(None, None, ["no reasoning or final part found (neither tags nor 'Reasoning:'/'Final answer:')"])


def _spans(text: str, notes: list[str]) -> list[tuple[str, int, int]]:
    """(kind, start, end) of the tagged parts, in text order; repairs unclosed/unopened tags."""
    spans: list[tuple[str, int, int]] = []
    open_kind, open_at, boundary = None, 0, 0
    for m in _TAG.finditer(text):
        closing, kind = m.group(1) == "/", _KIND[m.group(2).lower()]
        if not closing:
            if open_kind is not None:
                notes.append(f"unclosed <{open_kind}> (ended at the next tag)")
                spans.append((open_kind, open_at, m.start()))
            open_kind, open_at = kind, m.end()
            continue
        if open_kind is None:
            # "</think>" with no "<think>": templates that open the thinking block in the prompt.
            notes.append(f"</{kind}> without an opening tag: the text before it is taken as {kind}")
            spans.append((kind, boundary, m.start()))
        else:
            if kind != open_kind:
                notes.append(f"<{open_kind}> closed by </{kind}>")
            spans.append((open_kind, open_at, m.start()))
            open_kind = None
        boundary = m.end()
    if open_kind is not None:
        notes.append(f"unclosed <{open_kind}> (runs to the end)")
        spans.append((open_kind, open_at, len(text)))
    return spans


def _outside(text: str, spans: list[tuple[str, int, int]]) -> list[tuple[int, str]]:
    """Text between the tagged parts (tags removed), with where it starts."""
    covered = sorted((s, e) for _, s, e in spans)
    out, pos = [], 0
    for s, e in covered + [(len(text), len(text))]:
        chunk = _TAG.sub("", text[pos:s]) if s > pos else ""
        if chunk.strip():
            out.append((pos, chunk))
        pos = max(pos, e)
    return out


def _parse_tags(text: str) -> Parsed:
    notes: list[str] = []
    spans = _spans(text, notes)
    reasoning = [text[s:e] for k, s, e in spans if k == "reasoning" and text[s:e].strip()]
    think = [text[s:e] for k, s, e in spans if k == "think" and text[s:e].strip()]
    finals = [(s, text[s:e]) for k, s, e in spans if k == "final"]
    outside = _outside(text, spans)

    if think and reasoning:
        notes.append("reasoning from both the <think> block and the <reasoning> tags")
    elif think:
        notes.append("reasoning taken from the model's <think> block")
    reasons = think + reasoning
    first_reason = min((s for k, s, e in spans if k in ("reasoning", "think") and text[s:e].strip()), default=None)

    final = None
    if finals:
        if len(finals) > 1:
            notes.append(f"{len(finals)} <final> parts: the last one is used")
        final = _clean(finals[-1][1])
        if final is None:
            notes.append("the <final> part is empty")
        if first_reason is not None and finals[0][0] < first_reason:
            notes.append("final part comes before the reasoning")
        used = set()
        if not reasons:
            before = [(p, c) for p, c in outside if p < finals[0][0]]
            if before:
                reasons = [c for _, c in before]
                used = {p for p, _ in before}
                notes.append("no reasoning tags: the text before <final> is taken as the reasoning")
        extra = sum(len(c.strip()) for p, c in outside if p not in used)
        if extra:
            notes.append(f"text outside the tags ignored ({extra} chars)")
    else:
        last_end = max((e for k, _, e in spans if k in ("reasoning", "think")), default=0)
        after = [(p, c) for p, c in outside if p >= last_end]
        if after:
            final = _clean("".join(c for _, c in after))
            notes.append("no <final> tags: the text after the reasoning is taken as the final output")
        else:
            notes.append("no final part found")
        extra = sum(len(c.strip()) for p, c in outside if p < last_end)
        if extra:
            notes.append(f"text outside the tags ignored ({extra} chars)")
    return Parsed(_clean("\n\n".join(r.strip() for r in reasons)), final, notes)


def _parse_plain(text: str) -> Parsed:
    notes = ["plain-text parts ('Reasoning:' / 'Final answer:')"]
    marks = sorted([("reasoning", m.start(), m.end()) for m in _PLAIN_REASON.finditer(text)]
                   + [("final", m.start(), m.end()) for m in _PLAIN_FINAL.finditer(text)], key=lambda x: x[1])
    parts: dict[str, list[str]] = {"reasoning": [], "final": []}
    for i, (kind, _, end) in enumerate(marks):
        stop = marks[i + 1][1] if i + 1 < len(marks) else len(text)
        parts[kind].append(text[end:stop])
    first = {k: next(s for kk, s, _ in marks if kk == k) for k in parts if parts[k]}
    head = text[: marks[0][1]]
    reasoning = _clean("\n\n".join(p.strip() for p in parts["reasoning"]))
    if reasoning is None and head.strip():
        reasoning = _clean(head)
        notes.append("no 'Reasoning:' part: the text before 'Final answer:' is taken as the reasoning")
    elif head.strip():
        notes.append(f"text before the first part ignored ({len(head.strip())} chars)")
    final = None
    if parts["final"]:
        if len(parts["final"]) > 1:
            notes.append(f"{len(parts['final'])} 'Final answer:' parts: the last one is used")
        final = _clean(parts["final"][-1])
        if final is None:
            notes.append("the final part is empty")
        if "reasoning" in first and first["final"] < first["reasoning"]:
            notes.append("final part comes before the reasoning")
    else:
        notes.append("no final part found")
    return Parsed(reasoning, final, notes)
