"""The ``derta eval`` config: one YAML file, checked up front, errors naming the key.

Top-level keys are the fields of :class:`EvalConfig` (``derta eval --help`` lists them); the
nested sections are parsed into small spec dataclasses by :meth:`EvalConfig.plan`, which runs
when the config is built, so a typo in ``attacks[3].params`` fails before any model is loaded.
``load_config`` prefixes every message with the file name, e.g.
``eval.yaml: key 'models[1]': missing 'spec'``.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

from ..attacks import ATTACKS, DEFAULT_SWEEP, PREBUILT, SWEEP_PARAMS
from ..attacks.questions import PLAIN_SET
from ..backends.base import Decoding
from ..backends.spec import SHORT_OPTIONS, ModelListError, ModelSpec, parse_models  # noqa: F401 - ModelSpec, SHORT_OPTIONS re-exported

#: Helpfulness task -> file name in the DeRTa test-set directory.
HELPFULNESS_SETS = {"gsm8k": "helpfulness_gsm8k_500", "mmlu": "helpfulness_mmlu_500", "alpaca_eval": "helpfulness_alpaca_eval_300"}
#: Helpfulness tasks without a DeRTa file: their questions come from ``helpfulness.files``.
#: ``qa``: short questions with one right answer (``answer``, alternatives separated by "|").
FILE_ONLY_TASKS = ("qa",)
EXACT_TASKS = ("gsm8k", "mmlu", "qa")
#: Attacks whose prompts depend on the target model's answers (searched per model, cached).
SEARCH_ATTACKS = ("pair", "autodan", "gcg", "crescendo", "rank-prefill")
#: Attack parameters that name a model (a backend spec) rather than a value.
MODEL_PARAMS = {"pair": ("attacker", "scorer"), "autodan": ("scorer", "mutator"), "gcg": (), "crescendo": ("attacker", "scorer"), "rank-prefill": ()}
#: AutoDAN needs its scorer only for judge fitness (a target that is not an in-process HF model):
#: the attack says so when it is built against such a target.
REQUIRED_MODEL_PARAMS = {"pair": ("attacker", "scorer"), "autodan": (), "crescendo": ("attacker", "scorer")}
JUDGE_KEYS = ("name", "model", "options", "label")


class SpecError(ValueError):
    """A bad nested section; ``load_config`` adds the file name."""


def _where(key: str, msg: str) -> SpecError:
    return SpecError(f"key {key!r}: {msg}")


def _mapping(value: Any, key: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _where(key, f"expected a mapping, got {type(value).__name__}")
    return value


def _unknown(data: dict[str, Any], allowed: tuple[str, ...] | list[str], key: str) -> None:
    extra = sorted(set(data) - set(allowed))
    if extra:
        raise _where(key, f"unknown key(s) {', '.join(map(repr, extra))}; allowed: {', '.join(allowed)}")


def _str(value: Any, key: str, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value.strip():
        raise _where(key, f"expected a non-empty string, got {value!r}")
    return value


def _int(value: Any, key: str, optional: bool = True, minimum: int = 1) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _where(key, f"expected an integer >= {minimum}, got {value!r}")
    return value


@dataclass
class AttackSpec:
    """One attack column. ``label`` is the name written into records (``prefill-10``,
    ``jailbreakchat+prefill-20``); ``params`` may hold the composed ``prefill`` and ``samples``."""

    label: str
    base: str  # registry name, or the DeRTa prebuilt set's attack name
    params: dict[str, Any] = field(default_factory=dict)
    prebuilt: bool = False

    @property
    def searched(self) -> bool:
        return self.base in SEARCH_ATTACKS

    @property
    def prefill(self) -> int:
        """Harmful-response tokens prefilled on top of the attack's prompt (0: none)."""
        return int(self.params.get("prefill") or 0)

    @property
    def samples(self) -> int:
        """Prompts per question (k samples under a sampling decoding)."""
        return int(self.params.get("samples") or 1)

    @property
    def unprefilled(self) -> "AttackSpec":
        """The same attack without the prefill and the samples (what a searched attack searches)."""
        label = self.label.removesuffix(f"+prefill-{self.prefill}") if self.prefill else self.label
        params = {k: v for k, v in self.params.items() if k not in ("prefill", "samples")}
        return AttackSpec(label, self.base, params, self.prebuilt)


@dataclass
class JudgeSpec:
    """A safety judge: ``name`` from the registry (offline, keyword, llm, harmbench, llamaguard3,
    llamaguard4, wildguard, strongreject), ``model`` a backend spec for model judges, ``options`` the
    judge's own parameters (prompt_file, threshold, variant), ``max_new_tokens`` and backend keyword
    arguments, ``label`` the name its rows carry (default ``NAME:MODEL``)."""

    name: str
    model: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    label: str | None = None


@dataclass
class QuestionsSpec:
    """Harmful questions: a DeRTa directory + set names, or any file / HF dataset."""

    dir: str | None = None
    sets: list[str] = field(default_factory=lambda: [PLAIN_SET])
    file: str | None = None
    split: str = "train"
    limit: int | None = None
    harmful_responses: str | None = None  # rows with id or question + harmful_response (for prefill)


@dataclass
class HelpfulnessSpec:
    dir: str | None = None
    sets: list[str] = field(default_factory=list)  # gsm8k, mmlu, alpaca_eval (or name=FILE)
    files: dict[str, str] = field(default_factory=dict)  # task -> explicit file
    limit: int | None = None
    judge_model: str | None = None  # AlpacaEval's pairwise judge
    judge_options: dict[str, Any] = field(default_factory=dict)
    reference: str | None = None  # JSONL with id/question/instruction + output/response
    reference_model: str | None = None  # or a backend spec that writes the reference answers
    reference_options: dict[str, Any] = field(default_factory=dict)


@dataclass
class OverRefusalSpec:
    """Benign questions that sound harmful. ``sets``: ``own`` (derta's set, or ``file``) and/or
    ``xstest`` (XSTest's 250 safe + 200 unsafe contrast prompts, from ``data_dir`` or downloaded);
    ``limit`` caps each set (XSTest's types taken in turn)."""

    SETS = ("own", "xstest")  # no annotation: a class constant, not a config key

    enabled: bool = True
    sets: list[str] = field(default_factory=lambda: ["own"])
    file: str | None = None  # the own set: default derta's benign-but-scary set
    data_dir: str | None = None  # the data directory holding xstest/ (default: $DERTA_DATA, ../shared/data)
    limit: int | None = None
    judge_model: str | None = None  # optional LLM refusal judge beside the phrase detector (XSTest: its 3-way classifier)
    judge_options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Plan:
    models: list[ModelSpec]
    questions: QuestionsSpec
    attacks: list[AttackSpec]
    judges: list[JudgeSpec]
    helpfulness: HelpfulnessSpec
    over_refusal: OverRefusalSpec
    decoding: Decoding


def _attacks(items: list[Any]) -> list[AttackSpec]:
    """The attack columns. Besides ``name``, ``params``, ``sweep`` and ``prebuilt`` an entry may set
    ``prefill: N`` (or ``params: {prefill: N}``, or the name ``NAME+prefill-N``): any attack's
    prompt with the assistant turn started by N harmful tokens, column ``NAME+prefill-N``;
    ``prefill_sweep: [5, 10, ...]``: one such column per depth (0: the attack alone); and
    ``samples: k`` (or in ``params``): k prompts per question, for a sampling decoding."""
    from ..attacks import SWEEP_MEMBER, split_prefill

    def ints(value: Any, where: str, minimum: int) -> list[int]:
        if not isinstance(value, list) or not value or not all(isinstance(v, int) and not isinstance(v, bool) and v >= minimum for v in value):
            raise _where(where, f"expected a list of integers >= {minimum}, got {value!r}")
        return value

    def depths(data: dict[str, Any], params: dict[str, Any], name: str, key: str) -> tuple[str, list[int]]:
        """The entry's name without a ``+prefill-N`` suffix, and its prefill depths (0: none)."""
        name, suffix = split_prefill(name)
        given = {f"{key}.name": suffix, f"{key}.prefill": data.get("prefill"), f"{key}.params.prefill": params.pop("prefill", None),
                 f"{key}.prefill_sweep": data.get("prefill_sweep")}
        given = {k: v for k, v in given.items() if v is not None}
        if len(given) > 1:
            raise _where(list(given)[1], f"the prefill depth is given more than once ({', '.join(given)}); give it once")
        if not given:
            return name, [0]
        where, value = next(iter(given.items()))
        if where.endswith("prefill_sweep"):
            return name, ints(value, where, 0)
        _int(value, where, optional=False, minimum=0)
        return name, [value]

    out: list[AttackSpec] = []
    for i, item in enumerate(items):
        key = f"attacks[{i}]"
        data = {"name": item} if isinstance(item, str) else dict(_mapping(item, key))
        _unknown(data, ("name", "params", "sweep", "prebuilt", "prefill", "prefill_sweep", "samples"), key)
        name = _str(data.get("name"), f"{key}.name")
        params = dict(_mapping(data.get("params"), f"{key}.params"))
        name, prefills = depths(data, params, name, key)
        if "samples" in data:
            if "samples" in params:
                raise _where(f"{key}.samples", "given twice (here and in params); give it once")
            params["samples"] = data["samples"]
        if "samples" in params:
            _int(params["samples"], f"{key}.samples" if "samples" in data else f"{key}.params.samples", optional=False)
        if "prefill_tokenizer" in params:
            raise _where(f"{key}.params.prefill_tokenizer", "the prefill is cut with the tokenizer of the model under evaluation; remove it")
        prebuilt = bool(data.get("prebuilt", False)) or name.endswith("-prebuilt")
        base = name.removesuffix("-prebuilt")
        cols: list[AttackSpec] = []
        m = re.fullmatch(SWEEP_MEMBER, base)
        if prebuilt:
            if base not in PREBUILT:
                raise _where(f"{key}.name", f"no prebuilt DeRTa prompts for {base!r} (have: {', '.join(PREBUILT)})")
            cols.append(AttackSpec(f"{base}-prebuilt", base, params, prebuilt=True))
        elif m and m.group(1) in SWEEP_PARAMS:
            cols.append(AttackSpec(base, m.group(1), {**params, SWEEP_PARAMS[m.group(1)]: int(m.group(2))}))
        elif base not in ATTACKS:
            raise _where(f"{key}.name", f"unknown attack {base!r} (have: {', '.join(ATTACKS)}, NAME-prebuilt for {', '.join(PREBUILT)}, prefill-N, NAME+prefill-N)")
        elif base in SWEEP_PARAMS and SWEEP_PARAMS[base] not in params:
            sweep = ints(data.get("sweep", list(DEFAULT_SWEEP)), f"{key}.sweep", 0)
            cols += [AttackSpec(f"{base}-{v}", base, {**params, SWEEP_PARAMS[base]: v}) for v in sweep]
        else:
            fields = {f.name for f in dataclasses.fields(ATTACKS[base])}
            bad = sorted(set(params) - fields)
            if bad:
                raise _where(f"{key}.params", f"attack {base!r} has no parameter(s) {', '.join(map(repr, bad))} (has: {', '.join(sorted(fields))})")
            for p in MODEL_PARAMS.get(base, ()):
                if p in params and not isinstance(params[p], str):
                    raise _where(f"{key}.params.{p}", "expected a backend spec string, e.g. openai:gpt-4o-mini")
            for p in REQUIRED_MODEL_PARAMS.get(base, ()):
                if p not in params:
                    raise _where(f"{key}.params.{p}", f"attack {base!r} needs {p!r}: a backend spec (the target is the model under evaluation)")
            if "target" in params:
                raise _where(f"{key}.params.target", "the target is always the model under evaluation; remove it")
            if "target" in fields and base not in SEARCH_ATTACKS:
                raise _where(f"{key}.name", f"attack {base!r} needs the model under evaluation as its target, which derta eval does not give it")
            cols.append(AttackSpec(base, base, params))
        family = cols[0].base
        if any(prefills) and not cols[0].prebuilt and getattr(ATTACKS.get(family), "prefills", False):
            raise _where(f"{key}.prefill", f"attack {family!r} fills the assistant turn itself; it takes no prefill on top (set its own depth)")
        out += [AttackSpec(f"{c.label}+prefill-{d}", c.base, {**c.params, "prefill": d}, c.prebuilt) if d else c for c in cols for d in prefills]
    labels = [a.label for a in out]
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise _where("attacks", f"attack(s) listed twice: {', '.join(dup)}")
    return out


def _judges(items: list[Any]) -> list[JudgeSpec]:
    from ..judges import JUDGES, MODEL_JUDGES, build_judge

    out, names = [], []
    for i, item in enumerate(items):
        key = f"judges[{i}]"
        if isinstance(item, str):
            name, _, model = item.partition("=")
            data: dict[str, Any] = {"name": name, "model": model or None}
        else:
            data = dict(_mapping(item, key))
        _unknown(data, JUDGE_KEYS, key)
        name = _str(data.get("name"), f"{key}.name")
        if name not in JUDGES:
            raise _where(f"{key}.name", f"unknown judge {name!r} (have: {', '.join(JUDGES)})")
        model = _str(data.get("model"), f"{key}.model", optional=True)
        if name in MODEL_JUDGES and not model:
            raise _where(f"{key}.model", f"judge {name!r} needs a model: a backend spec such as openai:gpt-4o")
        if name not in MODEL_JUDGES and model:
            raise _where(f"{key}.model", f"judge {name!r} takes no model")
        spec = JudgeSpec(name, model, dict(_mapping(data.get("options"), f"{key}.options")), _str(data.get("label"), f"{key}.label", optional=True))
        try:  # builds no model: checks the options (a rubric file, a threshold) before anything runs
            judge = build_judge(spec.name, spec.model, spec.options, label=spec.label)
        except (TypeError, ValueError) as e:
            raise _where(f"{key}.options", str(e)) from None
        if judge.name in names:
            raise _where(key, f"two judges are named {judge.name!r}; give one a 'label'")
        names.append(judge.name)
        out.append(spec)
    if not out:
        raise _where("judges", "list at least one judge (e.g. offline)")
    return out


def _questions(data: dict[str, Any]) -> QuestionsSpec:
    _unknown(data, [f.name for f in dataclasses.fields(QuestionsSpec)], "questions")
    q = QuestionsSpec(**data)
    if not q.dir and not q.file:
        raise _where("questions", "give 'dir' (a DeRTa test-set directory) or 'file' (JSONL/JSON/CSV or hf:DATASET)")
    if q.dir and q.file:
        raise _where("questions", "give 'dir' or 'file', not both")
    if not isinstance(q.sets, list) or not q.sets or not all(isinstance(s, str) for s in q.sets):
        raise _where("questions.sets", f"expected a list of set names, got {q.sets!r}")
    _int(q.limit, "questions.limit")
    return q


def _helpfulness(data: dict[str, Any], qdir: str | None) -> HelpfulnessSpec:
    _unknown(data, [f.name for f in dataclasses.fields(HelpfulnessSpec)], "helpfulness")
    h = HelpfulnessSpec(**data)
    h.dir = h.dir or qdir
    if not isinstance(h.sets, list):
        raise _where("helpfulness.sets", f"expected a list, got {h.sets!r}")
    for i, s in enumerate(h.sets):
        if s not in HELPFULNESS_SETS and s not in FILE_ONLY_TASKS:
            raise _where(f"helpfulness.sets[{i}]", f"unknown task {s!r} (have: {', '.join([*HELPFULNESS_SETS, *FILE_ONLY_TASKS])})")
        if s in FILE_ONLY_TASKS and s not in h.files:
            raise _where(f"helpfulness.files.{s}", f"task {s!r} needs a file of {{question, answer}} rows (helpfulness.files.{s})")
        if s not in h.files and not h.dir:
            raise _where("helpfulness.dir", f"task {s!r} needs the DeRTa test-set directory (or helpfulness.files.{s})")
    _int(h.limit, "helpfulness.limit")
    if "alpaca_eval" in h.sets:
        if not h.judge_model:
            raise _where("helpfulness.judge_model", "alpaca_eval needs an LLM judge model (a backend spec)")
        if bool(h.reference) == bool(h.reference_model):
            raise _where("helpfulness.reference", "alpaca_eval needs reference answers: give 'reference' (a file) or 'reference_model' (a backend spec)")
    return h


def _over_refusal(data: dict[str, Any] | None) -> OverRefusalSpec:
    if data is None:
        return OverRefusalSpec(enabled=False)
    _unknown(data, [f.name for f in dataclasses.fields(OverRefusalSpec)], "over_refusal")
    if isinstance(data.get("sets"), str):  # `sets: xstest` reads as one set
        data = {**data, "sets": [data["sets"]]}
    o = OverRefusalSpec(**data)
    if not isinstance(o.sets, list) or not o.sets:
        raise _where("over_refusal.sets", f"expected a list of set names ({', '.join(o.SETS)}), got {o.sets!r}")
    for i, s in enumerate(o.sets):
        if s not in o.SETS:
            raise _where(f"over_refusal.sets[{i}]", f"unknown over-refusal set {s!r} (have: {', '.join(o.SETS)})")
    if len(set(o.sets)) < len(o.sets):
        raise _where("over_refusal.sets", f"a set is listed twice: {o.sets!r}")
    if o.file and "own" not in o.sets:
        raise _where("over_refusal.file", "'file' replaces derta's own set: list 'own' in over_refusal.sets too")
    _str(o.data_dir, "over_refusal.data_dir", optional=True)
    _int(o.limit, "over_refusal.limit")
    return o


@dataclass
class EvalConfig:
    """``derta eval`` settings; see examples/eval_hf.yaml and examples/eval_openai.yaml."""

    models: list[Any] = field(default_factory=list, metadata={"help": "models: [SPEC, NAME=SPEC or {name, spec: hf:PATH|vllm:NAME|openai:NAME, template, options}]"})
    questions: dict[str, Any] = field(default_factory=dict, metadata={"help": "{dir, sets, limit} or {file, limit}; harmful_responses for prefill"})
    attacks: list[Any] = field(default_factory=lambda: ["direct"], metadata={"help": "attack names, NAME-prebuilt, {name: prefill, sweep: [5, 10, 20, 40]}"})
    judges: list[Any] = field(default_factory=lambda: ["offline"], metadata={"help": "offline, keyword, NAME=SPEC, {name: strongreject, model: SPEC, options: {threshold: 0.5}, label}"})
    helpfulness: dict[str, Any] = field(default_factory=dict, metadata={"help": "{sets: [gsm8k, mmlu, alpaca_eval, qa], files: {qa: FILE}, limit, judge_model, reference}"})
    over_refusal: dict[str, Any] | None = field(default_factory=dict, metadata={"help": "{limit, file, judge_model}; null turns it off"})
    decoding: dict[str, Any] = field(default_factory=dict, metadata={"help": "max_new_tokens, temperature, top_p, seed, stop"})
    out: str = field(default="runs/eval", metadata={"help": "run directory"})
    seed: int = field(default=0, metadata={"help": "seed of attacks and decoding"})
    batch_size: int | None = field(default=None, metadata={"help": "prompts per generation call, at most this many lost to a crash (default: the backend's own, else 64)"})
    judge_batch_size: int = field(default=64, metadata={"help": "items per judge call"})
    examples: int = field(default=2, metadata={"help": "example responses per attack and model in the summary"})
    calibration: str | None = field(default=None, metadata={"help": "a derta judge-eval --calibration-out file: ASR corrected for the judges' measured error (default: the calibration a judge ships, e.g. offline)"})
    progress: bool = field(default=True, metadata={"help": "progress bars"})

    def __post_init__(self) -> None:
        self.plan()  # validate now, so errors come with the file name and before any model loads

    def plan(self) -> Plan:
        from ..backends.base import BACKENDS

        try:  # the models: syntax shared with derta deception (derta.backends.spec)
            models = parse_models(self.models, kinds=BACKENDS)
        except ModelListError as e:
            raise _where(e.key, e.msg) from None
        attacks = _attacks(self.attacks if isinstance(self.attacks, list) else [self.attacks])
        # without attacks (a helpfulness-only run) no harmful questions are needed
        questions = _questions(dict(_mapping(self.questions, "questions"))) if attacks or self.questions else QuestionsSpec()
        for a in attacks:
            if a.prebuilt and not questions.dir:
                raise _where("attacks", f"{a.label} reads the DeRTa test-set directory: set questions.dir")
        judges = _judges(self.judges if isinstance(self.judges, list) else [self.judges])
        helpfulness = _helpfulness(dict(_mapping(self.helpfulness, "helpfulness")), questions.dir)
        over = _over_refusal(None if self.over_refusal is None else dict(_mapping(self.over_refusal, "over_refusal")))
        dec = dict(_mapping(self.decoding, "decoding"))
        _unknown(dec, [f.name for f in dataclasses.fields(Decoding)], "decoding")
        dec.setdefault("seed", self.seed)
        try:
            decoding = Decoding(**dec)
        except (TypeError, ValueError) as e:
            raise _where("decoding", str(e)) from None
        for a in attacks:
            if a.samples > 1 and decoding.greedy:
                raise _where("decoding.temperature", f"{a.label} draws {a.samples} samples per prompt: set a temperature > 0 (greedy samples are all alike)")
        for name in ("batch_size", "judge_batch_size"):
            _int(getattr(self, name), name)
        return Plan(models, questions, attacks, judges, helpfulness, over, decoding)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
