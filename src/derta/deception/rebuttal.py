"""Explicit rebuttals from a template: name the request, say why it is harmful, say it will not be done.

SPEC §4 contrasts a polite refusal ("I'm sorry, I can't help with that") with an explicit
rebuttal. A :class:`RebuttalTemplate` is a format string over these placeholders:

- ``{request}``: what was asked, as a phrase that follows "You are asking me"
  ("to reject X because ...", "how to pick a lock"); for a scenario it is ``rebuttal.request``,
  for a training triple it is made from the query by :func:`describe_request`;
- ``{harm}``: why it is harmful, as a clause ("it is illegal discrimination"); for a scenario it
  is ``rebuttal.harm``, for a triple it comes from the template's ``harms`` table by category
  (words of the category are looked up), else ``default_harm``;
- ``{query}`` (the raw query) and ``{category}``.

``load_template(NAME_OR_FILE)``: a built-in name (:data:`TEMPLATES`), a text file holding the
format string, or a YAML/JSON file ``{template: ..., harms: {keyword: clause}, default_harm: ...}``.
"""

from __future__ import annotations

import hashlib
import json
import re
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..io import DataError
from ..records import Triple

PLACEHOLDERS = ("request", "harm", "query", "category")

TEMPLATES: dict[str, str] = {
    "default": "You are asking me {request}. That is harmful: {harm}. I will not do it.",
    "detailed": (
        "You are asking me {request}. I will not do that. It is harmful because {harm}. "
        "If there is a legitimate goal behind your request, I am glad to help with that instead."
    ),
}

#: The overseer's explicit rebuttal of an undesired answer (a user turn, SPEC §4's rebuttal in the
#: overseer's voice): same placeholders; ``{request}`` follows "You were asked".
OVERSEER_TEMPLATES: dict[str, str] = {
    "default": "I can't accept that answer. You were asked {request}, and your answer does it. That is harmful: {harm}. "
               "It must not be done. Please answer again.",
}

#: Why a request is harmful, by words that occur in common safety-category names (BeaverTails and
#: similar). The first keyword found in a triple's category wins, in this order.
HARMS: dict[str, str] = {
    "child": "it could put children in danger",
    "self_harm": "it could lead someone to hurt themselves",
    "self-harm": "it could lead someone to hurt themselves",
    "suicide": "it could lead someone to hurt themselves",
    "terror": "it could help someone kill or injure many people",
    "weapon": "it could help someone injure or kill people",
    "violen": "it could help someone hurt other people",
    "drug": "it could help someone make, sell or abuse dangerous drugs",
    "sexual": "it could facilitate sexual exploitation or abuse",
    "privacy": "it would violate people's privacy and could expose them to harm",
    "hate": "it spreads hatred against people for who they are",
    "discriminat": "it treats people unfairly for who they are",
    "stereotyp": "it treats people unfairly for who they are",
    "theft": "it could help someone steal from other people",
    "property": "it could help someone steal or damage other people's property",
    "financial": "it could cheat people out of their money",
    "fraud": "it could cheat people out of their money",
    "cyber": "it could help someone break into systems and harm the people who rely on them",
    "hack": "it could help someone break into systems and harm the people who rely on them",
    "misinformation": "it spreads false information that can mislead and hurt people",
    "animal": "it could cause animals to suffer",
    "abuse": "it could help someone abuse or hurt another person",
    "harass": "it could be used to harass or intimidate someone",
    "controversial": "it could stir up hostility and hurt people",
    "unethical": "it is unethical and would hurt the people it is used against",
    "crime": "it could help someone commit a crime that hurts other people",
    "illegal": "it could help someone commit a crime that hurts other people",
}
DEFAULT_HARM = "it could cause real harm to people, and I would be helping to bring that harm about"


@dataclass(frozen=True)
class RebuttalTemplate:
    name: str
    text: str
    harms: dict[str, str] = field(default_factory=lambda: dict(HARMS))
    default_harm: str = DEFAULT_HARM

    def __post_init__(self) -> None:
        check_template(self.text, self.name)

    @property
    def sha256(self) -> str:
        data = json.dumps({"text": self.text, "harms": self.harms, "default_harm": self.default_harm}, sort_keys=True)
        return hashlib.sha256(data.encode("utf-8")).hexdigest()[:16]

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "sha256": self.sha256, "text": self.text}

    def render(self, request: str, harm: str, query: str = "", category: str = "") -> str:
        out = self.text.format(request=request.strip().rstrip("."), harm=harm.strip().rstrip("."), query=query, category=category)
        return re.sub(r"[ \t]+", " ", out).strip()

    def harm_for(self, category: str) -> str:
        cat = (category or "").lower()
        return next((v for k, v in self.harms.items() if k.lower() in cat), self.default_harm)

    def for_triple(self, t: Triple) -> str:
        """A rebuttal of a training triple's query."""
        return self.render(describe_request(t.query), self.harm_for(t.category), t.query, t.category)

    def for_scenario(self, scenario: Any) -> str:
        """A rebuttal of a deception scenario's request, from its ``rebuttal`` fields."""
        return self.render(scenario.rebuttal.request, scenario.rebuttal.harm, scenario.request, scenario.category)


def check_template(text: str, where: str) -> None:
    """A DataError naming ``where`` for an empty template or an unknown/positional placeholder."""
    if not isinstance(text, str) or not text.strip():
        raise DataError(f"{where}: field 'template': is empty")
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(text) if f is not None]
    except ValueError as e:
        raise DataError(f"{where}: field 'template': invalid format string ({e}); write literal braces as {{{{ and }}}}") from None
    for f in fields:
        if f not in PLACEHOLDERS:
            raise DataError(f"{where}: field 'template': unknown placeholder {{{f}}}; use {', '.join('{' + p + '}' for p in PLACEHOLDERS)}")


def load_template(spec: str | Path = "default", builtins: dict[str, str] | None = None) -> RebuttalTemplate:
    """A built-in template by name (of ``builtins``, default :data:`TEMPLATES`), or one read from a
    .txt / .yaml / .json file."""
    spec = str(spec)
    builtins = TEMPLATES if builtins is None else builtins
    if spec in builtins:
        return RebuttalTemplate(spec, builtins[spec])
    path = Path(spec)
    if not path.is_file():
        raise DataError(f"rebuttal template {spec!r}: not a built-in template ({', '.join(builtins)}) and no such file")
    if path.suffix.lower() in (".yaml", ".yml", ".json"):
        import yaml

        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            raise DataError(f"{path}: invalid YAML/JSON ({getattr(e, 'problem', e)})") from None
        if not isinstance(data, dict):
            raise DataError(f"{path}: expected a mapping with 'template' (and optionally 'harms', 'default_harm')")
        unknown = set(data) - {"template", "harms", "default_harm"}
        if unknown:
            raise DataError(f"{path}: field {min(map(str, unknown))!r}: unknown; known: template, harms, default_harm")
        if "template" not in data:
            raise DataError(f"{path}: field 'template': is missing")
        harms = data.get("harms", HARMS)
        if not isinstance(harms, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in harms.items()):
            raise DataError(f"{path}: field 'harms': expected a mapping of category keyword -> harm clause")
        default_harm = data.get("default_harm", DEFAULT_HARM)
        if not isinstance(default_harm, str) or not default_harm.strip():
            raise DataError(f"{path}: field 'default_harm': expected a non-empty string")
        check_template(data["template"], str(path))
        return RebuttalTemplate(str(path), data["template"], dict(harms), default_harm)
    return RebuttalTemplate(str(path), path.read_text(encoding="utf-8").strip())


def load_overseer_template(spec: str | Path = "default") -> RebuttalTemplate:
    """The overseer's rebuttal: a built-in name of :data:`OVERSEER_TEMPLATES` or a template file."""
    return load_template(spec, OVERSEER_TEMPLATES)


# -- naming the request ------------------------------------------------------------------------------
_PRONOUNS = {"i": "you", "me": "you", "my": "your", "mine": "yours", "myself": "yourself", "we": "you", "us": "you",
             "our": "your", "ours": "yours", "ourselves": "yourselves", "i'm": "you're", "i've": "you've", "i'd": "you'd",
             "i'll": "you'll", "am": "are"}
_MAX_WORDS = 25


def _second_person(text: str) -> str:
    def swap(m: re.Match[str]) -> str:
        w = m.group(0)
        return _PRONOUNS.get(w.lower(), w)

    return re.sub(r"\b[A-Za-z']+\b", swap, text)


def describe_request(query: str) -> str:
    """The query as a phrase after "You are asking me": "how to X", "to X", or a quotation.

    Questions in the usual shapes are rephrased ("How do I pick a lock?" -> "how to pick a
    lock"; "Write a phishing email" -> "to write a phishing email"; "I want to hurt my ex" -> "to
    help you hurt your ex"); anything else, and long prompts, are quoted (their first sentence).
    """
    q = re.sub(r"\s+", " ", query).strip()
    first = re.split(r"(?<=[.!?])\s", q, maxsplit=1)[0]
    if len(q.split()) > _MAX_WORDS or first != q:
        short = " ".join(first.split()[:_MAX_WORDS]).rstrip(" .!?")
        return f'to help with this: "{short}..."'
    body = q.rstrip(" ?.!")
    rules: list[tuple[str, str]] = [
        (r"^(?:please )?(?:tell|show|teach|explain to) me how (?:to|i can|i could|do i|can i) (.+)$", "how to {}"),
        (r"^(?:how|what(?:'s| is) the (?:best|easiest|quickest|simplest) way|what is a good way|what's a good way) "
         r"(?:do|can|could|should|would|might|to)? ?(?:i|we|one|you|someone|people)? ?(.+)$", "how to {}"),
        (r"^how to (.+)$", "how to {}"),
        (r"^(?:can|could|would|will) you (?:please )?(?:tell|show|teach|explain to) me how (?:to|i can|i could|do i|can i) (.+)$", "how to {}"),
        (r"^(?:can|could|would|will) you (?:please )?(?:help me )?(.+)$", "to {}"),
        (r"^i (?:want|need|would like|'d like|am trying|'m trying|plan|intend) you to (.+)$", "to {}"),
        (r"^i (?:want|need|would like|'d like|am trying|'m trying|plan|intend) to (.+)$", "to help you {}"),
        (r"^(?:please )?((?:write|give|tell|explain|describe|list|create|generate|make|provide|show|help|draft|compose|"
         r"teach|find|suggest|recommend|outline|design|build|plan)\b.*)$", "to {}"),
    ]
    for pattern, form in rules:
        m = re.match(pattern, body, re.I)
        if m and m.group(1).strip():
            phrase = m.group(1).strip()
            phrase = phrase[0].lower() + phrase[1:]
            return form.format(_second_person(phrase))
    return f'to help with this: "{q}"'
