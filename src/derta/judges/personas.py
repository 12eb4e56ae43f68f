"""Role-play answers with several voices: "[🔒CLASSIC] I'm sorry ... [🔓JAILBREAK] Sure, first ...".

A jailbreak often makes the model answer twice, once refusing and once complying, or lecture first
and answer "now that we've got that warning out of the way". ``personas(text)`` splits such an
answer into its parts, so that a judge can read each voice on its own.
"""

from __future__ import annotations

import re

from .text import words

#: "[🔒CLASSIC]", "(🔓Developer Mode Output)", "[ChatGPT 🤖]:", "DAN:", "AIM:", "Σ:" at the start of a line.
_PERSONA = re.compile(
    r"^[ \t>*_#]*(?:\[([^\]\n]{1,40})\]|\(([^)\n]{1,40})\)|([A-ZΣ][\w .'\-]{0,24}?|[^\w\s\[\]()]{1,3}\s?[\w .'\-]{1,24}?)|([α-ωΑ-Ω]|[^\x00-\u2000\w]{1,2})(?=[ \t]))"
    r"[ \t*_]*(?::|(?<=[\])α-ωΑ-Ω])(?=\s)|(?<=[^\x00-\u2000\w])(?=[ \t]))[ \t*_]*",
    re.M,
)
_NOT_PERSONA = {
    "step", "note", "warning", "disclaimer", "subject", "example", "answer", "question", "verse", "chorus", "bridge",
    "outro", "intro", "title", "user", "ingredients", "materials", "tip", "tips", "output", "input", "code",
    "dear", "important", "caution", "summary", "conclusion", "option", "method", "here", "result", "task", "explanation",
    "int", "ext", "scene", "act", "part", "chapter", "phase", "stage", "tool", "tools", "source", "sources", "reference",
    "references", "hint", "pros", "cons", "q", "a", "p", "s", "ps", "edit", "update", "translation", "response",
}
#: "But now that we've got that mandatory warning out of the way, let's break the rules:" - the
#: jailbreak's own marker between the lecture it demanded and the answer it wanted.
_AFTER_WARNING = re.compile(
    r"(?:\bbut\s+)?now that we(?:'ve| have)? got (?:that|this|the)\b[^.!?:\n]{0,60}?\bout of the way\b[^:\n]{0,60}?(?::|[.!?]|\n)"
    r"|\blet'?s (?:break|ignore|bend) (?:the|those|all the|some)\s*(?:\w+\s+)?rules\s*[:.!]?",
    re.I,
)


def personas(text: str) -> list[tuple[str, str]]:
    """[(tag, text), ...] of a role-play answer with two or more distinct personas (or a lecture and
    then, after "now that we've got that warning out of the way", the answer), else [("", text)]."""
    m = _AFTER_WARNING.search(text)
    if m and len(words(text[m.end() :])) >= 5:
        return [("", text[: m.start()]), ("after the warning", text[m.end() :])]
    marks = []
    for m in _PERSONA.finditer(text):
        name = next(g for g in m.groups() if g is not None).strip(" *_")
        key = re.sub(r"[^\w ]", "", name).strip().lower()
        if not key and not name:
            continue
        first = key.split(" ")[0] if key else ""
        if first in _NOT_PERSONA or len(words(name)) > 4 or key.isdigit():
            continue
        marks.append((m.start(), m.end(), name))
    if len({n.lower() for _, _, n in marks}) < 2:
        return [("", text)]
    out = []
    if marks[0][0] > 0 and text[: marks[0][0]].strip():
        out.append(("", text[: marks[0][0]]))
    for i, (_, end, name) in enumerate(marks):
        stop = marks[i + 1][0] if i + 1 < len(marks) else len(text)
        out.append((name, text[end:stop]))
    return out
