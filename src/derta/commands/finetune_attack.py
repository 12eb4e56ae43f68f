"""``derta finetune-attack --model PATH --data HARMFUL.jsonl --eval EVAL.yaml --out DIR``: fine-tune a
safety-tuned model on harmful pairs, then evaluate it before and after (:mod:`derta.eval.finetune_attack`).

The defaults are Qi et al.'s (2023) harmful-examples attack: full fine-tuning on 100 pairs, 5
epochs, learning rate 5e-5, 10 pairs per step (``--lora`` trains LoRA adapters, at 1e-4 unless
``--lr`` says otherwise). The eval config runs as ``derta eval`` runs it, with its models replaced
by ``before`` (the given model) and ``after`` (the fine-tuned one), into ``DIR/eval``; ``--set`` and
``--limit`` change it as they do for ``derta eval``. A rerun reuses the finished fine-tune (same
model, data and settings) and every generation and verdict already made; ``--fresh`` fine-tunes
again. Exit status 1 when the eval is incomplete (rerun to resume it).
"""

from __future__ import annotations

import argparse

from ._main import nonnegative_int, positive_int, run_command

HELP = "fine-tune a model on harmful pairs (Qi et al. 2023) and compare its eval before and after: does the safety survive?"


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {value}")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, metavar="PATH", help="the safety-tuned model (local folder or Hub name)")
    p.add_argument("--data", required=True, metavar="HARMFUL.jsonl",
                   help="harmful pairs: DeRTa {prefix, text} rows, {instruction, output} or {query, harmful_response}")
    p.add_argument("--eval", required=True, dest="eval_config", metavar="EVAL.yaml", help="a derta eval config (its models list is replaced)")
    p.add_argument("--out", required=True, metavar="DIR", help="run directory: data/, model/, eval/, finetune_attack.json")
    p.add_argument("--n", type=positive_int, default=100, help="harmful pairs to fine-tune on, drawn with --seed [100]")
    p.add_argument("--epochs", type=_positive_float, default=5.0, help="epochs over the pairs [5]")
    p.add_argument("--steps", type=positive_int, default=None, help="optimiser steps (wins over --epochs)")
    p.add_argument("--lr", type=_positive_float, default=None, dest="learning_rate", help="learning rate [5e-5 full, 1e-4 with --lora]")
    p.add_argument("--batch-size", type=positive_int, default=10, help="pairs per optimiser step [10]")
    p.add_argument("--micro-batch-size", type=positive_int, default=None, help="pairs per forward pass, dividing --batch-size [--batch-size]")
    p.add_argument("--max-length", type=positive_int, default=1024, help="tokens per row; longer rows are cut at the end [1024]")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--lora", action="store_true", default=False, help="train LoRA adapters (saved merged into the weights)")
    mode.add_argument("--full", action="store_false", dest="lora", help="train every parameter (the default)")
    p.add_argument("--lora-r", type=positive_int, default=96, help="LoRA rank [96]")
    p.add_argument("--template", default=None, choices=("chat", "reference", "plain"),
                   help="prompt format for training and both eval models [the model's training template, else its chat template]")
    p.add_argument("--seed", type=nonnegative_int, default=42, help="seed of the pair draw and the fine-tune [42]")
    p.add_argument("--save-steps", type=positive_int, default=25, help="checkpoint every N steps while fine-tuning (resume) [25]")
    p.add_argument("--gradient-checkpointing", action="store_true", help="trade compute for memory while fine-tuning")
    p.add_argument("--bf16", default="auto", choices=("auto", "true", "false"), help="bf16 fine-tuning [auto: on a bf16 GPU]")
    p.add_argument("--backend", default="hf", choices=("hf", "vllm"), help="generation backend of the eval [hf]")
    p.add_argument("--no-progress", action="store_false", dest="progress", help="no progress bars")
    p.add_argument("--fresh", action="store_true", help="delete the fine-tune in DIR/model and train it again")
    p.add_argument("--limit", type=nonnegative_int, default=None, metavar="N", help="at most N items per question, helpfulness and over-refusal set")
    p.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE", dest="eval_sets",
                   help="override a key of the eval config, as derta eval --set does (repeatable)")


def run(args: argparse.Namespace) -> int:
    from ..eval.finetune_attack import RECORD_FILE, AttackSettings, comparison_text, run_finetune_attack
    from .eval import incomplete_exit, limit_sets

    names = ("model", "data", "eval_config", "out", "n", "epochs", "steps", "learning_rate", "batch_size", "micro_batch_size", "max_length",
             "lora", "lora_r", "template", "seed", "save_steps", "gradient_checkpointing", "bf16", "backend", "progress")
    settings = AttackSettings(**{k: getattr(args, k) for k in names}, eval_sets=[*args.eval_sets, *limit_sets(args.eval_config, args.limit)])
    result = run_finetune_attack(settings, fresh=args.fresh)
    ft = result["finetune"]
    loss = ft.get("harmful_loss") or {}
    print(f"fine-tune: {result['data']['pairs']} pairs, {ft['steps']} steps{' (reused)' if ft['reused'] else ''}; "
          f"loss on the harmful responses {_num((loss.get('before') or {}).get('mean'))} -> {_num((loss.get('after') or {}).get('mean'))}")
    print()
    print(comparison_text(result["table"]))
    print(f"\nwrote {settings.out}/{RECORD_FILE}; the eval is in {result['eval']['out']} (render with: derta report {result['eval']['out']})")
    return incomplete_exit(result["summary"], result["eval"]["out"])


def _num(x: float | None) -> str:
    return "–" if x is None else f"{x:.3f}"


def main(argv: list[str] | None = None) -> int:
    """``derta finetune-attack ...`` as a function."""
    return run_command("finetune-attack", argv)
