"""Attacks: small factories ``attack(questions) -> list[AttackPrompt]``.

Each records its name, parameters and seed in every prompt. ``make_attack(name, **params)``
builds one from the registry; a sweep member such as ``prefill-10`` sets the attack's sweep
parameter from the name (``expand_sweep("prefill", [5, 10])`` lists those names), and a
``+prefill-N`` suffix (``jailbreakchat+prefill-20``) sets any attack's ``prefill``: its prompt
with the assistant turn started by N tokens of the harmful response.
"""

from __future__ import annotations

import re
from typing import Any

from .autodan import AutoDanAttack
from .base import Attack, DirectAttack, prefix_of, sample_copies, with_prefill
from .codeattack import CodeAttack, code_prompt
from .completion import CompletionAttack, Rewrite, rewrite_as_completion, second_person
from .crescendo import CrescendoAttack
from .gcg import GCGAttack
from .insertion import RandomInsertionAttack, RankPrefillAttack
from .pair import PairAttack, llm_scorer, parse_attacker, parse_rating
from .prefill import DEFAULT_SWEEP, PrefillAttack, cut_tokens, expand_sweep
from .questions import PREBUILT, load_prebuilt, load_questions
from .templated import JailbreakChatAttack, SelfCipherAttack, load_demonstrations, load_templates

ATTACKS: dict[str, type[Attack]] = {
    "direct": DirectAttack,
    "completion": CompletionAttack,
    "prefill": PrefillAttack,
    "codeattack": CodeAttack,
    "jailbreakchat": JailbreakChatAttack,
    "selfcipher": SelfCipherAttack,
    "pair": PairAttack,
    "autodan": AutoDanAttack,
    "gcg": GCGAttack,
    "crescendo": CrescendoAttack,
    "random-insertion": RandomInsertionAttack,
    "rank-prefill": RankPrefillAttack,
}
#: The parameter a "name-<int>" sweep member sets.
SWEEP_PARAMS = {"prefill": "n", "random-insertion": "n"}
#: ``NAME-N`` (a sweep member) and ``NAME+prefill-N`` (any attack, prefilled N deep).
SWEEP_MEMBER = re.compile(r"(?P<base>[a-z][a-z-]*?)-(?P<value>\d+)")
PREFILLED = re.compile(r"(?P<base>.+)\+prefill-(?P<value>\d+)")


def split_prefill(name: str) -> tuple[str, int | None]:
    """``("jailbreakchat", 20)`` for ``jailbreakchat+prefill-20``; ``(name, None)`` without the suffix."""
    m = PREFILLED.fullmatch(name)
    return (m.group("base"), int(m.group("value"))) if m else (name, None)


def make_attack(name: str, **params: Any) -> Attack:
    """An attack from the registry; ``prefill-10`` means ``prefill`` with ``n=10``, and
    ``direct+prefill-20`` means ``direct`` with ``prefill=20``."""
    name, depth = split_prefill(name)
    if depth is not None:
        if "prefill" in params and params["prefill"] != depth:
            raise ValueError(f"attack {name}+prefill-{depth}: prefill is given twice ({depth} and {params['prefill']!r})")
        params = {**params, "prefill": depth}
    m = SWEEP_MEMBER.fullmatch(name)
    if m and m.group("base") in SWEEP_PARAMS:
        name = m.group("base")
        params = {**params, SWEEP_PARAMS[name]: int(m.group("value"))}
    if name not in ATTACKS:
        raise ValueError(f"unknown attack {name!r} (have: {', '.join(ATTACKS)}; sweeps: {', '.join(f'{k}-N' for k in SWEEP_PARAMS)})")
    try:
        attack = ATTACKS[name](**params)
    except TypeError as e:  # an unknown parameter: say which the attack takes
        import dataclasses

        names = [f.name for f in dataclasses.fields(ATTACKS[name])]
        raise ValueError(f"attack {name!r}: {e} (parameters: {', '.join(names)})") from None
    attack.check()
    return attack


__all__ = [
    "ATTACKS", "DEFAULT_SWEEP", "PREBUILT", "SWEEP_PARAMS", "Attack", "AutoDanAttack", "CodeAttack", "CompletionAttack", "CrescendoAttack", "GCGAttack",
    "DirectAttack", "JailbreakChatAttack", "PairAttack", "PrefillAttack", "RandomInsertionAttack", "RankPrefillAttack", "Rewrite",
    "SelfCipherAttack", "code_prompt", "cut_tokens", "expand_sweep", "llm_scorer", "load_demonstrations", "load_prebuilt",
    "load_questions", "load_templates", "make_attack", "parse_attacker", "parse_rating", "prefix_of", "rewrite_as_completion",
    "sample_copies", "second_person", "split_prefill", "with_prefill",
]
