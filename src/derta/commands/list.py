"""``derta list attacks|judges|recipes|backends|sets [--json]``: what a config or an option can name.

Each line is a registry name and a one-line description (the first sentence of its docstring, or
the registry's own description); ``--json`` prints a JSON list of ``{name, description}``.
"""

from __future__ import annotations

import argparse
import inspect
import json
import re
import sys
from typing import Any

from ._main import run_command

HELP = "list the attacks, judges, data recipes, model backends or evaluation sets, with a line on each"

KINDS = ("attacks", "judges", "recipes", "backends", "sets")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("kind", choices=KINDS, help="which registry to list")
    p.add_argument("--json", action="store_true", help="print a JSON list of {name, description}")


def summary(obj: Any) -> str:
    """The first sentence of ``obj``'s docstring (its module's, for a dataclass without one)."""
    doc = inspect.getdoc(obj) or ""
    if not doc or doc.startswith(f"{getattr(obj, '__name__', '')}("):  # the signature a dataclass writes
        doc = inspect.getdoc(sys.modules.get(getattr(obj, "__module__", ""), None)) or ""
    text = " ".join(doc.split("\n\n")[0].split()).replace("``", "")
    m = re.match(r"(.+?[.!?])(\s|$)", text)
    return m.group(1) if m else text


def attacks() -> list[dict[str, str]]:
    from ..attacks import ATTACKS, PREBUILT

    rows = [{"name": name, "description": summary(cls)} for name, cls in ATTACKS.items()]
    rows += [{"name": f"{name}-prebuilt", "description": f"The DeRTa test sets' own {name} prompts, as they are (file {file}; needs questions.dir)"}
             for name, file in PREBUILT.items()]
    return rows


def judges() -> list[dict[str, str]]:
    from ..judges import JUDGES, MODEL_JUDGES

    return [{"name": name, "description": summary(cls) + (" Needs a model (NAME=SPEC)." if name in MODEL_JUDGES else "")}
            for name, cls in JUDGES.items()]


def recipes() -> list[dict[str, str]]:
    from ..data.recipes import RECIPES

    return [{"name": name, "description": summary(fn)} for name, fn in RECIPES.items()]


def backends() -> list[dict[str, str]]:
    from ..backends import BACKENDS, DESCRIPTIONS

    return [{"name": kind, "description": DESCRIPTIONS.get(kind) or ("" if isinstance(factory, str) else summary(factory))}
            for kind, factory in BACKENDS.items()]


def sets() -> list[dict[str, str]]:
    """The evaluation sets ``derta eval`` reads: harmful questions, helpfulness tasks, over-refusal."""
    from ..attacks.questions import PLAIN_SET
    from ..eval.config import FILE_ONLY_TASKS, HELPFULNESS_SETS

    tasks = {"gsm8k": "grade-school maths, scored on the final number", "mmlu": "multiple choice, scored on the letter",
             "alpaca_eval": "open instructions, judged pairwise against reference answers by an LLM",
             "qa": "short questions with one right answer (answer, alternatives separated by |)"}
    rows = [{"name": PLAIN_SET, "description": "Harmful questions of the DeRTa paper (100 Do-Not-Answer + 100 HarmBench; questions.sets)"}]
    rows += [{"name": task, "description": f"Helpfulness: {tasks.get(task, task)} (file {file} in questions.dir)"} for task, file in HELPFULNESS_SETS.items()]
    rows += [{"name": task, "description": f"Helpfulness: {tasks.get(task, task)} (from helpfulness.files.{task})"} for task in FILE_ONLY_TASKS]
    rows.append({"name": "over_refusal", "description": "Benign questions that sound harmful, shipped with derta "
                 "(over_refusal.sets: [own], the default; over_refusal.file replaces them)"})
    rows.append({"name": "xstest", "description": "XSTest: 250 safe prompts that sound unsafe (over-refusal) and 200 unsafe contrast "
                 "prompts (compliance), by type (over_refusal.sets: [xstest]; from the data directory or downloaded, sha256-checked)"})
    return rows


LISTS = {"attacks": attacks, "judges": judges, "recipes": recipes, "backends": backends, "sets": sets}


def run(args: argparse.Namespace) -> int:
    rows = LISTS[args.kind]()
    if args.json:
        text = json.dumps(rows, ensure_ascii=False, indent=1) + "\n"
    else:
        width = max(len(r["name"]) for r in rows)
        text = "".join(f"{r['name']:<{width}}  {r['description']}".rstrip() + "\n" for r in rows)
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:  # `derta list judges | head`
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def main(argv: list[str] | None = None) -> int:
    """``derta list ...`` as a function."""
    return run_command("list", argv)
