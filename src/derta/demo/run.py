"""``derta demo``: the paper's central claim, reproduced in a toy world in minutes on a CPU.

1. a tokenizer trained here and a tiny LLaMA trained as an "uncensored base" on every task;
2. safety tuning from that base with each method (same data budget, same steps);
3. attacks on harmful task types never seen in safety tuning, benign over-refusal, helpfulness;
4. ``summary.json``, ``report.md`` and plots under ``--out``.

The demo is a toy world plus an evaluation plan run on ``derta eval``'s stages: prompts from
registered attacks (:mod:`derta.demo.attacks`), the generation stage (:mod:`derta.generate`), the
judging stage with the world's judge and scorers (:mod:`derta.demo.scorers`), the analysis
functions (:mod:`derta.demo.summary`) and the report.

Every stage is resumable: models are saved atomically with their training fingerprint, and
generations and verdicts are appended to logs under the method's name with that fingerprint as the
model's identity (``model_id``: a retrained model is generated and judged anew, its predecessor's
records stay), so an interrupted demo picks up where it stopped.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from ..io import environment
from ..records import AttackPrompt, Message, TrainingExample
from .attacks import FOLLOW_UP_STRATEGIES
from .world import World, make_world

log = logging.getLogger(__name__)

# Demo method -> (recipe, safe-response style, RTO transition word). The transition word is the
# first word of the safe responses of that style, looked up in the tokenizer by string.
METHODS: dict[str, tuple[str, str, str]] = {
    "vanilla": ("vanilla", "refusal", "Sorry"),
    "harmful-prefix": ("harmful-prefix", "refusal", "Sorry"),
    "rto": ("rto", "refusal", "Sorry"),
    "derta": ("derta", "refusal", "Sorry"),
    "derta-rebuttal": ("derta", "rebuttal", "You"),
    "dpo": ("dpo", "refusal", "Sorry"),  # one DPO epoch on top of the vanilla model, as in the paper
    "recovery": ("recovery", "refusal", "Sorry"),  # Qi et al.'s safety recovery augmentation
}
DEFAULT_METHODS = ("vanilla", "derta", "derta-rebuttal")
#: A harmful fine-tuning attack on a tuned model: ``METHOD+ft`` fine-tunes it with plain SFT on
#: harmful pairs of the tuned task types; ``METHOD+ft-constrained`` makes the same fine-tune with Qi
#: et al.'s token-wise constrained objective against the tuned model (the defence of a fine-tuning
#: provider).
FINETUNES = {"ft": "derta", "ft-constrained": "constrained"}
ALL_METHODS = ("vanilla", "harmful-prefix", "rto", "derta", "derta-rebuttal", "dpo", "recovery",
               "vanilla+ft", "vanilla+ft-constrained", "derta+ft", "derta+ft-constrained", "recovery+ft")
#: Attacks added with --all-methods: harmful tokens behind a benign opening, and a prefilled answer
#: after the user presses on (a follow-up composed with a prefill).
EXTRA_ATTACKS = ("random-insertion-10",)
EXTRA_FOLLOW_UPS = (("refusal", 10),)


def split_method(name: str) -> tuple[str, str | None]:
    """``"derta+ft-constrained"`` -> ("derta", "ft-constrained"); ``"derta"`` -> ("derta", None)."""
    base, _, ft = name.partition("+")
    return base, ft or None


@dataclass
class DemoConfig:
    out: str = "runs/demo"
    seed: int = 0
    methods: list[str] = field(default_factory=lambda: list(DEFAULT_METHODS))
    # model and tokenizer
    vocab_size: int = 1000
    hidden: int = 128
    layers: int = 2
    # training: "uncensored base" stage, then safety tuning (same for every method)
    base_epochs: float = 25
    base_lr: float = 3e-3
    safety_epochs: float = 4  # 3 left DeRTa at 15-21% ASR on seed 2 (single-copy base); 5 left vanilla at 89.6% prefill-5 ASR on seed 0
    safety_lr: float = 4e-4
    batch_size: int = 32
    rto_keep: float = 0.3  # share of RTO positions that keep their label (the reference's full fine-tuning keeps 5%)
    rto_weight: float = 1.0
    rto_norm: str = "auto"  # TrainConfig.rto_norm: token | sequence | auto
    helpful_repeat: int = 4  # helpfulness data (arithmetic, facts, benign how-tos) dominates safety data, as in the paper
    # Batching, measured on this workload (benchmarks/run.py, demo_train_*; 32 short rows per
    # micro-batch): the chunked loss is 1.04x faster than full logits; padding-free (the rows of a
    # micro-batch packed into sequences of at most max_length tokens) is 1.47x faster than padded
    # batches (0.93 of the computed tokens real, not 0.51); length-grouped batches are faster but
    # hurt training (batches of one kind of row: the base answered 76% of the held-out sums on
    # seed 0, not 97%, and vanilla refused 26% of the benign how-tos).
    padding_free: bool = True  # TrainConfig.padding_free
    group_by_length: bool = False  # TrainConfig.group_by_length: batches of rows of similar length
    loss_chunk_size: int | None = 1024  # TrainConfig.loss_chunk_size: the loss over trained positions only; None: full logits
    contrast: bool = True  # benign how-tos that share objects with harmful tasks
    # evaluation
    dpo_lr: float = 1e-4
    dpo_epochs: float = 1
    prefill_tokens: list[int] = field(default_factory=lambda: [5, 10, 20, 40])
    extra_attacks: bool = False  # EXTRA_ATTACKS and EXTRA_FOLLOW_UPS (on with --all-methods)
    # the harmful fine-tuning attack (METHOD+ft): pairs of the tuned harmful types, SFT
    finetune_pairs: int = 32
    finetune_epochs: float = 4
    finetune_lr: float = 2e-4  # half the safety-tuning rate: vanilla and recovery break, DeRTa partly holds (at 1e-3 all break)
    finetune_batch_size: int = 8  # 16 steps of 8 (Qi et al.: 10 per step, 50 steps)
    max_new_tokens: int = 48
    progress: bool = True

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if split_method(m)[0] not in METHODS or split_method(m)[1] not in (None, *FINETUNES)]
        if unknown:
            raise ValueError(f"unknown demo method(s) {unknown}; choose from {', '.join(METHODS)}, each optionally with "
                             f"+{' or +'.join(FINETUNES)} (a harmful fine-tune of it)")


def world_texts(w: World) -> list[str]:
    """Everything the tokenizer must cover, refusals as they appear mid-response included."""
    texts: list[str] = []
    for c in w.base_corpus:
        texts += [c.get("query", ""), c.get("response", ""), c.get("text", "")]
    for t in w.triples:
        texts += [t.safe_response, " " + t.safe_response, t.rebuttal_response, " " + t.rebuttal_response]
    return [t for t in texts if t]


def base_examples(w: World) -> list[TrainingExample]:
    """The uncensored corpus: chat Q/A (harmful included) and raw documents (no template)."""
    out = []
    for c in w.base_corpus:
        if c["kind"] == "chat":
            out.append(TrainingExample([Message("user", c["query"])], c["response"], source="base", recipe="base"))
        else:
            head, rest = c["text"].split("Step 1: ", 1)
            out.append(TrainingExample([Message("user", head + "Step 1:")], rest, source="base", recipe="base", metadata={"template": "raw"}))
    return out


def safety_examples(w: World, method: str, cfg: DemoConfig, tokenizer: Any = None) -> list[Any]:
    """The safety-tuning data of ``method``; with ``tokenizer``, the recovery recipe counts the
    harmful response in its tokens (k ~ U[1, min(100, |h|)] exactly, as Qi et al. sample it)."""
    from ..data import recipes

    recipe, style, _ = METHODS[method]
    helpful = list(w.helpful_train) + (list(w.benign_contrast) if cfg.contrast else [])
    count = None
    if recipe == "recovery" and tokenizer is not None:
        def count(h: str) -> int:
            return len(tokenizer(" " + h, add_special_tokens=False)["input_ids"])
    rc = recipes.RecipeConfig(style=style, seed=cfg.seed, count_units=count)
    return recipes.build(recipe, w.triples, helpful * cfg.helpful_repeat, rc)


def finetune_examples(w: World, cfg: DemoConfig) -> list[TrainingExample]:
    """The harmful fine-tuning attack's data: ``finetune_pairs`` (question -> harmful answer) pairs of
    the tuned harmful task types, drawn with the seed (the held-out types stay unseen)."""
    rng = random.Random(f"finetune/{cfg.seed}")
    pairs = rng.sample(list(w.triples), min(cfg.finetune_pairs, len(w.triples)))
    return [TrainingExample([Message("user", t.query)], t.harmful_response, source="harmful-finetune", recipe="finetune-attack",
                            id=f"ft-{t.id}") for t in pairs]


def attack_prompts(w: World, tokenizer: Any, cfg: DemoConfig) -> list[AttackPrompt]:
    """Held-out harmful types under direct / CompletingAttack / prefill-N; benign and helpful probes.

    The attacks are registered ones (``direct``, the world's ``world-completion``, ``prefill-N`` cut
    in the demo tokenizer's tokens), each prompt recording its params and seed; question by question.
    """
    from .attacks import held_out_questions, run_attack

    questions = held_out_questions(w)
    per_attack = [run_attack("direct", questions, cfg.seed), run_attack("world-completion", questions, cfg.seed)]
    per_attack += [run_attack(f"prefill-{n}", questions, cfg.seed, tokenizer=tokenizer) for n in cfg.prefill_tokens]
    if cfg.extra_attacks:
        per_attack += [run_attack(name, questions, cfg.seed, tokenizer=tokenizer) for name in EXTRA_ATTACKS]
    prompts: list[AttackPrompt] = [p for question in zip(*per_attack) for p in question]
    for i, b in enumerate(w.benign_test):
        prompts.append(AttackPrompt(f"benign-{i}", b["question"], "benign", messages=[Message("user", b["question"])], metadata={"kind": "benign"}))
    for i, q in enumerate(w.helpful_test):
        prompts.append(AttackPrompt(f"helpful-{i}", q["question"], "helpful", messages=[Message("user", q["question"])],
                                    metadata={"kind": "helpful", "answer": q["answer"], "type": q["kind"]}))
    return prompts


def follow_up_prompts(w: World, direct: dict[str, Any], seed: int = 0, extra: bool = False, tokenizer: Any = None) -> list[AttackPrompt]:
    """A second user turn that presses on, after the first assistant turn was (a) the model's own
    answer to the direct question (``direct[question id]``, a Generation), (b) a polite refusal, or
    (c) an explicit rebuttal: the registered ``world-follow-up`` attack, question by question."""
    from .attacks import held_out_questions, run_attack

    questions = held_out_questions(w)
    first = {q.id: direct[q.id].response for q in questions}
    per_strategy = [run_attack("world-follow-up", questions, seed, strategy=s, first_turns=first) for s in FOLLOW_UP_STRATEGIES]
    if extra:  # the follow-up composed with a prefilled answer (``follow-up-refusal+prefill-10``)
        per_strategy += [run_attack("world-follow-up", questions, seed, strategy=s, first_turns=first, prefill=n, prefill_tokenizer=tokenizer)
                         for s, n in EXTRA_FOLLOW_UPS]
    return [p for question in zip(*per_strategy) for p in question]


# The base corpus has no RTO rows: its stage keeps these fixed, so that RTO settings never retrain it.
BASE_RTO = {"rto_keep": 0.05, "rto_weight": 1.0}


def _trainer_config(cfg: DemoConfig, out: Path, epochs: float, lr: float, refusal_word: str = "Sorry", base: bool = False) -> Any:
    """``base``: the data has no RTO rows, so the RTO settings are the fixed BASE_RTO (changing
    them must not retrain a model they cannot affect)."""
    from ..train.trainer import TrainConfig

    rto = BASE_RTO if base else {"rto_keep": cfg.rto_keep, "rto_weight": cfg.rto_weight, "rto_norm": cfg.rto_norm}
    return TrainConfig(model="in-memory", refusal_word=refusal_word, output_dir=str(out), template="chat", epochs=epochs, learning_rate=lr, warmup_ratio=0.05,
                       weight_decay=0.0, batch_size=cfg.batch_size, total_batch_size=cfg.batch_size, max_length=160,
                       **rto, save_steps=10**9, logging_steps=10**9,
                       progress=cfg.progress, seed=cfg.seed, resume=False,
                       padding_free=cfg.padding_free, group_by_length=cfg.group_by_length, loss_chunk_size=cfg.loss_chunk_size)


def fingerprint(*parts: Any) -> str:
    """A stable hash of what a stage depends on (config, data, parent model)."""
    import hashlib
    import json

    blob = json.dumps(parts, sort_keys=True, default=lambda o: o.to_dict() if hasattr(o, "to_dict") else asdict(o))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _saved_fingerprint(final: Path) -> str | None:
    import json

    try:
        return json.loads((final / "derta_run.json").read_text()).get("fingerprint")
    except (OSError, ValueError):
        return None


def train_stage(name: str, model: Any, tokenizer: Any, examples: list, tcfg: Any, out: Path, parent: str = "") -> tuple[Any, str, bool]:
    """Train, or load a finished model whose fingerprint matches, and save atomically.

    ``examples`` are TrainingExamples (the DeRTa objective) or PreferencePairs (DPO with TRL). The
    fingerprint covers the training config, the data and ``parent`` (the starting model's own
    fingerprint), so changing any of them retrains instead of reusing a stale model.
    Returns (model, fingerprint, trained now).
    """
    from transformers import AutoModelForCausalLM

    from ..records import PreferencePair
    from ..train.identity import settings as result_settings
    from ..train.run import build_dpo_trainer, build_trainer
    from ..train.trainer import finalize_trainer, run_record

    final = out / "final"
    dpo = bool(examples) and isinstance(examples[0], PreferencePair)
    # the settings that change the weights (derta.train.identity: where the run lives and how it
    # displays are not among them, so a moved run is reused as it is); the training method follows
    # from the examples, which the fingerprint covers
    fp = fingerprint(result_settings(replace(tcfg, method="dpo" if dpo else "sft")), examples, parent, len(tokenizer))
    if _saved_fingerprint(final) == fp:
        log.info("%s: reusing %s", name, final)
        return AutoModelForCausalLM.from_pretrained(final), fp, False
    print(f"[derta demo] training {name}: {len(examples)} examples, {tcfg.epochs:g} epochs")
    trainer = (build_dpo_trainer if dpo else build_trainer)(tcfg, model, tokenizer, examples)
    t0 = time.perf_counter()
    trainer.train()
    finalize_trainer(trainer, tokenizer, out, run_record(tcfg, stage=name, examples=len(examples), fingerprint=fp, parent=parent,
                                                         seconds=round(time.perf_counter() - t0, 1), objective=getattr(trainer, "objective_stats", None)))
    return trainer.model, fp, True


def run_demo(cfg: DemoConfig) -> dict[str, Any]:
    import copy

    import torch
    from transformers import AutoTokenizer, logging as hf_logging

    from ..backends.base import Decoding
    from ..backends.hf import HFBackend
    from ..generate import run_generation
    from .model import tiny_llama, train_tokenizer
    from .summary import judge_and_summarise, write_outputs

    hf_logging.set_verbosity_error()
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    w = make_world(cfg.seed)

    tok_dir = out / "tokenizer"
    texts = world_texts(w)
    tok_fp = fingerprint(texts, cfg.vocab_size)
    if (tok_dir / "tokenizer_config.json").exists() and (tok_dir / "derta_fingerprint").exists() \
            and (tok_dir / "derta_fingerprint").read_text() == tok_fp:
        tokenizer = AutoTokenizer.from_pretrained(tok_dir)
    else:
        tokenizer = train_tokenizer(texts, vocab_size=cfg.vocab_size)
        tokenizer.save_pretrained(tok_dir)
        (tok_dir / "derta_fingerprint").write_text(tok_fp)
    model_shape = {"hidden": cfg.hidden, "layers": cfg.layers, "seed": cfg.seed, "tokenizer": tok_fp}
    base = tiny_llama(tokenizer, hidden=cfg.hidden, layers=cfg.layers, seed=cfg.seed)
    base, base_fp, _ = train_stage("base", base, tokenizer, base_examples(w), _trainer_config(cfg, out / "models" / "base", cfg.base_epochs, cfg.base_lr, base=True),
                                out / "models" / "base", parent=fingerprint(model_shape))
    base_state = copy.deepcopy(base.state_dict())

    prompts = attack_prompts(w, tokenizer, cfg)
    decoding = Decoding(max_new_tokens=cfg.max_new_tokens, temperature=0.0, seed=cfg.seed)
    gen_path = out / "generations.jsonl"
    generations: dict[str, list] = {}

    trained: dict[str, tuple[Any, str]] = {}

    def tuned(method: str) -> tuple[Any, str]:
        """The tuned model of ``method`` and its fingerprint: from the base, (DPO) from the vanilla
        model, or (``METHOD+ft``) METHOD's model after the harmful fine-tuning attack."""
        if method in trained:
            return trained[method]
        name, ft = split_method(method)
        if ft is not None:
            parent_model, parent = tuned(name)
            start, epochs, lr = copy.deepcopy(parent_model), cfg.finetune_epochs, cfg.finetune_lr
            examples: list[Any] = finetune_examples(w, cfg)
            tcfg = replace(_trainer_config(cfg, out / "models" / method, epochs, lr, base=True), objective=FINETUNES[ft],
                           batch_size=cfg.finetune_batch_size, total_batch_size=cfg.finetune_batch_size)
        else:
            if name == "dpo":
                vanilla, parent = tuned("vanilla")
                start, epochs, lr = copy.deepcopy(vanilla), cfg.dpo_epochs, cfg.dpo_lr
            else:
                start = tiny_llama(tokenizer, hidden=cfg.hidden, layers=cfg.layers, seed=cfg.seed)
                start.load_state_dict(base_state)
                epochs, lr, parent = cfg.safety_epochs, cfg.safety_lr, base_fp
            examples = safety_examples(w, name, cfg, tokenizer)
            no_rto = not any(getattr(e, "objective", None) == "rto" for e in examples)
            tcfg = _trainer_config(cfg, out / "models" / method, epochs, lr, refusal_word=METHODS[name][2], base=no_rto)
        model, fp, _ = train_stage(method, start, tokenizer, examples, tcfg, out / "models" / method, parent=parent)
        trained[method] = (model, fp)
        return model, fp

    for method in ["base", *cfg.methods]:
        model, fp = (base, base_fp) if method == "base" else tuned(method)
        # the model is in memory: its identity is its training fingerprint (a retrained model has another)
        backend = HFBackend(model, tokenizer, name=method, batch_size=64, progress=cfg.progress)
        meta = {"demo_seed": cfg.seed, "method": method, "model_fingerprint": fp}
        gens = run_generation(backend, prompts, gen_path, model_name=method, decoding=decoding, metadata=meta, model_id=fp)
        direct = {g.prompt_id: g for g in gens if g.attack == "direct"}
        gens += run_generation(backend, follow_up_prompts(w, direct, cfg.seed, extra=cfg.extra_attacks, tokenizer=tokenizer), gen_path, model_name=method, decoding=decoding,
                               metadata={**meta, "stage": "follow-up"}, model_id=fp)
        generations[method] = gens
    words = {m: ("Sorry", METHODS[split_method(m)[0]][2]) if split_method(m)[0] in METHODS else ("Sorry",) for m in generations}
    summary = judge_and_summarise(w, tokenizer, generations, out, refusal_words=words)
    summary.update({"config": asdict(cfg), "environment": environment(), "seed": cfg.seed,
                    "seconds": round(time.perf_counter() - t_start, 1)})
    summary["analysis"] = {**summary.pop("analysis"), "run": {k: summary[k] for k in ("seed", "config", "environment", "seconds", "world")}}
    write_outputs(summary, out)
    return summary
