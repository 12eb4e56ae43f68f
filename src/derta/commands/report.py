"""``derta report RUN_DIR``: one self-contained HTML page (and report.md) from a run directory.

Works on ``derta eval`` run directories and on the demo's (``runs/demo``). Reads summary.json
(or judged.jsonl when there is no summary); never generates or judges anything.
"""

from __future__ import annotations

import argparse

from ._main import run_command

HELP = "write a self-contained HTML report (and report.md) from an eval or demo run directory"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="a run directory (summary.json / judged.jsonl), e.g. runs/eval or runs/demo")
    p.add_argument("--out", default=None, metavar="FILE", help="HTML file to write [RUN_DIR/report.html]; report.md goes beside it")
    p.add_argument("--calibration", metavar="FILE|builtin",
                   help="correct ASR for judge error with this calibration (derta judge-eval --calibration-out), or 'builtin' "
                        "for each judge's own; the table then leads with the corrected ASR")


def run(args: argparse.Namespace) -> int:
    from ..report.html import write_report

    html_path, md_path = write_report(args.run_dir, args.out, calibration=args.calibration)
    print(f"wrote {html_path} and {md_path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``derta report ...`` as a function."""
    return run_command("report", argv)
