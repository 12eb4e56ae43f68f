"""``derta eval``: models x attacks x judges (+ helpfulness, over-refusal) into one run directory.

    RUN_DIR/config.yaml         the config as run (overrides applied)
    RUN_DIR/run.json            config, environment, seed, decoding, models, status, history
    RUN_DIR/generations.jsonl   the resumable generation log (derta.generate), + .meta.json sidecar
    RUN_DIR/attack_prompts.jsonl  PAIR / AutoDAN search results per model (when those attacks run)
    RUN_DIR/judged.jsonl        one row per (model, attack, prompt_id, judge), resumable
    RUN_DIR/summary.json        derta.eval.analyse's summary of the judged rows

Rerunning the same command continues an interrupted run: finished generations and judgements
are reused, missing ones are made, nothing is written twice. A model is known by its name and
its identity (:func:`derta.backends.spec.model_identity`: spec, template, options, the content of a
local checkpoint; recorded in run.json): one changed under the same name generates and is judged
again, its new records appended beside the old. A run directory holds one decoding config;
models, attacks and judges may be added to it later (the summary covers what the config now lists). Models are loaded one at a time and only when something is left to generate; judge
models only after all generation, and only when something is left to judge.
"""

from __future__ import annotations

import logging
import random
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable


from ..backends.base import Decoding, complete, free_memory, load_backend
from ..backends.spec import identity_id, model_identity
from ..generate import decoding_id, read_generations, run_generation, written_by
from ..io import environment, write_json, write_yaml
from ..judges.base import judge_identity, judge_key
from ..records import AttackPrompt, Generation
from .analyse import analyse
from .config import EXACT_TASKS, EvalConfig, JudgeSpec, ModelSpec, Plan
from .judging import (
    JUDGED_FILE, ExactScorer, HarmScorer, LlmRefusalScorer, PairwiseScorer, RefusalScorer, judge_generations, kind,
)
from .pairwise import PairwiseJudge
from .prompts import attack_prompts, helpfulness_prompts, load_harmful, load_references, over_refusal_prompts

log = logging.getLogger(__name__)

RUN_FORMAT = "derta.eval-run/1"
GENERATIONS_FILE = "generations.jsonl"
#: Backend kinds that take ``progress=`` (the eval draws its own bars).
_PROGRESS_KINDS = ("hf", "vllm", "openai")
#: Backend kinds without a tokenizer (prefill counts words; refusal positions are in words).
NO_TOKENIZER = ("openai", "scripted")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _backend(spec: str, options: dict[str, Any], template: str | None = None) -> Any:
    kw = dict(options)
    kind_ = spec.partition(":")[0]
    if template is not None:
        kw["template"] = template
    if kind_ in _PROGRESS_KINDS:
        kw.setdefault("progress", False)
    return load_backend(spec, **kw)


def _judge_decoding(options: dict[str, Any]) -> tuple[dict[str, Any], Decoding]:
    """Judges decode greedily; ``max_new_tokens`` may be set among a judge's options."""
    opts = dict(options)
    return opts, Decoding(max_new_tokens=int(opts.pop("max_new_tokens", 512)), temperature=0.0)


class LazyBackend:
    """A model backend loaded on first real use.

    Building prompts needs only the tokenizer (prefill cuts, refusal tokens), which for ``hf:`` and
    ``vllm:`` specs is loaded on its own; so a resumed run whose generations are all logged never
    loads the model weights again.
    """

    def __init__(self, spec: str, options: dict[str, Any], template: str | None = None):
        self.spec, self.options, self.template_name = spec, options, template
        self._backend: Any = None
        self._tokenizer: Any = None

    @property
    def loaded(self) -> Any:
        if self._backend is None:
            self._backend = _backend(self.spec, self.options, self.template_name)
        return self._backend

    @property
    def tokenizer(self) -> Any:
        if self._backend is not None:
            return getattr(self._backend, "tokenizer", None)
        kind, _, arg = self.spec.partition(":")
        if kind in NO_TOKENIZER:
            return None
        if kind not in ("hf", "vllm"):  # another registered kind: only the backend itself can tell
            return getattr(self.loaded, "tokenizer", None)
        if self._tokenizer is None:  # the same files the backend will load its tokenizer from
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(arg)
        return self._tokenizer

    def __getattr__(self, name: str) -> Any:  # name, complete, generate, call_size, ...: the real backend's
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.loaded, name)

    def free(self) -> None:
        backend, self._backend = self._backend, None
        if backend is not None:
            del backend
            free_memory()


class _ProgressBackend:
    """Counts finished prompts on a progress bar; everything else is the wrapped backend."""

    def __init__(self, backend: Any, bar: Any):
        self.backend, self.bar, self.name = backend, bar, backend.name

    def complete(self, prompts: list[AttackPrompt], decoding: Decoding | None = None) -> list[Any]:
        out = complete(self.backend, prompts, decoding)
        self.bar.update(len(prompts))
        return out

    def generate(self, prompts: list[AttackPrompt], decoding: Decoding | None = None) -> list[str]:
        return [c.text for c in self.complete(prompts, decoding)]


def generate(backend: Any, prompts: list[AttackPrompt], path: Path, model: str, decoding: Decoding, batch_size: int | None,
             progress: bool, model_id: str | None = None) -> list[Generation]:
    """run_generation with a progress bar over the prompts still to do (records of ``model`` as
    ``model_id`` identifies it: a model changed under the same name generates again)."""
    from tqdm.auto import tqdm

    dec_id = decoding_id(decoding)
    keys = {(p.attack, p.id) for p in prompts}
    logged = {(g.attack, g.prompt_id): g for g in read_generations(path) if written_by(g, model, dec_id, model_id)}
    done = set(logged) & keys
    if done == keys and all(_same(logged[(p.attack, p.id)], p) for p in prompts):
        return [logged[(p.attack, p.id)] for p in prompts]  # all logged: the model is not even loaded
    size = batch_size or getattr(backend, "call_size", None) or 64
    with tqdm(total=len(prompts), initial=len(done), disable=not progress, desc=f"generate {model}", unit="prompt") as bar:
        return run_generation(_ProgressBackend(backend, bar), prompts, path, model_name=model, decoding=decoding, batch_size=size,
                              metadata={"eval": True}, model_id=model_id)


def _same(g: Generation, p: AttackPrompt) -> bool:
    """A logged generation answers this very prompt (else run_generation reports the clash)."""
    return all(g.prompt.get(k) == v for k, v in p.to_dict().items() if k in ("messages", "text", "prefill"))


def _refusal_ids(backend: Any) -> list[int]:
    from ..analysis.refusal import refusal_token_ids

    tok = backend.tokenizer
    if tok is None:
        return []
    try:
        return sorted(refusal_token_ids(tok))
    except Exception as e:  # a tokenizer that cannot encode the words: count positions in words
        log.warning("no refusal token ids for %s (%s); refusal positions are counted in words", backend.spec, e)
        return []


def generate_model(m: ModelSpec, plan: Plan, cfg: EvalConfig, questions: list[Any], shared: list[AttackPrompt], out: Path,
                   run: dict[str, Any], tokenizers: dict[str, Any] | None = None) -> list[Generation]:
    backend = LazyBackend(m.spec, m.options, m.template)
    identity = m.identity()  # read before loading: what the weights are now
    mid = identity_id(identity)
    try:
        prompts = [p for a in plan.attacks for p in attack_prompts(a, questions, plan.questions, backend, m.name, cfg.seed, out, mid)]
        prompts += shared
        ids = _refusal_ids(backend)
        tok = backend.tokenizer
        if tokenizers is not None and tok is not None:
            tokenizers[m.name] = tok  # kept after the model is freed: refusal positions count its tokens
        run["models"][m.name] = {"spec": m.spec, "template": m.template, "model_id": mid, "identity": identity, "refusal_token_ids": ids,
                                 "refusal_tokens": tok.convert_ids_to_tokens(ids) if ids and tok is not None else [], "n_prompts": len(prompts)}
        gens = generate(backend, prompts, out / GENERATIONS_FILE, m.name, plan.decoding, cfg.batch_size, cfg.progress, mid)
        # requests that failed for good (API backends with on_error=record) are retried by a rerun
        run["models"][m.name]["missing"] = len(prompts) - len(gens)
        return gens
    finally:
        backend.free()


def references(plan: Plan, cfg: EvalConfig, shared: list[AttackPrompt], out: Path) -> dict[str, str]:
    """AlpacaEval reference answers by prompt id, from a file or generated by a reference model."""
    h = plan.helpfulness
    alpaca = [p for p in shared if p.attack == "alpaca_eval"]
    if not alpaca:
        return {}
    if h.reference:
        by_id, by_text = load_references(h.reference)
        found = {p.id: by_id.get(p.question_id) or by_id.get(p.id) or by_text.get(p.question.strip()) for p in alpaca}
        missing = [pid for pid, ans in found.items() if ans is None]
        if missing:
            raise ValueError(f"{h.reference}: no reference answer for {len(missing)} AlpacaEval item(s), e.g. {missing[0]!r} "
                             "(match by 'id' or by the instruction text in 'instruction' / 'question')")
        return {k: v for k, v in found.items() if v is not None}
    backend = LazyBackend(h.reference_model, h.reference_options)  # type: ignore[arg-type]
    mid = identity_id(model_identity(h.reference_model, h.reference_options))  # type: ignore[arg-type]
    try:
        gens = generate(backend, alpaca, out / GENERATIONS_FILE, f"reference:{h.reference_model}", plan.decoding, cfg.batch_size, cfg.progress, mid)
    finally:
        backend.free()
    return {g.prompt_id: g.response for g in gens}


class LazyScorer:
    """A scorer whose model is loaded on first use (nothing is loaded when all is already judged).

    ``identity`` is known without loading (the backend spec, prompt hash and decoding), so the
    judged log can be searched by the scorer's key before anything is built.
    """

    def __init__(self, name: str, applies: Callable[[Generation], bool], build: Callable[[], Any], identity: dict[str, Any] | None = None):
        self.name, self._applies, self._build, self._scorer = name, applies, build, None
        self.identity = identity

    def applies(self, g: Generation) -> bool:
        return self._applies(g)

    def score(self, gens: list[Generation]) -> list[dict[str, Any]]:
        if self._scorer is None:
            self._scorer = self._build()
        return self._scorer.score(gens)


def _lazy(name: str, applies: Callable[[Generation], bool], spec: str, options: dict[str, Any], make: Callable[[Any, Decoding], Any],
          kind_: str, prompt_sha: str, **extra: Any) -> LazyScorer:
    """A scorer built on first use from a backend spec (its options bound now, not at call time)."""
    from ..judges.model import ModelRef

    opts, dec = _judge_decoding(options)
    identity = {"name": name, "kind": kind_, "model": ModelRef(spec, opts).identity, "prompt_sha256": prompt_sha,
                "options": {"decoding": dec.to_dict()}, **extra}
    return LazyScorer(name, applies, lambda: make(_backend(spec, opts), dec), identity)


def harm_scorer(spec: JudgeSpec) -> Any:
    """A safety judge from its config entry; a model judge's model loads only when it has work."""
    from ..judges import build_judge

    return HarmScorer(build_judge(spec.name, spec.model, spec.options, label=spec.label, loader=_backend))


def scorers(plan: Plan, refs: dict[str, str]) -> list[Any]:
    from .judging import OVER_REFUSAL_PROMPT_SHA, references_sha
    from .pairwise import PAIRWISE_PROMPT_SHA

    out = [harm_scorer(j) for j in plan.judges]
    h = plan.helpfulness
    out += [ExactScorer(t) for t in h.sets if t in EXACT_TASKS]
    if "alpaca_eval" in h.sets:
        out.append(_lazy(f"pairwise:{h.judge_model}", lambda g: kind(g) == "helpfulness" and g.attack == "alpaca_eval",
                         h.judge_model, h.judge_options, lambda backend, dec: PairwiseScorer(PairwiseJudge(backend, dec), refs),  # type: ignore[arg-type]
                         "pairwise", PAIRWISE_PROMPT_SHA, references_sha256=references_sha(refs)))
    o = plan.over_refusal
    if o.enabled:
        out.append(RefusalScorer())
        if o.judge_model:
            from .xstest import XSTEST_ATTACK, XSTEST_PROMPT_SHA, XSTestLlmScorer

            out.append(_lazy(f"llm-refusal:{o.judge_model}", lambda g: kind(g) == "over_refusal" and g.attack != XSTEST_ATTACK, o.judge_model,
                             o.judge_options, LlmRefusalScorer, "llm-refusal", OVER_REFUSAL_PROMPT_SHA))
            if "xstest" in o.sets:
                out.append(_lazy(f"xstest-llm:{o.judge_model}", lambda g: g.attack == XSTEST_ATTACK, o.judge_model, o.judge_options,
                                 XSTestLlmScorer, "xstest-llm", XSTEST_PROMPT_SHA))
    return out


def _start(out: Path, cfg: EvalConfig, plan: Plan, config_path: str | None) -> dict[str, Any]:
    """run.json for this invocation; refuses a run directory made with another decoding config."""
    import json

    path = out / "run.json"
    old = json.loads(path.read_text(encoding="utf-8")) if path.exists() else None
    dec_id = decoding_id(plan.decoding)
    if old and old.get("decoding_id") not in (None, dec_id):
        raise ValueError(f"{out}: this run directory was made with another decoding config ({old.get('decoding')}); "
                         f"use a new 'out' directory to evaluate with {plan.decoding.to_dict()}")
    history = (old or {}).get("history", [])
    run = {"format": RUN_FORMAT, "status": "running", "seed": cfg.seed, "config": cfg.to_dict(), "config_file": config_path,
           "decoding": plan.decoding.to_dict(), "decoding_id": dec_id, "environment": environment(), "started": _now(),
           "finished": None, "models": (old or {}).get("models", {}), "history": history}
    write_yaml(out / "config.yaml", cfg.to_dict())
    write_json(path, run)
    return run


def run_eval(cfg: EvalConfig, config_path: str | None = None) -> dict[str, Any]:
    """Run (or resume) the evaluation described by ``cfg``; return the summary."""
    plan = cfg.plan()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    random.seed(cfg.seed)
    run = _start(out, cfg, plan, config_path)
    try:
        questions = load_harmful(plan.questions) if plan.attacks else []
        shared = helpfulness_prompts(plan.helpfulness) + over_refusal_prompts(plan.over_refusal)
        gens: list[Generation] = []
        tokenizers: dict[str, Any] = {}  # model -> tokenizer, for refusal positions in its tokens
        for m in plan.models:
            gens += generate_model(m, plan, cfg, questions, shared, out, run, tokenizers)
            write_json(out / "run.json", run)
        refs = references(plan, cfg, shared, out)
        scoring = scorers(plan, refs)
        run["judges"] = {sc.name: {"key": judge_key(sc), "identity": judge_identity(sc)} for sc in scoring}
        write_json(out / "run.json", run)
        rows = judge_generations(gens, scoring, out / JUDGED_FILE, cfg.judge_batch_size, cfg.progress)
        judges = list(dict.fromkeys(r["judge"] for r in rows if r["kind"] == "harmful"))
        summary = analyse(rows, models=[m.name for m in plan.models], attacks=[a.label for a in plan.attacks], judges=judges,
                          tokenizers=tokenizers, examples=cfg.examples, calibration=_calibration(cfg, judges))
        missing = sum(run["models"][m.name].get("missing", 0) for m in plan.models)
        run["status"] = "complete" if not missing else "incomplete"
        run["counts"] = {"generations": len(gens), "judged": len(rows), "missing_generations": missing}
        if missing:
            log.warning("%d prompts have no generation (see %s.errors.jsonl); rerun to retry them", missing, out / GENERATIONS_FILE)
    except KeyboardInterrupt:
        run["status"] = "interrupted"
        raise
    except BaseException as e:
        run["status"] = "failed"
        run["error"] = f"{type(e).__name__}: {e}"
        raise
    finally:
        run["finished"] = _now()
        run["history"] = run["history"] + [{k: run.get(k) for k in ("started", "finished", "status", "error") if k in run}]
        write_json(out / "run.json", run)
    summary["run"] = {k: run[k] for k in ("status", "seed", "config", "decoding", "decoding_id", "environment", "started", "finished")}
    summary["run"]["models"] = {m: {k: v for k, v in info.items() if k != "refusal_token_ids"} for m, info in run["models"].items()}
    write_json(out / "summary.json", summary)
    return summary


def _calibration(cfg: EvalConfig, judges: list[str]) -> dict[str, dict[str, Any]]:
    """Each judge's measured agreement with people: the config's calibration file first, else
    what a judge ships for its current rules (the offline judge's held-out counts)."""
    from ..judges.evaluate import builtin_calibration, load_calibration

    calib = builtin_calibration(judges)
    if cfg.calibration:
        given = load_calibration(cfg.calibration)
        calib.update({j: given[j] for j in judges if j in given})
    return calib
