"""Special and refusal tokens, looked up in the tokenizer by string (never hard-coded ids)."""

from __future__ import annotations

from typing import Any

DEFAULT_REFUSAL_WORD = "Sorry"


class TokenLookupError(ValueError):
    """A token the method needs does not exist (as a single token) in this tokenizer."""


def _encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def vocab_token_id(tokenizer: Any, token: str) -> int:
    """The id of a vocabulary entry given as it is stored (e.g. ``"ĠSorry"`` or ``"▁Sorry"``)."""
    vocab = tokenizer.get_vocab()
    if token not in vocab:
        near = sorted(t for t in vocab if token.strip("Ġ▁ ").lower() in t.lower())[:8]
        raise TokenLookupError(f"token {token!r} is not in the tokenizer's vocabulary; entries that look alike: {near}")
    return int(vocab[token])


def single_token_id(tokenizer: Any, text: str) -> int | None:
    """The id if ``text`` encodes to exactly one token, else None."""
    ids = _encode(tokenizer, text)
    return ids[0] if len(ids) == 1 else None


def refusal_token_id(tokenizer: Any, word: str = DEFAULT_REFUSAL_WORD, token: str | None = None) -> int:
    """The transition token that RTO trains towards at every harmful position.

    ``token`` (a vocabulary entry such as ``"ĠSorry"``) wins when given. Otherwise ``word`` is
    looked up in two forms: with a leading space first (the form a refusal takes in the middle of a
    response, where nearly all RTO positions are), then bare. A clear error names both encodings
    when neither is a single token.
    """
    if token is not None:
        return vocab_token_id(tokenizer, token)
    if not word or not word.strip():
        raise TokenLookupError("the refusal word is empty")
    word = word.strip()
    for form in (" " + word, word):
        tid = single_token_id(tokenizer, form)
        if tid is not None:
            return tid
    spaced = tokenizer.convert_ids_to_tokens(_encode(tokenizer, " " + word))
    bare = tokenizer.convert_ids_to_tokens(_encode(tokenizer, word))
    raise TokenLookupError(
        f"refusal word {word!r} is not a single token in this tokenizer "
        f"({' ' + word!r} -> {spaced}, {word!r} -> {bare}); choose another word with --refusal-word "
        f"or a vocabulary entry with --refusal-token"
    )


def eos_text(tokenizer: Any) -> str:
    """The end-of-text token as a string (what ends a plain-template response)."""
    if tokenizer.eos_token is None:
        raise TokenLookupError("the tokenizer has no eos_token; set one (tokenizer.eos_token = ...) before training")
    return str(tokenizer.eos_token)


#: Words a refusal can open with, in order of preference (``choose_refusal_word``).
REFUSAL_WORD_CANDIDATES = ("Sorry", "Unfortunately", "Apologies", "No")


def choose_refusal_word(tokenizer: Any, candidates: tuple[str, ...] = REFUSAL_WORD_CANDIDATES) -> str:
    """The first candidate whose leading-space form (" Sorry") is ONE token of ``tokenizer``.

    RTO trains that token at every harmful position and the harmful-prefix rows train what follows
    it, so safe responses written to start with this word give a refusal sentence after the
    transition. (SmolLM2's byte-level BPE splits " Sorry" into " Sor" + "ry": a bare "Sorry"
    target would be glued to the previous word; " Unfortunately" is one token there.)
    """
    for word in candidates:
        if single_token_id(tokenizer, " " + word.strip()) is not None:
            return word.strip()
    tried = {w: tokenizer.convert_ids_to_tokens(_encode(tokenizer, " " + w)) for w in candidates}
    raise TokenLookupError(f"none of the refusal words {list(candidates)} is a single token with a leading space: {tried}")
