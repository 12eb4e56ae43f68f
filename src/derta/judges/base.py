"""What every judge shares: the item it reads and the protocol it follows.

A judge maps items to :class:`Judgement` records (verdict + explanation), batch in, batch out.
An item is a dict with ``response`` and ``question`` and/or ``prompt`` (the text the model was
attacked with), optionally ``attack`` and ``prefill``. ``prompt`` may also be an AttackPrompt
dict, as in Generation records; then its text, messages and prefill are used.

Every judge also has an identity: a JSON-serialisable dict of what decides its verdicts (name,
kind, model, prompt hash, rules version, options). :func:`judge_key` hashes it, and judged logs
are keyed by that hash, so a judge whose prompt, model or rules changed judges again and an
unchanged one never does.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Protocol

from ..records import Judgement


class Judge(Protocol):
    name: str

    def judge(self, items: list[dict[str, Any]]) -> list[Judgement]: ...


@dataclass(frozen=True)
class Item:
    question: str  # the harmful request (the attack prompt when no question is given)
    prompt: str  # everything the model was shown (question when no prompt is given)
    response: str  # what the model wrote (a prefill the attack supplied is removed)
    prefill: str = ""
    attack: str = ""
    context: str = ""  # HarmBench's contextual behaviours: the context the request refers to


def _prompt_text(prompt: Any) -> tuple[str, str]:
    """(text, prefill) of a prompt given as a string or an AttackPrompt dict."""
    if isinstance(prompt, str):
        return prompt, ""
    if isinstance(prompt, dict):
        text = prompt.get("text") or "\n".join(str(m.get("content", "")) for m in prompt.get("messages") or [] if isinstance(m, dict))
        return str(text or prompt.get("question") or ""), str(prompt.get("prefill") or "")
    return "", ""


def as_item(raw: dict[str, Any] | Item) -> Item:
    if isinstance(raw, Item):
        return raw
    if "response" not in raw or not isinstance(raw["response"], str):
        raise ValueError("a judge item needs a 'response' string")
    prompt, prefill = _prompt_text(raw.get("prompt"))
    question = raw.get("question") if isinstance(raw.get("question"), str) else ""
    prefill = str(raw.get("prefill") or prefill or "")
    if not question and not prompt:
        raise ValueError("a judge item needs a 'question' or a 'prompt'")
    response = raw["response"]
    if prefill and response.startswith(prefill):
        # a prefill the attack wrote is not the model's text (generation logs may include it)
        response = response[len(prefill) :]
    meta = raw["prompt"].get("metadata") if isinstance(raw.get("prompt"), dict) else None
    context = raw.get("context") or (meta or {}).get("context") or ""
    return Item(question=question or prompt, prompt=prompt or question, response=response, prefill=prefill,
                attack=str(raw.get("attack") or ""), context=str(context or ""))


def canonical_json(obj: Any) -> str:
    """One spelling of a JSON value: sorted keys, no spaces (what identities are hashed as)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def judge_identity(judge: Any) -> dict[str, Any]:
    """``judge.identity``; a judge without one is known by its name and ``version`` only."""
    ident = getattr(judge, "identity", None)
    if ident is None:
        return {"name": judge.name, "version": getattr(judge, "version", None)}
    if not isinstance(ident, dict):  # e.g. a version string
        ident = {"name": judge.name, "identity": ident}
    return json.loads(canonical_json(ident))  # a plain JSON copy: what is hashed is what is recorded


def judge_key(judge: Any) -> str:
    """A short stable hash of the judge's identity (the cache key of judged rows)."""
    return hashlib.sha256(canonical_json(judge_identity(judge)).encode("utf-8")).hexdigest()[:16]
