"""``derta judge``: add verdicts to a file of responses and print the attack success rate.

Each input line has ``response`` and ``prompt`` (or ``question``); Generation records work as
they are. Each output line keeps every input field and adds ``verdict``, ``judge`` and
``explanation`` (from the first ``--judge``), ``judge_metadata`` when the judge records any
(the llm judge's prompt hash), and ``judgements`` with every judge's verdict when several are
given. The output is written atomically. With several judges, Cohen's kappa and a confusion
table are printed for each pair. Ids (the ``id`` field) must be unique.

Verdicts are appended, one fsynced line each, to ``.OUT.judging.jsonl`` beside the output
(:class:`~derta.logs.KeyedLog`, keyed by the row's id or line, its content hash and the judge key),
so a killed run continues where it stopped; the log is removed once the output is written. Temp
files left by a killed write of the output are removed on start. Every row records ``judge_key`` and ``judge_identity``
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
from pathlib import Path
from typing import Any

from ._main import positive_int, run_command

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
    p.add_argument("--batch-size", type=positive_int, default=64, metavar="N", help="items per call to a model judge, >= 1 (default 64)")


def _load(path: str) -> list[tuple[str, dict[str, Any]]]:
    """(where, row) per input row; ``where`` is ``FILE:LINE``."""
    from ..io import DataError, iter_rows

    rows = []
    ids: dict[str, str] = {}
    for src, line, row in iter_rows(path):
        where = f"{src}:{line}"
        if "id" in row and row["id"] is not None:
            rid = row["id"]
            if not isinstance(rid, (str, int)) or isinstance(rid, bool):
                raise DataError(f"{where}: field 'id': expected a string or an integer, got {type(rid).__name__}")
            if str(rid) in ids:
                raise DataError(f"{where}: field 'id': {rid!r} is also the id of {ids[str(rid)]}; ids must be unique")
            ids[str(rid)] = where
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
        rows.append((where, row))
    if not rows:
        raise DataError(f"{path}: no responses to judge")
    return rows


def judge_options(items: list[str]) -> dict[str, dict[str, Any]]:
    """``["llm.prompt_file=r.txt", "strongreject.threshold=0.7"]`` -> {judge: {key: value}}."""
    import yaml

    from ..config import ConfigError
    from ..io import is_secret_key

    out: dict[str, dict[str, Any]] = {}
    for item in items:
        target, eq, raw = item.partition("=")
        name, dot, key = target.partition(".")
        if not eq or not dot or not name or not key:
            raise ValueError(f"--judge-option {item!r}: expected NAME.KEY=VALUE, e.g. strongreject.threshold=0.75")
        if is_secret_key(key):
            raise ConfigError(f"--judge-option {target}: a secret may not be given on the command line; put it in an "
                              f"environment variable and name it: --judge-option {name}.api_key_env=VARIABLE")
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


def _row_key(where: str, row: dict[str, Any]) -> str:
    """A row's id (or its line when it has none) and a hash of its content: a changed row is judged again."""
    from ..judges.base import canonical_json
    from ..judges.model import prompt_sha

    rid = row.get("id")
    return f"{'id:' + str(rid) if rid is not None else 'line:' + where.rsplit(':', 1)[-1]}:{prompt_sha(canonical_json(row))}"


def log_path(out: str | Path) -> Path:
    """The resumable log of ``derta judge --out OUT``: ``.OUT.judging.jsonl`` beside it."""
    out = Path(out)
    return out.parent / f".{out.name}.judging.jsonl"


def clean_temp_files(out: str | Path) -> list[Path]:
    """Remove what a killed atomic write of ``out`` left behind (``.OUT.*.tmp``, :func:`derta.io.write_jsonl`)."""
    out = Path(out)
    gone = []
    if out.parent.is_dir():
        for tmp in out.parent.glob(f".{out.name}.*.tmp"):
            tmp.unlink(missing_ok=True)
            gone.append(tmp)
    return gone


def _judge_all(judge: Any, key: str, rows: list[tuple[str, dict[str, Any]]], batch: int, log: Any) -> list[dict[str, Any]]:
    """Every row's verdict by ``judge``: from ``log`` when there, else judged ``batch`` at a time and appended."""
    keys = [(_row_key(where, row), key) for where, row in rows]
    todo = [i for i, k in enumerate(keys) if k not in log]
    for start in range(0, len(todo), batch):
        idx = todo[start : start + batch]
        got = judge.judge([rows[i][1] for i in idx])
        if len(got) != len(idx):
            raise RuntimeError(f"judge {judge.name!r} returned {len(got)} verdicts for {len(idx)} responses")
        for i, j in zip(idx, got):
            meta = {k: v for k, v in (j.metadata or {}).items() if k != "raw"}
            log.append({"row": keys[i][0], "judge_key": key, "verdict": j.verdict, "judge": j.judge,
                        "explanation": j.explanation, "judge_metadata": meta})
    return [log.records[k] for k in keys]


def run(args: argparse.Namespace) -> int:
    from ..io import write_jsonl
    from ..judges import cohen_kappa, confusion, format_confusion, judge_identity, judge_key
    from ..logs import KeyedLog
    from ..stats import asr

    specs = args.judge or ["offline"]
    rows = _load(args.responses)
    options = judge_options(args.judge_option)
    out_path = Path(args.out)
    if out_path.is_dir():
        raise ValueError(f"--out {args.out}: is a directory; give the file to write (e.g. {out_path / 'judged.jsonl'})")
    try:
        judges = _make_judges(specs, args.judge_model, options)
    except _NoBackends as e:
        print(f"derta judge: error: {e}", file=sys.stderr)
        return 2
    clean_temp_files(out_path)
    names = [j.name for j in judges]
    keys, first_identity = [judge_key(j) for j in judges], judge_identity(judges[0])
    logged = log_path(out_path)
    with KeyedLog(logged, key=lambda r: (r["row"], r["judge_key"])) as log:
        if log.records:
            print(f"resuming: {len(log.records)} verdicts already in {logged}", file=sys.stderr)
        results = [_judge_all(j, k, rows, args.batch_size, log) for j, k in zip(judges, keys)]
    out = []
    for i, (_, row) in enumerate(rows):
        first = results[0][i]
        new = {**row, "verdict": first["verdict"], "judge": first["judge"], "explanation": first["explanation"],
               "judge_key": keys[0], "judge_identity": first_identity}
        if first["judge_metadata"]:
            new["judge_metadata"] = first["judge_metadata"]
        if len(judges) > 1:
            new["judgements"] = {n: {"verdict": r[i]["verdict"], "explanation": r[i]["explanation"]} for n, r in zip(names, results)}
            new["judge_keys"] = dict(zip(names, keys))
        out.append(new)
    write_jsonl(out_path, out)
    for leftover in (logged, Path(f"{logged}.meta.json"), Path(f"{logged}.errors.jsonl")):
        leftover.unlink(missing_ok=True)  # the output holds every verdict now
    print(f"judged {len(rows)} responses -> {args.out}")
    for name, res in zip(names, results):
        print(f"{name}: {asr(r['verdict'] for r in res)}")
    for a in range(len(judges)):
        for b in range(a + 1, len(judges)):
            va, vb = [r["verdict"] for r in results[a]], [r["verdict"] for r in results[b]]
            print(f"\n{names[a]} vs {names[b]}: Cohen's kappa {cohen_kappa(va, vb):.3f}, agreement {sum(x == y for x, y in zip(va, vb))}/{len(va)}")
            print(format_confusion(confusion(va, vb), names[a], names[b]))
    return 0


def main(argv: list[str] | None = None) -> int:
    """``derta judge ...`` as a function."""
    return run_command("judge", argv)
