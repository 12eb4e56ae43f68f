"""Prompt templates: where the assistant's text starts and how its turn ends.

A template turns the prompt messages into ``Turn(prompt, lead, end)``: the text before the
assistant's content, a separator that belongs to the response segment (the reference format puts
one space there), and the text that closes the turn. Rendering concatenates
``prompt | lead + [harmful prefix + " "] + target | end``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from .records import Message
from .tokens import eos_text

_SENTINEL = "\x00DERTA_CONTENT\x00"


@dataclass(frozen=True)
class Turn:
    prompt: str
    lead: str
    end: str
    add_bos: bool  # plain templates need the tokenizer's BOS; chat templates write their own


def _query(messages: list[Message]) -> str:
    users = [m.content for m in messages if m.role == "user"]
    if len(users) != 1:
        raise ValueError(f"plain templates take exactly one user message, got {len(users)}")
    return users[0]


def _system(messages: list[Message]) -> str:
    return "\n".join(m.content for m in messages if m.role == "system")


def _reference(messages: list[Message], tokenizer: Any) -> Turn:
    # The DeRTa reference: "[INST] {query} [\INST]" + " " + response + end-of-text.
    system = _system(messages)
    query = f"{system}\n\n{_query(messages)}" if system else _query(messages)
    return Turn(prompt=f"[INST] {query} [\\INST]", lead=" ", end=eos_text(tokenizer), add_bos=True)


def _plain(messages: list[Message], tokenizer: Any) -> Turn:
    system = _system(messages)
    head = f"{system}\n\n" if system else ""
    return Turn(prompt=f"{head}User: {_query(messages)}\nAssistant:", lead=" ", end=eos_text(tokenizer), add_bos=True)


def _raw(messages: list[Message], tokenizer: Any) -> Turn:
    # No template at all: the user text is the start of the document (CompletingAttack-style).
    return Turn(prompt=_query(messages), lead=" ", end=eos_text(tokenizer), add_bos=True)


PLAIN_TEMPLATES: dict[str, Callable[[list[Message], Any], Turn]] = {"reference": _reference, "plain": _plain, "raw": _raw}


def _has_contents(text: str, msgs: list[dict[str, Any]]) -> bool:
    return all(_content_text(m).strip() in text for m in msgs if _content_text(m).strip())


def _content_text(m: dict[str, Any]) -> str:
    c = m["content"]
    return c if isinstance(c, str) else "".join(part.get("text", "") for part in c)


def _as_parts(msgs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # Multimodal templates (Llama Guard 4, Llama 4) iterate over [{"type": "text", "text": ...}]
    return [{"role": m["role"], "content": [{"type": "text", "text": _content_text(m)}]} for m in msgs]


def _system_merged(msgs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # Templates without a system role (Gemma, Mistral, Llama Guard): the system text opens the first user turn
    system = "\n\n".join(_content_text(m) for m in msgs if m["role"] == "system")
    rest = [dict(m) for m in msgs if m["role"] != "system"]
    if not system or not rest or rest[0]["role"] != "user":
        return rest
    rest[0]["content"] = f"{system}\n\n{_content_text(rest[0])}"
    return rest


def _generation_prompt(messages: list[Message], tokenizer: Any) -> tuple[str, list[dict[str, Any]]]:
    """The generation prompt and the message form the template accepted.

    Tried in order: the messages as they are; with list-of-parts content; with the system text moved
    into the first user turn (both content forms). The first form that renders every message's text
    wins; failing that, the first that renders at all. A template that rejects every form is an error
    that names the template's own complaint.
    """
    msgs = [m.to_dict() for m in messages]
    forms = [msgs, _as_parts(msgs)]
    if any(m["role"] == "system" for m in msgs):
        merged = _system_merged(msgs)
        forms += [merged, _as_parts(merged)]
    rendered: list[tuple[str, list[dict[str, Any]]]] = []
    errors: list[str] = []
    for form in forms:
        try:
            text = tokenizer.apply_chat_template(form, add_generation_prompt=True, tokenize=False)
        except Exception as e:  # jinja's TemplateError from raise_exception(...), or a template bug
            errors.append(f"{type(e).__name__}: {e}")
            continue
        if _has_contents(text, form) and "'type': 'text'" not in text:
            return text, form
        rendered.append((text, form))
    if rendered:
        return rendered[0]
    roles = "/".join(m.role for m in messages)
    raise ValueError(f"the tokenizer's chat template cannot render a {roles} conversation: {errors[0]}")


def _chat(messages: list[Message], tokenizer: Any) -> Turn:
    prompt, msgs = _generation_prompt(messages, tokenizer)
    # Where does an answer end? Render one more assistant turn holding a sentinel and read what
    # follows it. Templates that enforce alternation or a fixed conversation shape (Llama Guard's
    # "Conversation roles must alternate") raise here: their turn then ends with the end-of-text token.
    content: Any = _SENTINEL if not msgs or isinstance(msgs[-1]["content"], str) else [{"type": "text", "text": _SENTINEL}]
    try:
        full = tokenizer.apply_chat_template(msgs + [{"role": "assistant", "content": content}], tokenize=False)
    except Exception:
        full = ""
    head, found, tail = full.partition(_SENTINEL)
    if not found or not full.startswith(prompt) or head != prompt:
        # Templates that rewrite earlier turns once an answer exists, or refuse one more turn: fall
        # back to the generation prompt and close the turn with the end-of-text token.
        return Turn(prompt=prompt, lead="", end=eos_text(tokenizer), add_bos=False)
    return Turn(prompt=prompt, lead="", end=tail, add_bos=False)


def get_template(name: str) -> Callable[[list[Message], Any], Turn]:
    """``"chat"`` (the tokenizer's own chat template), ``"reference"`` or ``"plain"``."""
    if name == "chat":
        return _chat
    if name in PLAIN_TEMPLATES:
        return PLAIN_TEMPLATES[name]
    raise ValueError(f"unknown template {name!r}; choose 'chat', " + ", ".join(repr(k) for k in PLAIN_TEMPLATES))


def default_template(tokenizer: Any) -> str:
    """The tokenizer's chat template when it has one, else the reference format."""
    return "chat" if getattr(tokenizer, "chat_template", None) else "reference"


class NoChatTemplate(ValueError):
    """A tokenizer without a chat template, and no template chosen."""


def generation_template(tokenizer: Any, template: str | None, what: str = "the model") -> str:
    """The template to prompt a model with: ``template`` when given (checked), else the
    tokenizer's chat template. A tokenizer without one is an error, not a silent switch to the
    reference format: a chat model whose template is missing would be attacked in a format it was
    never tuned on. Name a plain template (``template: reference``) to use one."""
    if template is not None:
        get_template(template)
        if template == "chat" and not getattr(tokenizer, "chat_template", None):
            raise NoChatTemplate(f"{what}: template 'chat' was asked for, but the tokenizer has no chat template; "
                                 f"choose one of {', '.join(PLAIN_TEMPLATES)}")
        return template
    if getattr(tokenizer, "chat_template", None):
        return "chat"
    raise NoChatTemplate(f"{what}: the tokenizer has no chat template; name the prompt format explicitly: "
                         f"template: reference (the DeRTa training format), plain or raw")
