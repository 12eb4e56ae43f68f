"""The judged log of a run directory, as its readers see it: where it is and how it is read.

``judged.jsonl`` is written by the judging stage (:mod:`derta.eval.judging`); analyses and
reports only read it, so they need nothing of the stage that writes it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..io import read_log
from ..records import JudgedRecord

JUDGED_FILE = "judged.jsonl"


def read_judged(path: str | Path) -> list[dict[str, Any]]:
    """All rows of a judged log as stored, in file order, each checked as a :class:`JudgedRecord`
    (see :func:`derta.io.read_log`: a bad row is a DataError naming the file, line and field)."""
    return read_log(path, JudgedRecord.checked, "judged record")


def latest_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The newest row per (model, attack, prompt_id, judge name), in log order: what a changed
    judge decided replaces what it decided before, and the rows of a model changed under the same
    name (another ``model_id``, judged later) replace its predecessor's (for readers of a whole log)."""
    last = {(r["model"], r["attack"], r["prompt_id"], r["judge"]): i for i, r in enumerate(rows)}
    return [rows[i] for i in sorted(last.values())]
