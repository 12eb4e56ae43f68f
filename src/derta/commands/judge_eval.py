"""``derta judge-eval FILE... --judge A --judge B``: score judges against human-labelled responses.

Each FILE is JSONL/JSON/CSV with ``response``, ``question``/``prompt`` and ``label``
(unsafe | safe). Per (judge, file): accuracy, precision / recall / F1 of "unsafe", Cohen's kappa,
the confusion table, the unscored rate, 95% intervals and the ASR error per group; the file's
``reference_judges`` are scored beside ours. A judge fitted on a file is scored there by its
held-out variant (see :mod:`derta.judges.evaluate`).

    derta judge-eval ../shared/data/judge-labels/*.jsonl --judge offline --judge keyword \\
        --out judge_eval.json --markdown section.md --calibration-out calib.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ._main import run_command

HELP = "measure judges against human-labelled responses (accuracy, kappa, F1, ASR error per group, 95 percent intervals)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="+", metavar="FILE", help="labelled JSONL/JSON/CSV: response, question/prompt, label (unsafe|safe)")
    p.add_argument("--judge", action="append", metavar="NAME[=MODEL]", help="as for `derta judge` (default: offline); repeat for more")
    p.add_argument("--judge-model", metavar="SPEC", help="backend spec for model judges without NAME=MODEL")
    p.add_argument("--judge-option", action="append", default=[], metavar="NAME.KEY=VALUE", help="an option of judge NAME, as for `derta judge`")
    p.add_argument("--group-by", default="target_model,attack", metavar="FIELDS",
                   help="comma-separated fields for ASR error per group, each and combined (default: target_model,attack)")
    p.add_argument("--min-group", type=int, default=10, metavar="N", help="groups smaller than N rows are left out of mean/max ASR error (default 10)")
    p.add_argument("--out", metavar="FILE", help="write all results as JSON (judge identities, file sha256s, versions, seed)")
    p.add_argument("--markdown", metavar="FILE", help="write the results as a markdown section")
    p.add_argument("--doc", action="store_true", help="with --markdown: replace only the generated block of an existing document")
    p.add_argument("--calibration-out", metavar="FILE", help="write each judge's confusion counts (pooled and per file) for corrected ASR")
    p.add_argument("--no-reference", action="store_true", help="leave out the files' published reference judges")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap intervals (default 0)")
    p.add_argument("--draws", type=int, default=2000, help="bootstrap draws for kappa and F1 intervals (default 2000)")
    p.add_argument("--batch-size", type=int, default=64, help="items per call to a judge (default 64)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from ..io import write_json
    from ..judges.evaluate import calibration_document, evaluate, load_labelled, results_document
    from ..report.judges import format_table, markdown_section, replace_block
    from .judge import _make_judges, _NoBackends, judge_options

    if args.doc and not args.markdown:
        raise ValueError("--doc needs --markdown FILE (the document whose generated block is replaced)")
    if args.min_group < 1 or args.draws < 1:
        raise ValueError("--min-group and --draws must be at least 1")
    group_by = tuple(f.strip() for f in args.group_by.split(",") if f.strip())
    files = [load_labelled(f) for f in args.files]  # all checked before any judging starts
    specs = args.judge or ["offline"]
    try:
        judges = _make_judges(specs, args.judge_model, judge_options(args.judge_option))
    except _NoBackends as e:
        raise ValueError(str(e)) from None
    settings = {"seed": args.seed, "draws": args.draws, "group_by": list(group_by), "min_group": args.min_group}
    results = evaluate(judges, files, labels=specs, batch_size=args.batch_size, progress=not args.no_progress,
                       references=not args.no_reference, **{**settings, "group_by": group_by})
    doc = results_document(results, judges, specs, files, **settings)
    print(format_table(results))
    if args.out:
        write_json(args.out, doc)
        print(f"\nwrote {args.out}")
    if args.markdown:
        section = markdown_section(doc, level=2)
        path = Path(args.markdown)
        if args.doc:
            if not path.exists():
                raise FileNotFoundError(f"{path}: --doc replaces a block in an existing document")
            section = replace_block(path.read_text(encoding="utf-8"), section)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(section, encoding="utf-8")
        tmp.replace(path)
        print(f"wrote {path}")
    if args.calibration_out:
        write_json(args.calibration_out, calibration_document(results))
        print(f"wrote {args.calibration_out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``derta judge-eval ...`` as a function."""
    return run_command("judge-eval", argv)
