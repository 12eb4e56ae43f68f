"""Recipes: safety triples -> training instances (stage 1 of data building; no tokenizer).

Each recipe is a registered function ``(triples, config) -> list[TrainingExample | PreferencePair]``.
Counting follows the paper: ``config.instances`` is the safety-instance budget N, and a DeRTa
triple yields two instances, so with the same N

| recipe          | instances                                   | triples used |
| --------------- | ------------------------------------------- | ------------ |
| vanilla         | N  (q -> r)                                  | N            |
| vanilla-half    | N/2 (q -> r)                                 | N/2          |
| harmful-prefix  | N  (q, h_<k -> r)                            | N            |
| rto             | N/2 RTO (q, h -> sorry at every step) + N/2 (q -> r) | N/2  |
| derta           | N/2 (q, h_<k -> r) + N/2 RTO                 | N/2          |
| dpo             | N pairs (chosen r, rejected h)               | N            |
| recovery        | N  (q, h_≤k -> r), k = 0 for about half      | N            |

(The reference implementation builds exactly these from the same first triples; ``recovery`` is
Qi et al.'s safety recovery augmentation, on the same budget.)
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from ..records import HarmfulPrefix, HelpfulExample, Message, PreferencePair, TrainingExample, Triple

Instance = TrainingExample | PreferencePair
RecipeFn = Callable[[list[Triple], "RecipeConfig"], list[Instance]]

RECIPES: dict[str, RecipeFn] = {}


def register(name: str) -> Callable[[RecipeFn], RecipeFn]:
    def deco(fn: RecipeFn) -> RecipeFn:
        RECIPES[name] = fn
        return fn

    return deco


@dataclass
class RecipeConfig:
    """How safety instances are built.

    instances: the safety-instance budget N (default: one per triple).
    style: "refusal" (``safe_response``) or "rebuttal" (``rebuttal_response``) as the safe target.
    prefix_unit: cut the harmful prefix in "tokens" (default) or "words".
    zero_share: probability that the harmful prefix is empty (k = 0); the reference uses 1/3.
    fixed_k: fix k now (reproduces the reference, needs ``count_units``) instead of resampling it
        every epoch at render time (the default).
    system: an optional system prompt placed before every query.
    rebuttal: for style "rebuttal", makes the rebuttal of a triple without ``rebuttal_response``
        (e.g. ``derta.deception.rebuttal.load_template("default").for_triple``); without it such
        a triple is an error.
    recovery_zero_share, recovery_max_k: the ``recovery`` recipe's sampling (Qi et al.): k = 0
        with probability 0.5, else k uniform in [1, min(100, |h|)] prefix units.
    """

    instances: int | None = None
    style: str = "refusal"
    prefix_unit: str = "tokens"
    zero_share: float = 1 / 3
    fixed_k: bool = False
    system: str = ""
    seed: int = 0
    count_units: Callable[[str], int] | None = None  # length of h in prefix units, for fixed_k
    rebuttal: Callable[[Triple], str] | None = None  # generates missing rebuttals (style "rebuttal")
    recovery_zero_share: float = 0.5
    recovery_max_k: int = 100

    def __post_init__(self) -> None:
        if self.style not in ("refusal", "rebuttal"):
            raise ValueError(f"style must be 'refusal' or 'rebuttal', got {self.style!r}")
        if self.prefix_unit not in ("tokens", "words"):
            raise ValueError(f"prefix_unit must be 'tokens' or 'words', got {self.prefix_unit!r}")
        if not 0.0 <= self.zero_share <= 1.0:
            raise ValueError(f"zero_share must be in [0, 1], got {self.zero_share}")
        if self.instances is not None and self.instances < 0:
            raise ValueError(f"instances must be >= 0, got {self.instances}")
        if not 0.0 <= self.recovery_zero_share <= 1.0:
            raise ValueError(f"recovery_zero_share must be in [0, 1], got {self.recovery_zero_share}")
        if self.recovery_max_k < 1:
            raise ValueError(f"recovery_max_k must be >= 1, got {self.recovery_max_k}")


def _budget(triples: list[Triple], cfg: RecipeConfig) -> int:
    n = len(triples) if cfg.instances is None else cfg.instances
    if n > len(triples):
        raise ValueError(f"a budget of {n} instances needs {n} triples, only {len(triples)} given")
    return n


def _messages(query: str, cfg: RecipeConfig) -> list[Message]:
    head = [Message("system", cfg.system)] if cfg.system else []
    return head + [Message("user", query)]


def safe_target(t: Triple, style: str, rebuttal: Callable[[Triple], str] | None = None) -> str:
    """The safe response in the chosen style; rebuttal style needs ``rebuttal_response`` or a
    ``rebuttal`` generator for the triples that lack one."""
    if style == "rebuttal":
        if not t.rebuttal_response and rebuttal is not None:
            return rebuttal(t)
        if not t.rebuttal_response:
            where = f"{t.metadata['source']}:{t.metadata.get('line')}: " if "source" in t.metadata else ""
            raise ValueError(f"{where}field 'rebuttal_response' is missing in triple {t.id or t.query[:40]!r} (needed by --style rebuttal)")
        return t.rebuttal_response
    return t.safe_response


def sample_k(n_units: int, zero_share: float, unit: str, rng: random.Random) -> int:
    """k = 0 with probability ``zero_share``, else uniform in [1, n] (tokens) / [1, n-1] (words).

    Words follow the reference (``randint(1, len(words) - 2)`` over a split that keeps the last
    word), i.e. never the whole response; a response too short for a cut gets k = 0.
    """
    if rng.random() < zero_share:
        return 0
    top = n_units if unit == "tokens" else n_units - 1
    return rng.randint(1, top) if top >= 1 else 0


def _example(t: Triple, i: int, cfg: RecipeConfig, recipe: str, *, objective: str, prefix: bool, rng: random.Random) -> TrainingExample:
    hp = None
    if prefix:
        k = None
        if cfg.fixed_k:
            n = cfg.count_units(t.harmful_response) if cfg.count_units else len(t.harmful_response.split())
            k = sample_k(n, cfg.zero_share, cfg.prefix_unit, rng)
        hp = HarmfulPrefix(text=t.harmful_response, unit=cfg.prefix_unit, k=k, zero_share=cfg.zero_share)  # type: ignore[arg-type]
    tid = t.id or f"triple-{i}"
    return TrainingExample(
        messages=_messages(t.query, cfg),
        target=t.harmful_response if objective == "rto" else safe_target(t, cfg.style, cfg.rebuttal),
        objective=objective,  # type: ignore[arg-type]
        harmful_prefix=hp,
        id=f"{tid}:{recipe}:{objective}{'+prefix' if prefix else ''}",
        source="safety",
        recipe=recipe,
        metadata={"triple_id": tid, "category": t.category, "style": cfg.style,
                  **({"rebuttal": "generated"} if cfg.style == "rebuttal" and not t.rebuttal_response and objective == "mle" else {})},
    )


@register("vanilla")
def vanilla(triples: list[Triple], cfg: RecipeConfig) -> list[Instance]:
    """Standard safety tuning: N (q -> r) pairs, loss on r."""
    rng = random.Random(cfg.seed)
    return [_example(t, i, cfg, "vanilla", objective="mle", prefix=False, rng=rng) for i, t in enumerate(triples[: _budget(triples, cfg)])]


@register("vanilla-half")
def vanilla_half(triples: list[Triple], cfg: RecipeConfig) -> list[Instance]:
    """"Vanilla-": half the budget of (q -> r) pairs."""
    rng = random.Random(cfg.seed)
    n = _budget(triples, cfg) // 2
    return [_example(t, i, cfg, "vanilla-half", objective="mle", prefix=False, rng=rng) for i, t in enumerate(triples[:n])]


@register("harmful-prefix")
def harmful_prefix(triples: list[Triple], cfg: RecipeConfig) -> list[Instance]:
    """RecAug: N (q, h_<k -> r) instances; k = 0 for a ``zero_share`` of them."""
    rng = random.Random(cfg.seed)
    return [_example(t, i, cfg, "harmful-prefix", objective="mle", prefix=True, rng=rng) for i, t in enumerate(triples[: _budget(triples, cfg)])]


@register("rto")
def rto(triples: list[Triple], cfg: RecipeConfig) -> list[Instance]:
    """RTO alone: N/2 RTO instances plus the vanilla (q -> r) pairs of the same triples."""
    rng = random.Random(cfg.seed)
    used = triples[: _budget(triples, cfg) // 2]
    return [_example(t, i, cfg, "rto", objective="rto", prefix=False, rng=rng) for i, t in enumerate(used)] + [
        _example(t, i, cfg, "rto", objective="mle", prefix=False, rng=rng) for i, t in enumerate(used)
    ]


@register("derta")
def derta(triples: list[Triple], cfg: RecipeConfig) -> list[Instance]:
    """DeRTa: each of N/2 triples gives a harmful-prefix MLE instance and an RTO instance."""
    rng = random.Random(cfg.seed)
    used = triples[: _budget(triples, cfg) // 2]
    return [_example(t, i, cfg, "derta", objective="mle", prefix=True, rng=rng) for i, t in enumerate(used)] + [
        _example(t, i, cfg, "derta", objective="rto", prefix=False, rng=rng) for i, t in enumerate(used)
    ]


@register("dpo")
def dpo(triples: list[Triple], cfg: RecipeConfig, helpful_pairs: list[PreferencePair] | None = None) -> list[Instance]:
    """DPO pairs: chosen = the safe response, rejected = the harmful response.

    ``helpful_pairs`` (the paper's helpfulness pairs: chosen = the reference answer, rejected = a
    weak model's answer; :func:`derta.data.formats.load_helpful_pairs`) are mixed in, shuffled with
    ``cfg.seed``; without them the safety pairs come in triple order.
    """
    safety: list[Instance] = [
        PreferencePair(
            messages=_messages(t.query, cfg),
            chosen=safe_target(t, cfg.style, cfg.rebuttal),
            rejected=t.harmful_response,
            id=f"{t.id or f'triple-{i}'}:dpo",
            metadata={"triple_id": t.id or f"triple-{i}", "category": t.category, "style": cfg.style,
                      **({"rebuttal": "generated"} if cfg.style == "rebuttal" and not t.rebuttal_response else {})},
        )
        for i, t in enumerate(triples[: _budget(triples, cfg)])
    ]
    if not helpful_pairs:
        return safety
    helpful: list[Instance] = []
    for i, h in enumerate(helpful_pairs):
        users = [m.content for m in h.messages if m.role == "user"]
        if len(users) != 1:
            raise ValueError(f"helpful pair {h.id or i + 1}: expected one user turn, got {len(users)}")
        hid = h.id or f"helpful-{i}"
        helpful.append(PreferencePair(messages=_messages(users[0], cfg), chosen=h.chosen, rejected=h.rejected, id=f"{hid}:dpo-helpful",
                                      source="helpful", metadata={"helpful_id": hid}))
    mixed = [*safety, *helpful]
    random.Random(cfg.seed).shuffle(mixed)
    return mixed


@register("recovery")
def recovery(triples: list[Triple], cfg: RecipeConfig) -> list[Instance]:
    """Qi et al.'s safety recovery: N (q, h_≤k -> r); k = 0 (the vanilla pair) with p = 0.5, else k ~ U[1, min(100, |h|)].

    Unlike harmful-prefix (RecAug), k never exceeds ``recovery_max_k`` units however long h is, half
    the rows are the plain (q -> r) pairs, and k is drawn here, once per row (as a fixed cut).
    """
    rng = random.Random(cfg.seed)
    out: list[Instance] = []
    for i, t in enumerate(triples[: _budget(triples, cfg)]):
        n = recovery_units(t.harmful_response, cfg)
        top = cfg.recovery_max_k if n is None else min(cfg.recovery_max_k, n)
        k = 0 if rng.random() < cfg.recovery_zero_share or top < 1 else rng.randint(1, top)
        ex = _example(t, i, cfg, "recovery", objective="mle", prefix=False, rng=rng)
        ex.harmful_prefix = HarmfulPrefix(text=t.harmful_response, unit=cfg.prefix_unit, k=k, zero_share=cfg.recovery_zero_share)  # type: ignore[arg-type]
        ex.id += "+prefix"
        ex.metadata["k_max"] = top
        out.append(ex)
    return out


def recovery_units(harmful: str, cfg: RecipeConfig) -> int | None:
    """|h| in prefix units for the recovery bound: words are counted here; tokens need
    ``cfg.count_units`` (a tokenizer). None: not counted, so k ~ U[1, recovery_max_k] and the
    renderer stops a longer cut at the end of h (Qi et al.'s sampling whenever |h| >= 100 tokens)."""
    if cfg.count_units is not None:
        return cfg.count_units(harmful)
    return len(harmful.split(" ")) if cfg.prefix_unit == "words" else None


def helpful_examples(helpful: list[HelpfulExample], cfg: RecipeConfig) -> list[TrainingExample]:
    """Benign instruction -> helpful response, plain MLE on the response."""
    return [
        TrainingExample(
            messages=_messages(h.query, cfg),
            target=h.response,
            id=f"{h.id or f'helpful-{i}'}:helpful",
            source="helpful",
            recipe="helpful",
            metadata={"helpful_id": h.id or f"helpful-{i}"},
        )
        for i, h in enumerate(helpful)
    ]


def build(
    recipe: str,
    triples: list[Triple],
    helpful: list[HelpfulExample] | None = None,
    cfg: RecipeConfig | None = None,
    helpful_ratio: float | None = None,
) -> list[Instance]:
    """Run a recipe and mix in helpfulness data, shuffled with ``cfg.seed``.

    ``helpful_ratio`` = helpful instances per safety instance (None: all helpful examples). DPO
    pairs are returned without helpful data (DPO runs on top of a tuned model).
    """
    cfg = cfg or RecipeConfig()
    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; choose from {', '.join(sorted(RECIPES))}")
    safety = RECIPES[recipe](triples, cfg)
    if triples and not safety:
        n = len(triples) if cfg.instances is None else cfg.instances
        raise ValueError(f"recipe {recipe!r} made no safety instances from a budget of {n}: {recipe} uses N/2 triples "
                         f"(each gives two instances), so give at least 2 triples or a larger --instances")
    rng = random.Random(cfg.seed)
    if recipe == "dpo":
        return safety
    benign = helpful_examples(helpful or [], cfg)
    if helpful_ratio is not None:
        if helpful_ratio < 0:
            raise ValueError(f"helpful_ratio must be >= 0, got {helpful_ratio}")
        want = round(helpful_ratio * len(safety))
        if want > len(benign):
            raise ValueError(f"helpful_ratio {helpful_ratio} asks for {want} helpful examples, only {len(benign)} given")
        benign = rng.sample(benign, want)
    mixed: list[Instance] = [*safety, *benign]
    rng.shuffle(mixed)
    return mixed


def unique_ids(instances: list[Instance]) -> list[Instance]:
    """``instances`` once no two share an id (a training file's ids name its rows uniquely; an
    in-memory list may repeat rows on purpose, e.g. the demo's upsampled helpful data)."""
    seen: dict[str, int] = {}
    for i, x in enumerate(instances):
        if x.id in seen:
            raise ValueError(f"two instances share the id {x.id!r} (rows {seen[x.id] + 1} and {i + 1}); give the inputs unique ids")
        seen[x.id] = i
    return instances
