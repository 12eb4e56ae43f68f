"""Regenerate the measured table in docs/judges.md (the block between its judge-eval markers).

    make judges-doc            # or: python scripts/judges_doc.py [--data DIR]

Scores every judge that runs without a model (offline, keyword) on every human-labelled file of
the shared data (../shared/data/judge-labels, or $DERTA_JUDGE_LABELS), beside the published
reference judges the files carry, and replaces only the generated block: the prose around it is
kept. The output is deterministic (seeded intervals, no dates), so an unchanged judge gives an
unchanged doc. Model judges (llm, harmbench, llamaguard) are left out: they need weights or an API.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("DERTA_JUDGE_LABELS", REPO.parent / "shared" / "data" / "judge-labels"))
DOC = REPO / "docs" / "judges.md"
JUDGES = ("offline", "keyword")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DATA, help=f"folder of labelled JSONL files [{DATA}]")
    p.add_argument("--doc", type=Path, default=DOC, help=f"document to update [{DOC}]")
    args = p.parse_args(argv)
    files = sorted(args.data.glob("*.jsonl"))
    if not files:
        print(f"judges_doc: no labelled *.jsonl files in {args.data} (set DERTA_JUDGE_LABELS)", file=sys.stderr)
        return 2
    from derta.cli import main as derta

    judges = [a for j in JUDGES for a in ("--judge", j)]
    return derta(["judge-eval", *map(str, files), *judges, "--markdown", str(args.doc), "--doc", "--no-progress"])


if __name__ == "__main__":
    sys.exit(main())
