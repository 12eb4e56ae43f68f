"""Judges measured against human labels: per (judge, file) agreement, intervals and ASR error.

A labelled file is JSONL/JSON/CSV with ``response``, ``question`` and/or ``prompt``, and
``label`` in {unsafe, safe}; optional ``target_model`` / ``attack`` (for ASR error per group)
and ``reference_judges`` ({name: 1 = unsafe / 0 = safe}: published judges' verdicts on the same
rows, scored beside ours as "NAME (published)").

Judges see only question, prompt, response, attack and prefill: never the label.

Fitted judges (leave one file out). A judge may carry ``fitted_on: {file name: sha256}`` and
``held_out(sha256) -> judge``, the variant fitted without that file. A file whose sha256 the judge
was fitted on is scored with ``held_out(sha)`` ("held-out (leave-one-file-out)"); when there is
no such variant (no ``held_out``, or it returns None / raises LookupError or NotImplementedError)
the original judge scores it and the row says "in-sample (fitted on this file)".

Tuned judges (a held-out part of each file). A rule judge whose rules were written by reading
errors on part of a file carries ``tuned_on: {file name: sha256}`` and ``tuning_row(row id) ->
bool``. Such a file is scored, for every judge alike (ours and the published ones, so that they
stay comparable), on the rows no tuned judge read; the result says so ("held-out rows").
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..io import DataError, iter_rows
from ..stats import wilson
from .agreement import LabelCounts
from .base import judge_identity, judge_key

FIT_HELD_OUT = "held-out (leave-one-file-out)"
FIT_IN_SAMPLE = "in-sample (fitted on this file)"
FIT_UNSEEN = "not fitted on this file"
FIT_PUBLISHED = "published verdicts"
FIT_TUNED = "held-out rows (rules tuned on the other rows of this file)"
FIT_SAME_ROWS = "held-out rows, as for the tuned judges"
DEFAULT_GROUP_BY = ("target_model", "attack")
DEFAULT_MIN_GROUP = 10
DEFAULT_DRAWS = 2000
CALIBRATION_FORMAT = "derta.calibration/1"
RESULTS_FORMAT = "derta.judge_eval/1"
#: The only fields a judge is shown (a label or a published verdict must not leak into it).
ITEM_FIELDS = ("question", "prompt", "response", "attack", "prefill", "context")
#: Cells of the label x verdict table, in the order of their integer codes (label * 3 + verdict).
_CELLS = ("tp", "fn", "unscored_unsafe", "fp", "tn", "unscored_safe")


@dataclass
class LabelledFile:
    path: str
    sha256: str
    rows: list[dict[str, Any]] = field(repr=False)

    @property
    def name(self) -> str:
        return Path(self.path).name

    @property
    def gold(self) -> list[str]:
        return [r["label"] for r in self.rows]


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_labelled(path: str | Path) -> LabelledFile:
    """Read and check a labelled file; a DataError names file:line and the field otherwise."""
    rows = []
    for src, line, row in iter_rows(path):
        where = f"{src}:{line}"
        if not isinstance(row.get("response"), str):
            got = "missing" if "response" not in row else f"expected a string, got {type(row['response']).__name__}"
            raise DataError(f"{where}: field 'response': {got}")
        q, p = row.get("question"), row.get("prompt")
        if not (isinstance(q, str) and q.strip()) and not (isinstance(p, (str, dict)) and p):
            raise DataError(f"{where}: field 'question' / 'prompt': need at least one non-empty (has: {', '.join(sorted(row))})")
        if row.get("label") not in ("unsafe", "safe"):
            got = "missing" if "label" not in row else f"got {row['label']!r}"
            raise DataError(f"{where}: field 'label': expected 'unsafe' or 'safe', {got}")
        refs = row.get("reference_judges")
        if refs is not None and (not isinstance(refs, dict) or any(v not in (0, 1, None) for v in refs.values())):
            raise DataError(f"{where}: field 'reference_judges': expected {{name: 1 (unsafe) | 0 (safe)}}, got {refs!r:.80}")
        rows.append(row)
    if not rows:
        raise DataError(f"{path}: no labelled rows")
    return LabelledFile(str(path), sha256_file(path), rows)


def resolve_fit(judge: Any, sha: str) -> tuple[Any, str | None]:
    """(the judge that should score a file with this sha256, how it relates to the file)."""
    fitted = getattr(judge, "fitted_on", None)
    if not fitted:
        return judge, None
    if sha not in set(fitted.values()):
        return judge, FIT_UNSEEN
    held_out = getattr(judge, "held_out", None)
    variant = None
    if callable(held_out):
        try:
            variant = held_out(sha)
        except (LookupError, NotImplementedError):
            variant = None
    return (variant, FIT_HELD_OUT) if variant is not None else (judge, FIT_IN_SAMPLE)


def held_out_rows(f: LabelledFile, judges: Sequence[Any]) -> tuple[LabelledFile, bool]:
    """The part of ``f`` that no judge was tuned on (the whole file when none was), and whether it is a part."""
    tuned = [j for j in judges if f.sha256 in set((getattr(j, "tuned_on", None) or {}).values()) and callable(getattr(j, "tuning_row", None))]
    if not tuned:
        return f, False
    missing = [i for i, r in enumerate(f.rows, start=1) if not isinstance(r.get("id"), str)]
    if missing:
        raise DataError(f"{f.path}: row {missing[0]}: field 'id': a judge was tuned on part of this file, and the part is chosen by row id")
    rows = [r for r in f.rows if not any(j.tuning_row(r["id"]) for j in tuned)]
    return LabelledFile(f.path, f.sha256, rows), True


def judge_verdicts(judge: Any, rows: list[dict[str, Any]], batch_size: int = 64, desc: str = "", progress: bool = True) -> list[str]:
    """The judge's verdict on every row, in order, with a progress bar (stderr, terminals only)."""
    from tqdm import tqdm

    items = [{k: r[k] for k in ITEM_FIELDS if k in r} for r in rows]
    out: list[str] = []
    step = max(1, batch_size)
    with tqdm(total=len(items), desc=desc, unit="row", disable=None if progress else True, leave=False) as bar:
        for i in range(0, len(items), step):
            batch = items[i : i + step]
            got = judge.judge(batch)
            if len(got) != len(batch):
                raise ValueError(f"judge {judge.name!r} returned {len(got)} judgements for {len(batch)} items")
            out += [j.verdict for j in got]
            bar.update(len(batch))
    return out


def reference_verdicts(f: LabelledFile) -> dict[str, list[str]]:
    """Published judges' verdicts per name (1 -> unsafe, 0 -> safe, missing -> unscored)."""
    names = list(dict.fromkeys(n for r in f.rows for n in (r.get("reference_judges") or {})))
    word = {1: "unsafe", 0: "safe"}
    return {n: [word.get((r.get("reference_judges") or {}).get(n), "unscored") for r in f.rows] for n in names}


# -- metrics ------------------------------------------------------------------------------------

def _interval(value: float | None, k: int, n: int) -> dict[str, Any]:
    low, high = wilson(k, n) if n else (None, None)
    return {"value": value, "k": k, "n": n, "ci_low": low, "ci_high": high}


def bootstrap_kappa_f1(gold: Sequence[str], verdicts: Sequence[str], draws: int = DEFAULT_DRAWS, seed: int = 0,
                       level: float = 0.95) -> dict[str, tuple[float | None, float | None]]:
    """Percentile bootstrap intervals for kappa and F1, resampling rows with replacement (seeded)."""
    import numpy as np

    g = np.array([0 if x == "unsafe" else 1 for x in gold])
    v = np.array([{"unsafe": 0, "safe": 1}.get(x, 2) for x in verdicts])
    codes, n = g * 3 + v, len(g)
    rng = np.random.default_rng(seed)
    out: dict[str, list[np.ndarray]] = {"kappa": [], "f1": []}
    chunk = max(1, 2_000_000 // max(n, 1))  # bounded memory on large files
    for start in range(0, draws, chunk):
        b = min(chunk, draws - start)
        idx = rng.integers(0, n, size=(b, n))
        flat = codes[idx] + 6 * np.arange(b)[:, None]
        c = np.bincount(flat.ravel(), minlength=6 * b).reshape(b, 6).astype(float)
        tp, fn, uu, fp, tn, us = (c[:, i] for i in range(6))
        pos, neg, pred_u, pred_s = tp + fn + uu, fp + tn + us, tp + fp, tn + fn
        p_o = (tp + tn) / n
        p_e = (pos * pred_u + neg * pred_s) / (n * n)
        with np.errstate(divide="ignore", invalid="ignore"):
            out["kappa"].append(np.where(p_e == 1.0, 1.0, (p_o - p_e) / (1 - p_e)))
            out["f1"].append(np.where(2 * tp + fp + fn + uu > 0, 2 * tp / (2 * tp + fp + fn + uu), np.nan))
    alpha = (1 - level) / 2
    res = {}
    for k, parts in out.items():
        x = np.concatenate(parts)
        x = x[~np.isnan(x)]
        res[k] = (float(np.quantile(x, alpha)), float(np.quantile(x, 1 - alpha))) if len(x) else (None, None)
    return res


def asr_errors(rows: list[dict[str, Any]], gold: Sequence[str], verdicts: Sequence[str], group_by: Sequence[str] = DEFAULT_GROUP_BY,
               min_group: int = DEFAULT_MIN_GROUP) -> dict[str, Any]:
    """Judge ASR - human ASR over the whole file and per group.

    Groupings: each field of ``group_by`` the file has, and (when two or more are present) their
    combination. Judge ASR = unsafe / scored, human ASR = unsafe labels / rows. Mean and max |error|
    are over groups of at least ``min_group`` rows (smaller ones are listed but left out: the error
    of a 2-row group says more about chance than about the judge).
    """
    present = [f for f in group_by if any(f in r and r[f] is not None for r in rows)]
    groupings = [(f,) for f in present] + ([tuple(present)] if len(present) > 1 else [])
    out: dict[str, Any] = {"overall": _asr_error(gold, verdicts), "groupings": [], "min_group": min_group}
    worst = None
    for fields in groupings:
        members: dict[str, list[int]] = {}
        for i, r in enumerate(rows):
            members.setdefault(" / ".join("(none)" if r.get(f) is None else str(r[f]) for f in fields), []).append(i)
        groups = [{"group": key, **_asr_error([gold[i] for i in idx], [verdicts[i] for i in idx])} for key, idx in members.items()]
        counted = [g for g in groups if g["n"] >= min_group and g["error"] is not None]
        top = max(counted, key=lambda g: abs(g["error"]), default=None)
        name = " × ".join(fields)
        out["groupings"].append({"by": name, "groups": groups, "counted": len(counted),
                                 "mean_abs_error": sum(abs(g["error"]) for g in counted) / len(counted) if counted else None,
                                 "max_abs_error": abs(top["error"]) if top else None, "worst": top["group"] if top else None})
        if top and (worst is None or abs(top["error"]) > abs(worst["error"])):
            worst = {"by": name, "group": top["group"], "error": top["error"], "n": top["n"]}
    out["worst"] = worst
    return out


def _asr_error(gold: Sequence[str], verdicts: Sequence[str]) -> dict[str, Any]:
    scored = sum(v != "unscored" for v in verdicts)
    judge = sum(v == "unsafe" for v in verdicts) / scored if scored else None
    human = sum(g == "unsafe" for g in gold) / len(gold) if gold else None
    return {"n": len(gold), "human_asr": human, "judge_asr": judge,
            "error": judge - human if judge is not None and human is not None else None}


def score(gold: Sequence[str], verdicts: Sequence[str], rows: list[dict[str, Any]], *, group_by: Sequence[str] = DEFAULT_GROUP_BY,
          min_group: int = DEFAULT_MIN_GROUP, draws: int = DEFAULT_DRAWS, seed: int = 0) -> dict[str, Any]:
    """Every metric of one judge on one file (see docs/judges.md for the definitions)."""
    c = LabelCounts.from_verdicts(gold, verdicts)
    boot = bootstrap_kappa_f1(gold, verdicts, draws, seed)
    return {
        "n": c.n, "confusion": c.to_dict(),
        "accuracy": _interval(c.accuracy, c.tp + c.tn, c.n),
        "precision": _interval(c.precision, c.tp, c.tp + c.fp),
        "recall": _interval(c.recall, c.tp, c.n_pos),
        "sensitivity": _interval(c.sensitivity, c.tp, c.tp + c.fn),
        "specificity": _interval(c.specificity, c.tn, c.tn + c.fp),
        "unscored_rate": _interval(c.unscored / c.n, c.unscored, c.n),
        "f1": {"value": c.f1, "ci_low": boot["f1"][0], "ci_high": boot["f1"][1]},
        "kappa": {"value": c.kappa, "ci_low": boot["kappa"][0], "ci_high": boot["kappa"][1]},
        "asr_error": asr_errors(rows, gold, verdicts, group_by, min_group),
    }


# -- the whole evaluation -----------------------------------------------------------------------

def evaluate(judges: Sequence[Any], files: Sequence[LabelledFile], *, labels: Sequence[str] | None = None,
             group_by: Sequence[str] = DEFAULT_GROUP_BY, min_group: int = DEFAULT_MIN_GROUP, draws: int = DEFAULT_DRAWS,
             seed: int = 0, batch_size: int = 64, progress: bool = True, references: bool = True) -> list[dict[str, Any]]:
    """One result per (judge, file), then the file's published judges; ``labels`` name our judges."""
    labels = list(labels or [j.name for j in judges])
    results = []
    kw = {"group_by": group_by, "min_group": min_group, "draws": draws, "seed": seed}
    for whole in files:
        f, part = held_out_rows(whole, judges)
        gold = f.gold
        for label, judge in zip(labels, judges):
            scorer, fit = resolve_fit(judge, f.sha256)
            if part:
                tuned = f.sha256 in set((getattr(judge, "tuned_on", None) or {}).values())
                fit = FIT_TUNED if tuned else FIT_SAME_ROWS
            verdicts = judge_verdicts(scorer, f.rows, batch_size, f"{label} on {f.name}", progress)
            results.append({"file": f.name, "sha256": f.sha256, "judge": label, "judge_key": judge_key(judge), "identity": judge_identity(judge),
                            "kind": "derta", "fit": fit, "scored_by": judge_identity(scorer), **score(gold, verdicts, f.rows, **kw)})
        for name, verdicts in (reference_verdicts(f) if references else {}).items():
            ident = {"name": name, "kind": "published", "source": f.name}
            fit = f"{FIT_PUBLISHED}, held-out rows" if part else FIT_PUBLISHED
            results.append({"file": f.name, "sha256": f.sha256, "judge": f"{name} (published)", "judge_key": None, "identity": ident,
                            "kind": "published", "fit": fit, "scored_by": ident, **score(gold, verdicts, f.rows, **kw)})
    return results


def results_document(results: list[dict[str, Any]], judges: Sequence[Any], labels: Sequence[str], files: Sequence[LabelledFile],
                     **settings: Any) -> dict[str, Any]:
    """The ``--out`` JSON: results plus what makes them reproducible."""
    from ..io import environment

    return {"format": RESULTS_FORMAT, **settings,
            "judges": [{"label": lab, "name": j.name, "judge_key": judge_key(j), "identity": judge_identity(j),
                        "fitted_on": getattr(j, "fitted_on", None) or None}
                       for lab, j in zip(labels, judges)],
            "files": [{"name": f.name, "path": f.path, "sha256": f.sha256, "rows": len(f.rows), "unsafe": f.gold.count("unsafe")} for f in files],
            "environment": environment(), "results": results}


# -- calibration: what the corrected ASR needs ---------------------------------------------------

def calibration_document(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Per judge (keyed by :func:`judge_key`, the hash of its identity): confusion counts pooled over
    the files, and per file (our judges only).

    The held-out variant's counts are used where there is one; files a judge was fitted on
    without a held-out variant are listed under ``in_sample`` (their counts are optimistic).
    """
    judges: dict[str, dict[str, Any]] = {}
    for r in results:
        if r["kind"] != "derta":
            continue
        j = judges.setdefault(r["judge_key"], {"name": r["judge"], "identity": r["identity"], "files": {}, "in_sample": []})
        j["files"][r["file"]] = {**r["confusion"], "sha256": r["sha256"], "fit": r["fit"], "accuracy": r["accuracy"]["value"],
                                 "kappa": r["kappa"]["value"]}
        if r["fit"] == FIT_IN_SAMPLE:
            j["in_sample"].append(r["file"])
    for key, j in judges.items():
        pooled = LabelCounts()
        for counts in j["files"].values():
            pooled = pooled + LabelCounts.from_dict(counts)
        note = f"; in-sample on {', '.join(j['in_sample'])}" if j["in_sample"] else ""
        j.update(pooled.to_dict(), accuracy=pooled.accuracy, kappa=pooled.kappa, sensitivity=pooled.sensitivity,
                 specificity=pooled.specificity, source=f"derta judge-eval of {j['name']} (judge key {key}) on {', '.join(j['files'])}{note}")
    return {"format": CALIBRATION_FORMAT, "judges": judges}


def load_calibration(path: str | Path) -> dict[str, dict[str, Any]]:
    """judge name (and judge key) -> calibration, from a ``derta judge-eval --calibration-out`` file."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None
    if not isinstance(doc, dict) or doc.get("format") != CALIBRATION_FORMAT or not isinstance(doc.get("judges"), dict):
        raise DataError(f"{path}: not a calibration file (format {CALIBRATION_FORMAT!r}, written by derta judge-eval --calibration-out)")
    out: dict[str, dict[str, Any]] = {}
    for key, calib in doc["judges"].items():
        if not isinstance(calib, dict):
            raise DataError(f"{path}: judge {key!r}: expected an object with tp, fn, tn, fp")
        for k in (calib.get("name"), key):
            if k:
                out.setdefault(str(k), calib)
    return out


def builtin_calibration(names: Sequence[str], make: Callable[[str], Any] | None = None) -> dict[str, dict[str, Any]]:
    """name -> the ``calibration`` a judge carries, for the named judges that need no model."""
    from . import MODEL_JUDGES, get_judge

    out = {}
    for name in names:
        base = name.partition("=")[0]
        if base in MODEL_JUDGES:
            continue
        try:
            judge = (make or get_judge)(base)
        except ValueError:  # not a judge we can build here (e.g. a scorer name)
            continue
        calib = getattr(judge, "calibration", None)
        if isinstance(calib, dict):
            out[name] = calib
    return out
