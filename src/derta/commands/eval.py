"""``derta eval CONFIG.yaml``: run (or resume) models x attacks x judges into one run directory.

Any top-level key can be overridden (``--out runs/x``, ``--seed 1``); nested keys with
``--set questions.limit=5`` (repeatable; the value is read as YAML, list items by index:
``--set models.0.spec=hf:./m``). ``--limit N`` caps every question set at once for a smoke run.

Exit status 1 when the run is incomplete (a backend failed for good on some prompts: the summary
covers what was generated); rerunning the same command generates only what is missing.
"""

from __future__ import annotations

import argparse
from typing import Any

from ._main import nonnegative_int, run_command

HELP = "evaluate models under attacks (ASR with 95% CI), helpfulness and over-refusal; resumable"


#: The sections ``--limit N`` caps.
LIMITED_SECTIONS = ("questions", "helpfulness", "over_refusal")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..config import add_override_args
    from ..eval.config import EvalConfig

    p.add_argument("config", help="YAML config (see examples/eval_hf.yaml, examples/eval_openai.yaml)")
    p.add_argument("--limit", type=nonnegative_int, default=None, metavar="N", help="at most N items per question, helpfulness and over-refusal set")
    add_override_args(p, EvalConfig)  # every top-level key, and --set KEY.PATH=VALUE


def _file_sections(config_path: str) -> dict[str, Any]:
    """The file's top-level values as written (an unreadable file: {}; load_config reports it)."""
    from pathlib import Path

    from ..config import ConfigError, read_mapping

    try:
        data = read_mapping(config_path) if Path(config_path).exists() else {}
    except ConfigError:
        data = {}
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def limit_sets(config_path: str, limit: int | None) -> list[str]:
    """``--limit N`` as ``--set SECTION.limit=N`` items; a section the file turns off (null) stays off."""
    if limit is None:
        return []
    data = _file_sections(config_path)
    return [f"{s}.limit={limit}" for s in LIMITED_SECTIONS if not (s in data and data[s] is None)]


def nested_overrides(config_path: str, sets: list[str], limit: int | None) -> dict[str, Any]:
    """The whole sections that ``--set`` items and ``--limit`` change (what ``derta eval`` applies)."""
    from ..config import apply_sets

    return apply_sets(_file_sections(config_path), [*sets, *limit_sets(config_path, limit)])


def run(args: argparse.Namespace) -> int:
    from ..config import config_from_args
    from ..eval.config import EvalConfig
    from ..eval.run import run_eval
    from ..report.markdown import results_table

    cfg = config_from_args(EvalConfig, args.config, args, limit_sets(args.config, args.limit))
    summary = run_eval(cfg, config_path=args.config)
    print()
    print(results_table(summary))
    print(f"\nwrote {cfg.out}/summary.json and judged.jsonl; render with: derta report {cfg.out}")
    return incomplete_exit(summary, cfg.out)


def incomplete_exit(summary: dict[str, Any], out: str) -> int:
    """1 with a line on stderr when generations are missing (a backend failed for good on some
    prompts), else 0: an incomplete run must not look like a finished one."""
    import sys

    from ..eval.run import GENERATIONS_FILE

    run = summary.get("run") or {}
    missing = sum(int(info.get("missing", 0) or 0) for info in (run.get("models") or {}).values())
    if run.get("status") != "incomplete" and not missing:
        return 0
    total = sum(int(info.get("n_prompts", 0) or 0) for info in (run.get("models") or {}).values())
    of = f" of {total}" if total else ""
    print(f"derta eval: incomplete: {missing}{of} generations are missing (the requests that failed are in "
          f"{out}/{GENERATIONS_FILE}.errors.jsonl); rerun the same command to resume: only the missing ones are generated",
          file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    """``derta eval ...`` as a function."""
    return run_command("eval", argv)
