"""Generation arms: prompts per second of :class:`derta.backends.hf.HFBackend` (greedy).

| arm | what |
| --- | --- |
| ``batched`` | the backend's defaults (``batch_size`` 8, token budget) over one call of all prompts |
| ``single`` | ``batch_size=1``: one prompt at a time |
| ``count`` | fixed batches of 8, no token budget |
| ``budget`` | at most 64 a batch, a token budget equal to the largest batch of ``count`` (same peak batch size in tokens) |
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from derta.records import AttackPrompt, Message


def chat_prompts(questions: list[str], n: int) -> list[AttackPrompt]:
    qs = (questions * (n // max(1, len(questions)) + 1))[:n]
    return [AttackPrompt(id=f"p{i}", question=q, attack="direct", messages=[Message("user", q)]) for i, q in enumerate(qs)]


def count_budget(backend: Any, prompts: list[AttackPrompt], batch_size: int, max_new_tokens: int) -> int:
    """Tokens (padded prompt + new) of the largest batch that fixed batches of ``batch_size`` make."""
    lengths = sorted((len(backend.render(p).ids) for p in prompts), reverse=True)
    return max(len(lengths[i : i + batch_size]) * (lengths[i] + max_new_tokens) for i in range(0, len(lengths), batch_size))


def generation_arms(model: Any, tokenizer: Any, prompts: list[AttackPrompt], max_new_tokens: int) -> tuple[dict[str, Callable[[bool], float]], dict[str, Any]]:
    """The arms (each returns prompts/s) and what they were run with."""
    from derta.backends.base import Decoding
    from derta.backends.hf import HFBackend

    decoding = Decoding(max_new_tokens=max_new_tokens)
    model.eval()
    backends = {
        "batched": HFBackend(model, tokenizer, progress=False),
        "single": HFBackend(model, tokenizer, batch_size=1, progress=False),
        "count": HFBackend(model, tokenizer, batch_size=8, token_budget=None, progress=False),
    }
    budget = count_budget(backends["count"], prompts, 8, max_new_tokens)
    backends["budget"] = HFBackend(model, tokenizer, batch_size=64, token_budget=budget, progress=False)

    def arm(backend: Any) -> Callable[[bool], float]:
        def run(warm: bool = False) -> float:
            batch = prompts[: backend.batch_size] if warm else prompts
            start = time.perf_counter()
            backend.complete(batch, decoding)
            return len(batch) / (time.perf_counter() - start)

        return run

    info = {"prompts": len(prompts), "max_new_tokens": max_new_tokens, "budget_arm_token_budget": budget,
            "batched_arm": {"batch_size": backends["batched"].batch_size, "token_budget": backends["batched"].token_budget}}
    return {name: arm(b) for name, b in backends.items()}, info
