"""``derta data build``: safety triples (+ helpfulness data) -> a training file, with its meta sidecar.

Two ways in:

- ``--recipe R --triples FILE [--helpful FILE]`` runs a recipe of :mod:`derta.data.recipes`
  (``--recipe dpo [--helpful-pairs FILE]``: safety pairs, plus helpfulness preference pairs);
- ``--reference FILE`` imports rows of the DeRTa reference format ``{prefix, text, safe}``.

Either way the rows are written atomically to ``--out`` as our TrainingExample / PreferencePair
JSONL (``--format derta``) or in the reference format (``--format reference``), and
``OUT.meta.json`` records the arguments, the library versions, the seed and the counts.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ._main import run_command

HELP = "build training data from safety triples (vanilla, harmful-prefix, RTO, DeRTa, DPO) or import the reference format"

# Kept in sync with derta.data.recipes.RECIPES (a test checks); listed here for `--help` only.
RECIPE_NAMES = ("vanilla", "vanilla-half", "harmful-prefix", "rto", "derta", "dpo", "recovery")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    b = actions.add_parser("build", help="run a recipe (or import the reference format) and write OUT.jsonl + OUT.meta.json")
    src = b.add_argument_group("input")
    src.add_argument("--recipe", help=f"one of: {', '.join(RECIPE_NAMES)}")
    src.add_argument("--triples", metavar="FILE_OR_HF_NAME", help="safety triples: .jsonl/.json/.csv or a Hugging Face dataset name")
    src.add_argument("--helpful", metavar="FILE_OR_HF_NAME", help="helpfulness examples mixed in with plain MLE")
    src.add_argument("--helpful-pairs", metavar="FILE_OR_HF_NAME",
                     help="with --recipe dpo: helpfulness preference pairs mixed with the safety pairs (fields query or instruction, "
                          "chosen = the reference answer, rejected = a weak model's answer)")
    src.add_argument("--helpful-ratio", type=float, default=None, metavar="R", help="helpful instances per safety instance (default: all of --helpful)")
    src.add_argument("--reference", metavar="FILE", help="import rows of the DeRTa reference format {prefix, text, safe} instead of running a recipe")
    src.add_argument("--split", default="train", help="split of a Hugging Face dataset [default: train]")
    rec = b.add_argument_group("recipe")
    rec.add_argument("--instances", type=int, default=None, metavar="N", help="safety-instance budget N (default: one per triple; derta and rto use N/2 triples, two instances each)")
    rec.add_argument("--style", default="refusal", choices=("refusal", "rebuttal"), help="safe target: safe_response or rebuttal_response [default: refusal]")
    rec.add_argument("--rebuttal-template", metavar="FILE_OR_NAME", default=None,
                     help="with --style rebuttal: generate the rebuttal of triples without rebuttal_response from this template "
                          "(built-in: default, detailed; or a .txt/.yaml file, see docs/deception.md)")
    rec.add_argument("--prefix-unit", default="tokens", choices=("tokens", "words"), help="cut the harmful prefix in tokens or words [default: tokens]")
    rec.add_argument("--zero-share", type=float, default=1 / 3, metavar="P", help="share of harmful prefixes with k = 0 [default: 1/3]")
    rec.add_argument("--fixed-k", action="store_true", help="fix each prefix cut k now (reference behaviour) instead of resampling it every epoch")
    rec.add_argument("--tokenizer", metavar="NAME_OR_PATH", help="tokenizer to count tokens (--fixed-k or --format reference with --prefix-unit tokens)")
    rec.add_argument("--system", default="", metavar="TEXT", help="system prompt placed before every query")
    rec.add_argument("--seed", type=int, default=0, help="seed of mixing, shuffling and fixed k [default: 0]")
    out = b.add_argument_group("output")
    out.add_argument("--out", required=True, metavar="OUT.jsonl", help="output JSONL (written atomically; OUT.meta.json beside it)")
    out.add_argument("--format", default="derta", choices=("derta", "reference"), help="our TrainingExample rows or the reference {prefix,text,safe} rows [default: derta]")
    out.add_argument("--eos", default="<|end_of_text|>", help="end-of-text string of the reference format [default: <|end_of_text|>]")


def objective_mix(instances: list[Any], tokenizer: Any = None) -> dict[str, Any]:
    """Trained units per objective before rendering: RTO targets (every unit of a harmful response)
    vs MLE targets, in tokens with ``tokenizer``, else in whitespace words (an estimate; `derta
    train` logs and records the exact share in tokens after truncation)."""
    def size(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"]) if tokenizer is not None else len(text.split())

    rto = sum(size(x.target) for x in instances if getattr(x, "objective", None) == "rto")
    mle = sum(size(x.target) for x in instances if getattr(x, "objective", None) == "mle")
    return {"unit": "tokens" if tokenizer is not None else "words", "rto": rto, "mle": mle,
            "rto_share": rto / (rto + mle) if rto + mle else 0.0}


def meta_path(out: str | Path) -> Path:
    """``data/x.jsonl`` -> ``data/x.meta.json``."""
    out = Path(out)
    return out.with_name(out.stem + ".meta.json") if out.suffix else out.with_name(out.name + ".meta.json")


def counts(instances: list[Any]) -> dict[str, int]:
    """Rows per kind: safety MLE, RTO, helpful, DPO pairs (and imported reference MLE rows)."""
    from ..records import PreferencePair

    c = {"safety_mle": 0, "rto": 0, "helpful": 0, "dpo_pairs": 0, "reference_mle": 0}
    for x in instances:
        if isinstance(x, PreferencePair):
            c["dpo_pairs"] += 1
            if x.source == "helpful":
                c["dpo_helpful_pairs"] = c.get("dpo_helpful_pairs", 0) + 1
        elif x.objective == "rto":
            c["rto"] += 1
        elif x.source == "helpful":
            c["helpful"] += 1
        elif x.source == "reference":
            c["reference_mle"] += 1
        else:
            c["safety_mle"] += 1
    c["total"] = len(instances)
    return c


def _load_tokenizer(name: str) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as e:
        raise ValueError(f"--tokenizer {name}: could not load ({e})") from None


def _unit_counter(args: argparse.Namespace, tokenizer: Any):
    """Length of h in prefix units, counted the way the renderer and the exporter cut it."""
    if args.prefix_unit == "words":
        return lambda h: len(h.split(" "))
    return lambda h: len(tokenizer(" " + h, add_special_tokens=False)["input_ids"])


def _from_recipe(args: argparse.Namespace, tokenizer: Any) -> tuple[list[Any], dict[str, Any]]:
    from ..data.formats import load_helpful, load_helpful_pairs, load_triples
    from ..data.recipes import RECIPES, RecipeConfig, build, dpo, unique_ids
    from ..io import DataError

    if not args.recipe:
        raise ValueError("give --recipe NAME (with --triples FILE) or --reference FILE")
    if args.recipe not in RECIPES:
        raise ValueError(f"unknown recipe {args.recipe!r}; choose from {', '.join(sorted(RECIPES))}")
    if not args.triples:
        raise ValueError(f"--recipe {args.recipe} needs --triples FILE_OR_HF_NAME")
    if args.fixed_k and args.prefix_unit == "tokens" and tokenizer is None:
        raise ValueError("--fixed-k with --prefix-unit tokens needs --tokenizer NAME_OR_PATH to count tokens (or use --prefix-unit words)")
    template = _rebuttal_template(args)
    cfg = RecipeConfig(
        instances=args.instances, style=args.style, prefix_unit=args.prefix_unit, zero_share=args.zero_share,
        fixed_k=args.fixed_k, system=args.system, seed=args.seed,
        count_units=_unit_counter(args, tokenizer) if args.fixed_k else None,
        rebuttal=template.for_triple if template else None,
    )
    if args.helpful and args.recipe == "dpo":
        raise ValueError("--recipe dpo builds preference pairs; drop --helpful (helpfulness pairs come with --helpful-pairs FILE)")
    if args.helpful_pairs and args.recipe != "dpo":
        raise ValueError(f"--helpful-pairs is for --recipe dpo (preference pairs), not --recipe {args.recipe}; use --helpful FILE")
    triples = load_triples(args.triples, args.split)
    if args.instances is not None and args.instances > len(triples):
        # Every recipe draws from the same first N triples, so that recipes stay comparable.
        raise DataError(f"{args.triples}: --instances {args.instances} needs {args.instances} triples, the input holds {len(triples)}")
    helpful = load_helpful(args.helpful, args.split) if args.helpful else []
    pairs = load_helpful_pairs(args.helpful_pairs, args.split) if args.helpful_pairs else []
    if pairs:
        instances = unique_ids(dpo(triples, cfg, helpful_pairs=pairs))
    else:
        instances = unique_ids(build(args.recipe, triples, helpful, cfg, helpful_ratio=args.helpful_ratio))
    config = {k: v for k, v in vars(cfg).items() if k not in ("count_units", "rebuttal")}
    extra: dict[str, Any] = {"recipe_config": config, "triples_read": len(triples), "helpful_read": len(helpful)}
    if args.helpful_pairs:
        extra["helpful_pairs_read"] = len(pairs)
    if template:
        n = sum(1 for x in instances if x.metadata.get("rebuttal") == "generated")
        extra["rebuttal_template"] = {**template.info(), "generated": n}
    return instances, extra


def _rebuttal_template(args: argparse.Namespace) -> Any:
    if not args.rebuttal_template:
        return None
    if args.style != "rebuttal":
        raise ValueError("--rebuttal-template is used with --style rebuttal")
    from ..deception.rebuttal import load_template

    return load_template(args.rebuttal_template)


def run(args: argparse.Namespace) -> int:
    if getattr(args, "action", None) != "build":
        print("usage: derta data build --recipe R --triples FILE --out OUT.jsonl  (see `derta data build --help`)", file=sys.stderr)
        return 2
    from ..data.formats import instance_dicts, load_reference, to_reference
    from ..io import environment, write_json, write_jsonl
    from ..records import PreferencePair

    if args.reference and (args.recipe or args.triples or args.helpful or args.helpful_pairs):
        raise ValueError("--reference FILE imports a finished data set; it does not mix with --recipe/--triples/--helpful/--helpful-pairs")
    tokenizer = _load_tokenizer(args.tokenizer) if args.tokenizer else None
    if args.reference:
        instances: list[Any] = load_reference(args.reference, eos=args.eos)
        extra: dict[str, Any] = {"reference_read": len(instances)}
    else:
        instances, extra = _from_recipe(args, tokenizer)

    if args.format == "reference":
        if any(isinstance(x, PreferencePair) for x in instances):
            raise ValueError("DPO pairs have no reference-format equivalent; use --format derta")
        if tokenizer is None and any(x.harmful_prefix and x.harmful_prefix.unit == "tokens" and x.objective == "mle" for x in instances):
            raise ValueError("--format reference cuts token-unit prefixes now and needs --tokenizer NAME_OR_PATH (or use --prefix-unit words)")
        rows = to_reference(instances, eos=args.eos, seed=args.seed, tokenizer=tokenizer)
    else:
        rows = instance_dicts(instances)

    out = write_jsonl(args.out, rows)
    n = counts(instances)
    mix = objective_mix(instances, tokenizer)
    meta = {
        "command": "derta data build",
        "args": {k: v for k, v in vars(args).items() if not k.startswith("_") and not k.startswith("cfg__")},
        "seed": args.seed,
        "counts": n,
        "objective_mix": mix,
        **extra,
        "output": str(out),
        "format": args.format,
        "environment": environment(),
    }
    mp = write_json(meta_path(out), meta)
    print(f"wrote {n['total']} rows to {out} ({args.format} format; meta: {mp})")
    for key, label in (("safety_mle", "safety MLE"), ("rto", "RTO"), ("helpful", "helpful"), ("dpo_pairs", "DPO pairs"),
                       ("dpo_helpful_pairs", " of them helpful"), ("reference_mle", "reference MLE")):
        if key not in ("reference_mle", "dpo_helpful_pairs") or n.get(key):
            print(f"  {label:<14}{n[key]:>8}")
    print(f"  {'total':<14}{n['total']:>8}")
    if mix["rto"]:
        print(f"  RTO targets are {100 * mix['rto_share']:.0f}% of the trained {mix['unit']} ({mix['rto']} RTO vs {mix['mle']} MLE, all RTO positions kept)")
        if mix["rto_share"] > 0.5:
            print("  warning: RTO would dominate the loss (the paper's mix had a few %); `derta train` normalises it per sequence "
                  "(rto_norm: auto), or add helpful data", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``derta data ...`` as a function."""
    return run_command("data", argv)
