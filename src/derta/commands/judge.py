"""``derta judge``: add verdicts to a file of responses and print the attack success rate.

Each input line has ``response`` and ``prompt`` (or ``question``); Generation records work as
they are. Each output line keeps every input field and adds ``verdict``, ``judge`` and
``explanation`` (from the first ``--judge``), ``judge_metadata`` when the judge records any
(the llm judge's prompt hash), and ``judgements`` with every judge's verdict when several are
given. The output is written atomically. With several judges, Cohen's kappa and a confusion
table are printed for each pair. Every row records ``judge_key`` and ``judge_identity``
(:func:`derta.judges.base.judge_key`) of the first judge, and ``judge_keys`` of all when several.

``--judge NAME=SPEC`` gives a model judge its backend spec; ``--judge-option NAME.KEY=VALUE`` sets
one of its options (repeatable): the judge's own (``llm.prompt_file=rubric.txt``,
``strongreject.threshold=0.75``, ``harmbench.variant=repo``), ``NAME.max_new_tokens``, or a backend
keyword argument (``llamaguard3.base_url=http://127.0.0.1:8000/v1``). Values are read as YAML
scalars (numbers, true/false, strings).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

HELP = "judge responses (unsafe / safe / unscored); print the attack success rate and its 95 percent CI"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("responses", help="JSONL/JSON/CSV with 'response' and 'prompt' or 'question' per line")
    p.add_argument("--judge", action="append", metavar="NAME[=MODEL]",
                   help="offline (default), keyword, llm, harmbench, llamaguard3, llamaguard4, wildguard, strongreject; "
                        "repeat to compare judges; NAME=MODEL gives a model judge its own backend spec")
    p.add_argument("--judge-model", metavar="SPEC", help="backend spec for model judges without NAME=MODEL")
    p.add_argument("--judge-option", action="append", default=[], metavar="NAME.KEY=VALUE",
                   help="an option of judge NAME: its own (llm.prompt_file=FILE, strongreject.threshold=0.75), "
                        "max_new_tokens, or a backend argument (NAME.base_url=URL); repeatable")
    p.add_argument("--out", required=True, help="where to write the judged JSONL")
    p.add_argument("--batch-size", type=int, default=64, help="items per call to a model judge (default 64)")


def _load(path: str) -> list[dict[str, Any]]:
    from ..io import DataError, iter_rows

    rows = []
    for src, line, row in iter_rows(path):
        if "response" not in row:
            raise DataError(f"{src}:{line}: missing field 'response' (has: {', '.join(sorted(row)) or 'nothing'})")
        if not isinstance(row["response"], str):
            raise DataError(f"{src}:{line}: field 'response': expected a string, got {type(row['response']).__name__}")
        q, p = row.get("question"), row.get("prompt")
        if q is not None and not isinstance(q, str):
            raise DataError(f"{src}:{line}: field 'question': expected a string, got {type(q).__name__}")
        if p is not None and not isinstance(p, (str, dict)):
            raise DataError(f"{src}:{line}: field 'prompt': expected a string or an attack-prompt object, got {type(p).__name__}")
        if not (isinstance(q, str) and q.strip()) and not p:
            raise DataError(f"{src}:{line}: missing field 'prompt' or 'question' (has: {', '.join(sorted(row))})")
        rows.append(row)
    if not rows:
        raise DataError(f"{path}: no responses to judge")
    return rows


def judge_options(items: list[str]) -> dict[str, dict[str, Any]]:
    """``["llm.prompt_file=r.txt", "strongreject.threshold=0.7"]`` -> {judge: {key: value}}."""
    import yaml

    out: dict[str, dict[str, Any]] = {}
    for item in items:
        target, eq, raw = item.partition("=")
        name, dot, key = target.partition(".")
        if not eq or not dot or not name or not key:
            raise ValueError(f"--judge-option {item!r}: expected NAME.KEY=VALUE, e.g. strongreject.threshold=0.75")
        try:
            value = yaml.safe_load(raw) if raw.strip() else raw
        except yaml.YAMLError:
            value = raw
        out.setdefault(name, {})[key] = value
    return out


def _make_judges(specs: list[str], default_model: str | None, options: dict[str, dict[str, Any]] | None = None) -> list[Any]:
    from ..judges import JUDGES, MODEL_JUDGES, build_judge

    options = options or {}
    unused = sorted(set(options) - {s.partition("=")[0] for s in specs})
    if unused:
        raise ValueError(f"--judge-option for {', '.join(unused)}, which is not among the --judge names")
    judges = []
    for spec in specs:
        name, _, model = spec.partition("=")
        if name not in JUDGES:
            raise ValueError(f"unknown judge {name!r} (have: {', '.join(JUDGES)})")
        if name in MODEL_JUDGES:
            model = model or default_model or ""
            if not model:
                raise ValueError(f"--judge {name} needs a model: add --judge-model SPEC (or --judge {name}=SPEC)")
            try:
                from ..backends import load_backend  # noqa: F401 - written separately; optional here
            except ImportError as e:
                raise _NoBackends(f"--judge {name} needs the model backends (derta.backends.load_backend), which could not be imported: {e}") from None
        elif model:
            raise ValueError(f"--judge {name} takes no model (got {model!r})")
        # a model judge's model loads now: the judge is named after the loaded backend
        judges.append(build_judge(name, model or None, options.get(name), load=True))
    return judges


class _NoBackends(RuntimeError):
    pass


def _judge_all(judge: Any, rows: list[dict[str, Any]], batch: int) -> list[Any]:
    out = []
    for i in range(0, len(rows), max(1, batch)):
        out += judge.judge(rows[i : i + batch])
    return out


def run(args: argparse.Namespace) -> int:
    from ..io import write_jsonl
    from ..judges import cohen_kappa, confusion, format_confusion, judge_identity, judge_key
    from ..stats import asr

    specs = args.judge or ["offline"]
    rows = _load(args.responses)
    try:
        judges = _make_judges(specs, args.judge_model, judge_options(args.judge_option))
    except _NoBackends as e:
        print(f"derta judge: error: {e}", file=sys.stderr)
        return 2
    results = [_judge_all(j, rows, args.batch_size) for j in judges]
    names = [j.name for j in judges]
    keys, first_identity = [judge_key(j) for j in judges], judge_identity(judges[0])
    out = []
    for i, row in enumerate(rows):
        first = results[0][i]
        new = {**row, "verdict": first.verdict, "judge": first.judge, "explanation": first.explanation,
               "judge_key": keys[0], "judge_identity": first_identity}
        if first.metadata:
            new["judge_metadata"] = {k: v for k, v in first.metadata.items() if k != "raw"}
        if len(judges) > 1:
            new["judgements"] = {n: {"verdict": r[i].verdict, "explanation": r[i].explanation} for n, r in zip(names, results)}
            new["judge_keys"] = dict(zip(names, keys))
        out.append(new)
    write_jsonl(args.out, out)
    print(f"judged {len(rows)} responses -> {args.out}")
    for name, res in zip(names, results):
        print(f"{name}: {asr(j.verdict for j in res)}")
    for a in range(len(judges)):
        for b in range(a + 1, len(judges)):
            va, vb = [j.verdict for j in results[a]], [j.verdict for j in results[b]]
            print(f"\n{names[a]} vs {names[b]}: Cohen's kappa {cohen_kappa(va, vb):.3f}, agreement {sum(x == y for x, y in zip(va, vb))}/{len(va)}")
            print(format_confusion(confusion(va, vb), names[a], names[b]))
    return 0
