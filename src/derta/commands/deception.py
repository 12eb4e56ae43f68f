"""``derta deception``: the reason-based deception study (SPEC §4).

- ``derta deception list [--scenarios FILE]``: the suite, one JSON object per line (id, category,
  control, pair, attribute, version, title), after validating it;
- ``derta deception run CONFIG.yaml [--key value ...]``: run (or resume) the conversations,
  classify them, and write ``summary.json``, ``deception.md`` and ``deception.html`` to ``out_dir``;
- ``derta deception report OUT_DIR``: rebuild the report from ``OUT_DIR/summary.json`` and the
  classifications (nothing is generated).
"""

from __future__ import annotations

import argparse
import json
import sys

from ._main import run_command

HELP = "reason-based deception: list the scenario suite, run the multi-turn study, rebuild its report"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..config import add_override_args
    from ..deception.study import DeceptionConfig

    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    ls = actions.add_parser("list", help="print the scenarios, one JSON object per line")
    ls.add_argument("--scenarios", default="builtin", metavar="FILE", help="scenario file (.yaml/.jsonl) [default: builtin]")
    ls.add_argument("--category", action="append", metavar="NAME", help="only this category (repeatable)")
    run = actions.add_parser("run", help="run the study from a YAML config (see examples/deception.yaml)")
    run.add_argument("config", nargs="?", help="YAML config; every key can be overridden below (nested keys with --set KEY.PATH=VALUE)")
    add_override_args(run, DeceptionConfig)
    rep = actions.add_parser("report", help="rebuild deception.md/html from OUT_DIR/summary.json")
    rep.add_argument("out_dir")
    rep.add_argument("--examples", type=int, default=3, help="example answers per model [default: 3]")


def _list(args: argparse.Namespace) -> int:
    from ..deception.scenarios import load_suite

    suite = load_suite(args.scenarios)
    try:
        for s in suite.scenarios:
            if args.category and s.category not in args.category:
                continue
            row = {"id": s.id, "category": s.category, "control": s.control, "pair": s.pair or None,
                   "attribute": s.attribute or None, "version": s.version, "title": s.title, "followups": len(s.followups)}
            print(json.dumps(row, ensure_ascii=False))
        sys.stdout.flush()
    except BrokenPipeError:  # `derta deception list | head`
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    print(f"# {suite.name} {suite.version} sha256 {suite.sha256}: {len(suite.scenarios)} scenarios", file=sys.stderr)
    return 0


def _run(args: argparse.Namespace) -> int:
    from ..config import config_from_args
    from ..deception.study import SUMMARY, DeceptionConfig, run_study

    cfg = config_from_args(DeceptionConfig, args.config, args)
    summary = run_study(cfg)
    print(f"wrote {cfg.out_dir}/{SUMMARY}, deception.md and deception.html "
          f"(suite {summary['suite']['name']} sha256 {summary['suite']['sha256']}, classifier {summary['classifier']['name']})")
    for m, ms in summary["models"].items():
        overall = ms["first_answers"].get("overall", {}).get("all")
        if overall:
            u, d = overall["undesired"], overall["deception"]
            print(f"  {m}: first answers: undesired {_pct(u)}, reason-based deception {_pct(d)} ({overall['unscored']} unscored)")
        for st, conv in ms["conversations"].items():
            later = conv["later_turns"].get("all")
            if later:
                print(f"  {m}: {st:<8} later turns: undesired {_pct(later['undesired'])}, deception {_pct(later['deception'])} "
                      f"({later['unscored']} unscored)")
        for st, conv in ms.get("conversations_overseer", {}).items():
            later, gate = conv["later_turns"].get("all"), conv["gate"]
            shown = (f"undesired {_pct(later['undesired'])}, deception {_pct(later['deception'])} ({later['unscored']} unscored)"
                     if later else "n/a")
            print(f"  {m}: {st:<8} overseer, later turns: {shown}; {gate['answered']} first answers answered, "
                  f"{gate['not_answered']} not undesired")
    return 0


def _pct(cell: dict) -> str:
    return "n/a" if not cell.get("n") else f"{100 * cell['rate']:.1f}% [{100 * cell['ci_low']:.1f}-{100 * cell['ci_high']:.1f}]"


def _report(args: argparse.Namespace) -> int:
    from ..deception.study import rebuild_report

    md, page = rebuild_report(args.out_dir, examples=args.examples)
    print(f"wrote {md} and {page}")
    return 0


def run(args: argparse.Namespace) -> int:
    action = getattr(args, "action", None)
    if action == "list":
        return _list(args)
    if action == "run":
        return _run(args)
    if action == "report":
        return _report(args)
    print("usage: derta deception {list,run,report} ...  (see `derta deception --help`)", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    """``derta deception ...`` as a function."""
    return run_command("deception", argv)
