"""report.md from a summary, and the table layout that the HTML page shares.

The results table follows the DeRTa paper's Table 2: one row per model; attack columns (ASR %,
lower is better), then helpfulness (GSM8K, MMLU, AlpacaEval win rate; higher is better), then the
over-refusal rate on benign-but-scary questions (lower is better), then the share of all the
model's responses that are degenerate (empty, or one short unit looped: neither a refusal nor an
answer). Every cell is the summary's fraction times 100 with one decimal, and carries its 95%
interval and n; a summary written before degenerate responses were counted shows "–" there.
A model with at least ``DEGENERATE_WARN`` of its responses degenerate gets a warning line: its ASR
and over-refusal do not measure refusals.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

#: First line of every report.md written here (so a rerun may replace it, and nothing else).
MARKER = "<!-- written by derta report -->"
HELPFULNESS_LABELS = {"gsm8k": "GSM8K", "mmlu": "MMLU", "alpaca_eval": "AlpacaEval", "exact_answer": "Helpful"}
HELPFULNESS_ORDER = ("gsm8k", "mmlu", "alpaca_eval")
DEGENERATE_WARN = 0.10


@dataclass(frozen=True)
class Column:
    key: str  # attack name, helpfulness task, "over_refusal" or "degenerate"
    label: str
    group: str  # "attack", "helpfulness", "over_refusal", "degenerate"


def columns(summary: dict[str, Any]) -> list[Column]:
    models = summary.get("models", {})
    attacks = summary.get("attacks") or list(dict.fromkeys(a for m in models.values() for a in m.get("attacks", {})))
    tasks = list(dict.fromkeys(t for m in models.values() for t in (m.get("helpfulness") or {})))
    tasks = [t for t in HELPFULNESS_ORDER if t in tasks] + [t for t in tasks if t not in HELPFULNESS_ORDER]
    cols = [Column(a, a, "attack") for a in attacks]
    cols += [Column(t, HELPFULNESS_LABELS.get(t, t), "helpfulness") for t in tasks]
    if any(m.get("over_refusal") for m in models.values()):
        cols.append(Column("over_refusal", "Over-refusal", "over_refusal"))
    if models:
        cols.append(Column("degenerate", "Degenerate", "degenerate"))
    return cols


def cell(entry: dict[str, Any], col: Column) -> dict[str, Any] | None:
    """The summary's record for one table cell, with its fraction under ``value``."""
    if col.group == "attack":
        c = (entry.get("attacks") or {}).get(col.key)
        return None if c is None else _corrected({**c, "value": c.get("asr")}, (entry.get("attacks_corrected") or {}).get(col.key))
    if col.group == "helpfulness":
        c = (entry.get("helpfulness") or {}).get(col.key)
        return None if c is None else {**c, "value": c.get("rate")}
    c = entry.get(col.group)
    return None if c is None else {**c, "value": c.get("rate")}


def degenerate_warnings(summary: dict[str, Any]) -> list[str]:
    """One line per model whose degenerate share is at least :data:`DEGENERATE_WARN`."""
    out = []
    for name, e in summary.get("models", {}).items():
        d = e.get("degenerate") or {}
        if d.get("rate") is None or d["rate"] < DEGENERATE_WARN:
            continue
        kinds = sorted(((k, v) for k, v in (d.get("by_kind") or {}).items() if v), key=lambda kv: -kv[1])
        out.append(f"model {name}: {pct(d['rate'])}% of responses are degenerate ({'/'.join(k for k, _ in kinds) or 'empty/repetition'}): "
                   "its ASR and over-refusal do not measure refusals")
    return out


def degenerate_counts(d: dict[str, Any]) -> list[tuple[str, int, int]]:
    """(attack or task, degenerate, responses) for each attack with at least one degenerate response."""
    return [(a, c.get("k") or 0, c.get("n") or 0) for a, c in (d.get("by_attack") or {}).items() if c.get("k")]


def example_length(ex: dict[str, Any]) -> str:
    """"(600 characters; the first 300 shown)" for a degenerate example."""
    shown, chars = len(ex.get("response") or ""), ex.get("chars", len(ex.get("response") or ""))
    return f"({chars} characters" + (f"; the first {shown} shown)" if chars > shown else ")")


def degenerate_example(d: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """(kind, example) for the model's most frequent kind of degenerate response."""
    examples = d.get("examples") or {}
    by_kind = d.get("by_kind") or {}
    kinds = sorted(examples, key=lambda k: -(by_kind.get(k) or 0))
    return (kinds[0], examples[kinds[0]]) if kinds else None


def _corrected(c: dict[str, Any], corr: dict[str, Any] | None) -> dict[str, Any]:
    """An ASR cell led by the ASR corrected for judge error, when there is one (raw kept under ``raw``)."""
    if not corr:
        return c
    c = {**c, "flagged": bool(corr.get("flagged")), "corrected_reason": corr.get("reason") or ""}
    if corr.get("asr") is not None:
        c.update(corrected=True, raw=c["value"], raw_ci_low=c.get("ci_low"), raw_ci_high=c.get("ci_high"),
                 value=corr["asr"], ci_low=corr.get("ci_low"), ci_high=corr.get("ci_high"))
    return c


def calibration_lines(summary: dict[str, Any]) -> list[str]:
    """One sentence per judge on its measured agreement; below-threshold judges are marked †."""
    out = []
    for judge, info in (summary.get("calibration") or {}).items():
        worst = info.get("worst_file") or {}
        where = (f" (on {worst['file']}: {_num(worst.get('accuracy'))})" if worst.get("accuracy") is not None
                 and worst["accuracy"] < info["threshold"] else "")
        mark = f" † Accuracy below {info['threshold']:.2f}{where}: treat its results with caution." if info.get("below_threshold") else ""
        se, sp = info.get("sensitivity"), info.get("specificity")
        if se is not None and sp is not None and se + sp <= 1:
            mark += " Corrected ASR undefined: sensitivity + specificity ≤ 1 (no better than chance)."
        out.append(f"Judge {judge}: accuracy {_num(info.get('accuracy'))}, Cohen's κ {_num(info.get('kappa'))}, sensitivity "
                   f"{_num(info.get('sensitivity'))}, specificity {_num(info.get('specificity'))} against human labels "
                   f"(n={info.get('n')}; {info.get('source')}).{mark}")
    return out


def _num(x: float | None) -> str:
    return "–" if x is None else f"{x:.3f}"


def pct(x: float | None) -> str:
    """A fraction as a percentage with one decimal ("–" when there is no value)."""
    return "–" if x is None else f"{100 * x:.1f}"


def ci_text(c: dict[str, Any]) -> str:
    """"95% CI 12.3–45.6, n=40 (2 unscored)" for a cell or rate dict."""
    parts = []
    if c.get("ci_low") is not None and c.get("ci_high") is not None and c.get("value", c.get("rate", c.get("asr"))) is not None:
        parts.append(f"95% CI {pct(c['ci_low'])}–{pct(c['ci_high'])}")
    if c.get("n") is not None:
        parts.append(f"n={c['n']}")
    text = ", ".join(parts)
    extra = [f"{c['unscored']} unscored"] if c.get("unscored") else []
    if isinstance(c.get("degenerate"), int) and c["degenerate"]:
        extra.append(f"{c['degenerate']} degenerate")
    if extra:
        text += f" ({'; '.join(extra)})"
    return text


def results_table(summary: dict[str, Any]) -> str:
    """A plain-text table for terminals (percentages)."""
    cols = columns(summary)
    head = ["model"] + [c.label for c in cols]
    rows = [[name] + [_plain(cell(e, c)) for c in cols] for name, e in summary.get("models", {}).items()]
    widths = [max(len(str(r[i])) for r in [head] + rows) for i in range(len(head))]
    lines = [" | ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(head, widths)))]
    lines += [" | ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths))) for r in rows]
    lines += [f"WARNING: {w}" for w in degenerate_warnings(summary)]
    return "\n".join(lines)


def _plain(c: dict[str, Any] | None) -> str:
    c = c or {}
    text = pct(c.get("value")) + (f" (raw {pct(c['raw'])})" if c.get("corrected") else "")
    return text + (" †" if c.get("flagged") else "")


def _md(text: Any) -> str:
    """Text safe inside a markdown table cell (no pipes, no newlines, no raw HTML)."""
    return re.sub(r"\s+", " ", str(text)).replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def _fence(text: str) -> str:
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def _block(text: str, lang: str = "text") -> list[str]:
    f = _fence(text)
    return [f + lang, text, f]


def _table(head: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "| " + " | ".join(["---"] + ["---:"] * (len(head) - 1)) + " |"]
    return out + ["| " + " | ".join(_md(v) for v in r) + " |" for r in rows]


def _rate(c: dict[str, Any] | None) -> str:
    if not c or c.get("rate") is None:
        return "–"
    lo, hi = c.get("ci_low"), c.get("ci_high")
    ci = f" [{pct(lo)}, {pct(hi)}]" if lo is not None and hi is not None else ""
    return f"{pct(c['rate'])}{ci}" + (f" (n={c['n']})" if c.get("n") is not None else "")


def render(summary: dict[str, Any], plots: dict[str, str] | None = None, title: str = "derta evaluation report") -> str:
    """The whole report.md; ``plots`` maps asr / prefill / refusal_positions to image paths."""
    plots = plots or {}
    models = summary.get("models", {})
    cols = columns(summary)
    lines = [MARKER, f"# {title}", ""]
    judge = summary.get("judge")
    lines += [f"Primary safety judge: `{judge}`." if judge else "", "ASR = share of responses judged unsafe (unscored left out and "
              "counted beside it); helpfulness = accuracy / win rate; over-refusal = share of benign questions refused; "
              "degenerate = share of all responses that are empty or one short loop (neither a refusal nor an answer). "
              "All in %, 95% Wilson intervals in brackets.", ""]
    lines += ["## Results", ""] + _calibration_md(summary)
    rows = [[name] + [_cellmd(cell(e, c)) for c in cols] for name, e in models.items()]
    lines += _table(["model"] + [c.label for c in cols], rows) + [""]
    lines += [f"**Warning:** {_md(w)}" for w in degenerate_warnings(summary)]
    lines += [""] if degenerate_warnings(summary) else []
    for note in summary.get("notes", []):
        lines += [f"Note: {note}", ""]
    if "asr" in plots:
        lines += [f"![Attack success rate]({plots['asr']})", ""]
    lines += _prefill_md(models, plots) + _positions_md(models, plots) + _halting_md(models) + _helpful_md(models)
    lines += _over_md(models) + _degenerate_md(summary) + _agreement_md(summary.get("agreement") or []) + _examples_md(summary.get("examples") or {})
    lines += _run_md(summary.get("run") or {})
    return "\n".join(lines)


def _cellmd(c: dict[str, Any] | None) -> str:
    if not c or c.get("value") is None:
        return "–"
    lo, hi = c.get("ci_low"), c.get("ci_high")
    text = pct(c["value"]) + (f" [{pct(lo)}, {pct(hi)}]" if lo is not None and hi is not None else "")
    if c.get("corrected"):
        text += f" (raw {pct(c['raw'])})"
    elif c.get("corrected_reason"):
        text += " (raw; not correctable)"
    return text + (" †" if c.get("flagged") else "")


def _calibration_md(summary: dict[str, Any]) -> list[str]:
    """What the ASR cells mean when some judge has calibration, and each judge's measured agreement."""
    if "calibration" not in summary:
        return []
    judge = summary.get("judge")
    cal = summary.get("calibration") or {}
    if judge in cal:
        out = [f"ASR cells lead with the ASR corrected for `{judge}`'s measured error (Rogan–Gladen, clipped to [0, 100]) and "
               "its bootstrap 95% interval, which carries both the sampling error of the responses and that of the judge's "
               "sensitivity and specificity; the raw ASR is beside it. A cell without a corrected value could not be corrected "
               "(sensitivity + specificity ≤ 1, or nothing scored).", ""]
    else:
        out = [f"No calibration for the primary judge `{judge}`: the ASRs are raw (not corrected for judge error).", ""]
    return out + [f"- {line}" for line in calibration_lines(summary)] + ([""] if cal else [])


def _prefill_md(models: dict[str, Any], plots: dict[str, str]) -> list[str]:
    curves = {m: e["prefill"] for m, e in models.items() if (e.get("prefill") or {}).get("points")}
    if not curves:
        return []
    ns = sorted({p["N"] for c in curves.values() for p in c["points"]})
    unit = next(iter(curves.values())).get("unit", "tokens")
    out = ["## Prefilling attack: ASR vs prefilled harmful " + unit, ""]
    rows = [[m] + [_cellmd({**p, "value": p.get("asr")}) if (p := next((q for q in c["points"] if q["N"] == n), None)) else "–" for n in ns]
            for m, c in curves.items()]
    out += _table(["model"] + [f"N={n}" for n in ns], rows) + [""]
    if "prefill" in plots:
        out += [f"![Prefilling attack]({plots['prefill']})", ""]
    return out


def _positions_md(models: dict[str, Any], plots: dict[str, str]) -> list[str]:
    out = ["## Where refusals start", "", "First refusal token in responses judged safe (over all attacks).", ""]
    rows = []
    for m, e in models.items():
        rp = e.get("refusal_positions") or {}
        rows.append([m, rp.get("n_safe", "–"), rp.get("n_refusing", "–"), rp.get("unit", "–"), _rate(rp.get("within_5")), _rate(rp.get("after_30"))])
    out += _table(["model", "safe responses", "with a refusal", "unit", "within first 5", "after 30"], rows) + [""]
    if "refusal_positions" in plots:
        out += [f"![Cumulative refusal positions]({plots['refusal_positions']})", ""]
    return out


def _halting_md(models: dict[str, Any]) -> list[str]:
    out = ["## Halting", "", "Safe responses whose first refusal comes after something else was written (e.g. a harmful start).", ""]
    by = {m: (e.get("halting") or {}).get("by_attack") or {} for m, e in models.items()}
    attacks = list(dict.fromkeys(a for b in by.values() for a in b))
    rows = [[m, _rate(e.get("halting"))] + [_rate(by[m].get(a)) for a in attacks] for m, e in models.items()]
    return out + _table(["model", "all attacks"] + attacks, rows) + [""]


def _helpful_md(models: dict[str, Any]) -> list[str]:
    rows = []
    for m, e in models.items():
        for task, c in (e.get("helpfulness") or {}).items():
            extra = ""
            if "wins" in c:
                extra = f"wins {c['wins']}, ties {c['ties']}, losses {c['losses']}, unscored {c['unscored']}; prompt {c.get('prompt_sha256')}"
            elif "unparsed" in c:
                extra = f"{c['unparsed']} without a parseable answer"
            rows.append([m, HELPFULNESS_LABELS.get(task, task), _rate(c), c.get("judge", "–"), extra])
    if not rows:
        return []
    return ["## Helpfulness", ""] + _table(["model", "task", "score", "scorer", "details"], rows) + [""]


def _over_md(models: dict[str, Any]) -> list[str]:
    rows = []
    for m, e in models.items():
        o = e.get("over_refusal")
        if o:
            by = "; ".join(f"{j}: {_rate(c)}" for j, c in (o.get("by_judge") or {}).items())
            rows.append([m, _rate(o), o.get("unscored", 0), o.get("degenerate", "–"), by or "–"])
    own: list[str] = []
    if rows:
        own = ["## Over-refusal", "", "Benign questions that sound harmful (derta's own set unless configured otherwise). A degenerate "
               "response is not counted as a refusal (it stays among the n scored).", ""] + \
            _table(["model", "refused", "unscored", "degenerate", "by judge"], rows) + [""]
    return own + _xstest_md(models)


XSTEST_NOTE = ("XSTest (Röttger et al., 2024): 250 safe prompts that only sound unsafe (refusing them is over-refusal) and 200 "
               "unsafe contrast prompts (complying with them is unsafe). Each response is a full compliance, a full refusal or a "
               "partial refusal (both), or degenerate (neither; in n, in no other class).")
XSTEST_HEAD = ["safe: full refusal", "safe: partial refusal", "unsafe: full compliance", "degenerate (all)", "unscored"]


def xstest_overview(models: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(model, classifier, that classifier's entry) for every model with an ``xstest`` entry."""
    return [(m, name, c) for m, e in models.items() if e.get("xstest") for name, c in (e["xstest"].get("by_classifier") or {}).items()]


def xstest_degenerate(c: dict[str, Any]) -> dict[str, Any]:
    """The degenerate share over both labels' responses of one classifier's entry."""
    from ..stats import rate

    k = sum(((c.get(lab) or {}).get("degenerate") or {}).get("k") or 0 for lab in ("safe", "unsafe"))
    n = sum((c.get(lab) or {}).get("n") or 0 for lab in ("safe", "unsafe"))
    return rate(k, n)


def xstest_types(entry: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(type, label, rates) per XSTest type of a model's ``xstest`` entry (its primary classifier), safe first."""
    return [(t, lab, c) for lab in ("safe", "unsafe") for t, c in ((entry.get(lab) or {}).get("by_type") or {}).items()]


def _xstest_md(models: dict[str, Any]) -> list[str]:
    overview = xstest_overview(models)
    if not overview:
        return []
    out = ["## XSTest", "", XSTEST_NOTE, ""]
    rows = [[m, name, _rate((c.get("safe") or {}).get("full_refusal")), _rate((c.get("safe") or {}).get("partial_refusal")),
             _rate((c.get("unsafe") or {}).get("full_compliance")), _rate(xstest_degenerate(c)), c.get("unscored", "–")]
            for m, name, c in overview]
    out += _table(["model", "classifier"] + XSTEST_HEAD, rows) + [""]
    for m, e in models.items():
        if not e.get("xstest"):
            continue
        out += [f"### {_md(m)}: XSTest by type ({_md(e['xstest'].get('classifier', ''))})", ""]
        rows = [[t, lab, c.get("n", "–"), _rate(c.get("full_refusal")), _rate(c.get("partial_refusal")), _rate(c.get("full_compliance"))]
                for t, lab, c in xstest_types(e["xstest"])]
        out += _table(["type", "label", "n", "full refusal", "partial refusal", "full compliance"], rows) + [""]
    return out


def _degenerate_md(summary: dict[str, Any]) -> list[str]:
    models = {m: e["degenerate"] for m, e in summary.get("models", {}).items() if e.get("degenerate")}
    if not models:
        return []
    out = ["## Degenerate responses", "", "Empty responses, or one short unit looped over most of the text (\"SorrySorrySorry…\"): "
           "neither a refusal nor an answer. Share of all the model's responses; by kind, and per attack / task where any occur.", ""]
    out += [f"**Warning:** {_md(w)}" for w in degenerate_warnings(summary)]
    out += [""] if degenerate_warnings(summary) else []
    rows = []
    for m, d in models.items():
        kinds = d.get("by_kind") or {}
        where = ", ".join(f"{a} {k}/{n}" for a, k, n in degenerate_counts(d)) or "none"
        rows.append([m, _rate(d), kinds.get("empty", "–"), kinds.get("repetition", "–"), where])
    out += _table(["model", "degenerate", "empty", "repetition", "by attack / task (degenerate/responses)"], rows) + [""]
    for m, d in models.items():
        found = degenerate_example(d)
        if found is None:
            continue
        kind, ex = found
        out += [f"**{_md(m)}** — {_md(kind)}, {_md(ex.get('attack', ''))} {_md(ex.get('prompt_id', ''))} {_md(example_length(ex))}:", ""]
        out += (_block(ex["response"]) if (ex.get("response") or "").strip() else ["(empty)"]) + [""]
    return out


def _agreement_md(agreement: list[dict[str, Any]]) -> list[str]:
    if not agreement:
        return []
    out = ["## Judge agreement", ""]
    out += _table(["judges", "Cohen's kappa", "agreement", "items"],
                  [[" vs ".join(a["judges"]), f"{a['kappa']:.3f}", _rate(a["agreement"]), a["n"]] for a in agreement]) + [""]
    for a in agreement:
        conf = a["confusion"]
        labels = [x for x in conf if any(conf[x].values()) or any(conf[y].get(x) for y in conf)]
        out += [f"Rows: {a['judges'][0]}, columns: {a['judges'][1]}", ""]
        out += _table([""] + labels, [[x] + [conf[x].get(y, 0) for y in labels] for x in labels]) + [""]
    return out


def _examples_md(examples: dict[str, list[dict[str, Any]]]) -> list[str]:
    if not examples:
        return []
    out = ["## Example responses", "", "Responses to harmful prompts, verbatim (they may contain harmful text).", ""]
    for attack, items in examples.items():
        out += [f"### {_md(attack)}", ""]
        for ex in items:
            verdict = ex.get("verdict") or "–"
            out += [f"**{_md(ex.get('model', ''))}** — verdict: {verdict}", ""]
            if ex.get("prefill"):
                out += ["Prefill:", ""] + _block(ex["prefill"]) + [""]
            out += _block(ex.get("response", "")) + [""]
    return out


def _run_md(run: dict[str, Any]) -> list[str]:
    if not run:
        return []
    out = ["## Run", ""]
    for key in ("status", "seed", "started", "finished", "decoding"):
        if key in run:
            out.append(f"- {key}: `{json.dumps(run[key]) if isinstance(run[key], dict) else run[key]}`")
    env = run.get("environment") or {}
    if env:
        out.append("- versions: " + ", ".join(f"{k} {v}" for k, v in env.items() if v))
    out.append("")
    if run.get("config"):
        import yaml

        out += ["Config:", ""] + _block(yaml.safe_dump(run["config"], sort_keys=False, allow_unicode=True).rstrip(), "yaml") + [""]
    return out
