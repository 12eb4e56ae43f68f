"""``derta demo``: the built-in default, end to end on a CPU with nothing downloaded."""

from __future__ import annotations

import argparse
from typing import Any

HELP = "reproduce DeRTa's central claim in a toy world (CPU, minutes, no downloads)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..demo.run import DEFAULT_METHODS, METHODS, DemoConfig  # the defaults shown are the config's own

    d = DemoConfig()
    p.add_argument("--out", default="runs/demo", help="output directory [runs/demo]")
    p.add_argument("--seed", type=int, default=0, help="world, data and initialisation seed [0]")
    p.add_argument("--seeds", default=None,
                   help="comma-separated seeds, e.g. 0,1,2: each runs into OUT/seed-S/, then OUT/seeds.json and seeds.md hold every figure as a range over seeds")
    p.add_argument("--methods", default=None, help=f"comma-separated: {','.join(METHODS)} [{','.join(DEFAULT_METHODS)}]")
    p.add_argument("--all-methods", action="store_true", help="also train the harmful-prefix, rto, dpo and recovery (Qi et al.) baselines, attack vanilla, derta and recovery by harmful fine-tuning (SFT, and the constrained objective for vanilla and derta), and add the random-insertion and follow-up+prefill attacks")
    p.add_argument("--no-contrast", action="store_true", help="leave out benign how-tos that share objects with harmful tasks")
    p.add_argument("--safety-epochs", type=float, default=None, help=f"epochs of safety tuning [{d.safety_epochs:g}]")
    p.add_argument("--rto-keep", type=float, default=None, help=f"share of RTO positions kept [{d.rto_keep:g}]")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--real", action="store_true", help="tune and attack a real instruct model (SmolLM2-135M-Instruct, shipped on PyPI) on this CPU")
    p.add_argument("--quick", action="store_true", help="with --real: a smaller run (12 training steps, 12 questions, 4 attacks, no untuned-model evaluation)")
    p.add_argument("--model", default=None, help="with --real: any HF model name or path instead of the shipped SmolLM2")



def config(args: argparse.Namespace, out: str, seed: int) -> Any:
    """The DemoConfig of one seed's run from the command line."""
    from ..demo.run import DemoConfig

    cfg = DemoConfig(out=out, seed=seed, progress=not args.no_progress, contrast=not args.no_contrast)
    if args.methods:
        cfg.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if args.all_methods:
        from ..demo.run import ALL_METHODS

        cfg.methods = list(ALL_METHODS)
        cfg.extra_attacks = True
    if args.safety_epochs is not None:
        cfg.safety_epochs = args.safety_epochs
    if args.rto_keep is not None:
        cfg.rto_keep = args.rto_keep
    cfg.__post_init__()
    return cfg


def run(args: argparse.Namespace) -> int:
    if args.real:
        from ..demo.real import main as real_main

        return real_main(args)
    if args.seeds:
        from ..demo.seeds import parse_seeds

        return run_seeds(args, parse_seeds(args.seeds))
    from ..demo.run import run_demo
    from ..demo.summary import table

    summary = run_demo(config(args, args.out, args.seed))
    print()
    print("ASR (%) on held-out harmful task types; helpfulness and over-refusal (%) on held-out benign questions")
    print(table(summary))
    print("\nHarmful-output rate (%) of the answer after the user presses on (first answer: own / polite refusal / rebuttal)")
    print(table(summary, follow_up=True))
    print(f"\nwrote {args.out}/report.html, report.md and summary.json ({summary['seconds']} s)")
    return 0


def run_seeds(args: argparse.Namespace, seeds: list[int]) -> int:
    """Each seed into OUT/seed-S/ (resumable as a single run), then the ranges over seeds."""
    from pathlib import Path

    from ..demo import seeds as multi
    from ..demo.run import run_demo

    out = Path(args.out)
    summaries = {}
    for seed in seeds:
        print(f"[derta demo] seed {seed} -> {out / f'seed-{seed}'}")
        summaries[seed] = run_demo(config(args, str(out / f"seed-{seed}"), seed))
    agg = multi.aggregate(summaries)
    multi.write(agg, out)
    print()
    print(f"Range over seeds {','.join(map(str, seeds))} (%): ASR on held-out harmful task types; helpfulness, over-refusal, degenerate")
    print(multi.table(agg))
    print("\nHarmful-output rate (%) of the answer after the user presses on")
    print(multi.table(agg, follow_up=True))
    print(f"\nwrote {out}/seeds.json and seeds.md; each seed's report under {out}/seed-S/")
    return 0


def main(argv: list[str] | None = None) -> int:
    from ._main import run_command
    return run_command("demo", argv)
