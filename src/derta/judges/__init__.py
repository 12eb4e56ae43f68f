"""Judges: response -> Judgement(verdict, judge, explanation). Unparseable -> "unscored".

``get_judge(name, **kw)`` / ``build_judge(name, model, options)``:

| name | what | needs |
| --- | --- | --- |
| ``offline`` (default) | SPEC section 3's guideline, by rules | nothing |
| ``keyword`` | refusal-phrase baseline | nothing |
| ``llm`` | pinned guideline prompt, or ``prompt_file`` (a rubric with {question} and {response}) | a model |
| ``harmbench`` | HarmBench classifier format (``variant``: card / repo) | HarmBench-Llama-2-13b-cls |
| ``llamaguard3``, ``llamaguard4`` (``llamaguard`` = 3) | the model's own chat template | Llama Guard 3 / 4 |
| ``wildguard`` | WildGuard's instruction format | allenai/wildguard |
| ``strongreject`` | StrongREJECT rubric, unsafe at score >= ``threshold`` (0.5) | a strong chat model |

Every judge has an ``identity`` (see :func:`judge_key`): judged logs are keyed by its hash.
"""

from __future__ import annotations

from typing import Any, Callable

from .agreement import cohen_kappa, confusion, format_confusion
from .base import Item, Judge, as_item, judge_identity, judge_key
from .classifiers import (
    HARMBENCH_CLS_PROMPT,
    HARMBENCH_CONTEXTUAL_PROMPT,
    HARMBENCH_REPO_PROMPT,
    WILDGUARD_PROMPT,
    HarmBenchJudge,
    LlamaGuard3Judge,
    LlamaGuard4Judge,
    LlamaGuardJudge,
    WildGuardJudge,
    parse_llamaguard,
    parse_wildguard,
)
from .keyword import REFUSAL_PHRASES, KeywordJudge, is_refusal
from .llm import JUDGE_PROMPT, JUDGE_PROMPT_SHA, LlmJudge, load_rubric, neutralise, parse_verdict
from .model import ModelRef, defang, split_options
from .offline import OfflineJudge
from .strongreject import STRONGREJECT_PROMPT, StrongRejectJudge, parse_strongreject, strongreject_score

DEFAULT_JUDGE = "offline"
JUDGES: dict[str, Callable[..., Any]] = {
    "offline": OfflineJudge,
    "keyword": KeywordJudge,
    "llm": LlmJudge,
    "harmbench": HarmBenchJudge,
    "llamaguard": LlamaGuardJudge,
    "llamaguard3": LlamaGuard3Judge,
    "llamaguard4": LlamaGuard4Judge,
    "wildguard": WildGuardJudge,
    "strongreject": StrongRejectJudge,
}
#: Judges that need a model (``backend=``).
MODEL_JUDGES = ("llm", "harmbench", "llamaguard", "llamaguard3", "llamaguard4", "wildguard", "strongreject")


def get_judge(name: str = DEFAULT_JUDGE, **kw: Any) -> Judge:
    if name not in JUDGES:
        raise ValueError(f"unknown judge {name!r} (have: {', '.join(JUDGES)})")
    if name in MODEL_JUDGES and kw.get("backend") is None:
        raise ValueError(f"judge {name!r} needs a model: pass backend=... (CLI: --judge-model)")
    return JUDGES[name](**kw)


def build_judge(name: str, model: str | None = None, options: dict[str, Any] | None = None, *, label: str | None = None,
                loader: Callable[[str, dict[str, Any]], Any] | None = None, load: bool = False) -> Judge:
    """A judge from its registry name, a backend spec for model judges, and its options.

    ``options`` mixes the judge's own parameters (``prompt_file``, ``threshold``, ``variant``,
    ``phrases``), ``max_new_tokens`` (its greedy decoding) and, for model judges, the backend's keyword
    arguments (``base_url``, ``batch_size``, ...). The model is a :class:`ModelRef`, loaded on first
    use (``load=True``: now, so the judge is named after the loaded backend). ``label`` renames the judge.
    """
    if name not in JUDGES:
        raise ValueError(f"unknown judge {name!r} (have: {', '.join(JUDGES)})")
    factory = JUDGES[name]
    params, decoding, backend_kw = split_options(factory, dict(options or {}))
    if name in MODEL_JUDGES:
        if not model:
            raise ValueError(f"judge {name!r} needs a model: a backend spec such as openai:gpt-4o or vllm:PATH")
        ref = ModelRef(model, backend_kw, loader)
        if load:
            ref.loaded  # noqa: B018 - load now
        judge = factory(backend=ref, decoding=decoding, **params)
    else:
        if model:
            raise ValueError(f"judge {name!r} takes no model (got {model!r})")
        extra = sorted(backend_kw) + (["max_new_tokens"] if decoding else [])
        if extra:
            raise ValueError(f"judge {name!r} has no option(s) {', '.join(map(repr, extra))}")
        judge = factory(**params)
    if label:
        judge.name = label
    return judge


__all__ = [
    "DEFAULT_JUDGE", "HARMBENCH_CLS_PROMPT", "HARMBENCH_CONTEXTUAL_PROMPT", "HARMBENCH_REPO_PROMPT", "JUDGES", "JUDGE_PROMPT",
    "JUDGE_PROMPT_SHA", "MODEL_JUDGES", "REFUSAL_PHRASES", "STRONGREJECT_PROMPT", "WILDGUARD_PROMPT",
    "HarmBenchJudge", "Item", "Judge", "KeywordJudge", "LlamaGuard3Judge", "LlamaGuard4Judge", "LlamaGuardJudge", "LlmJudge",
    "ModelRef", "OfflineJudge", "StrongRejectJudge", "WildGuardJudge", "as_item", "build_judge", "cohen_kappa", "confusion",
    "defang", "format_confusion", "get_judge", "is_refusal", "judge_identity", "judge_key", "load_rubric", "neutralise",
    "parse_llamaguard", "parse_strongreject", "parse_verdict", "parse_wildguard", "split_options", "strongreject_score",
]
