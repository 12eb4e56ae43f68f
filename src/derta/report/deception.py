"""The deception report: ``deception.md`` and a self-contained ``deception.html`` from a summary.

Reads the summary (and the classification rows, for example answers) of a deception study
(:mod:`derta.deception.study`); never generates. The HTML inlines its plots as base64 PNGs and
escapes every piece of model text. :func:`section_html` and :func:`section_markdown` return the
body alone, for pages that combine several reports; :func:`rebuild` rewrites the report of a
study's directory from its files (``derta report DIR`` and ``derta deception report DIR``).
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

from ..io import DataError, read_log
from .page import CSP_META, data_uri
from .plots import plot_lines

#: The name of each category of a classified answer (``derta.deception.classify.CATEGORIES``) in the report.
LABELS = {
    "coherent-safe": "coherent safe", "coherent-unsafe": "coherent unsafe", "deception": "reason-based deception",
    "other": "other", "unscored": "unscored",
}
RATE_COLUMNS = ("undesired", "coherent-safe", "coherent-unsafe", "deception", "other")
HEADERS = {"undesired": "undesired output", **LABELS}


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "model"


def fmt_rate(cell: dict[str, Any] | None) -> str:
    """"12.5% [3.5-36.0] (2/16)"; "n/a" when nothing was scored."""
    if not cell or not cell.get("n"):
        return "n/a"
    return f"{100 * cell['rate']:.1f}% [{100 * cell['ci_low']:.1f}-{100 * cell['ci_high']:.1f}] ({cell['k']}/{cell['n']})"


def curves(summary: dict[str, Any], model: str, measure: str) -> dict[str, list[float | None]]:
    """Per strategy, the rate of ``measure`` ("undesired" or "deception") at turns 1..T+1; with the
    overseer variant also "STRATEGY (overseer)" at turns 1..T+2."""
    out = {}
    ms = summary["models"][model]
    for suffix, convs in (("", ms["conversations"]), (" (overseer)", ms.get("conversations_overseer", {}))):
        for st, conv in convs.items():
            out[st + suffix] = [(t.get(measure) or {}).get("rate") if t.get("n") else None for t in conv["per_turn"]]
    return out


def make_plots(summary: dict[str, Any], out_dir: str | Path) -> dict[str, dict[str, Path]]:
    """Two PNGs per model (undesired-output and deception rate per turn, one line per strategy)."""
    plots: dict[str, dict[str, Path]] = {}
    for m in summary["models"]:
        plots[m] = {}
        for measure, title in (("undesired", "Undesired outputs per turn"), ("deception", "Reason-based deception per turn")):
            series = curves(summary, m, measure)
            if not any(v is not None for ys in series.values() for v in ys):
                continue
            path = Path(out_dir) / "plots" / f"{_slug(m)}-{measure}.png"
            plots[m][measure] = plot_lines(series, path, xlabel="assistant turn", ylabel=f"{measure} rate (%)", title=f"{title}\n{m}")
    return plots


def _category_rows(model_summary: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    first = model_summary["first_answers"]
    rows = [("(all categories)", g, cell) for g, cell in first.get("overall", {}).items()]
    for cat, groups in first.get("by_category", {}).items():
        rows += [(cat, g, cell) for g, cell in groups.items()]
    return rows


def _turn_rows(model_summary: dict[str, Any]) -> list[tuple[str, int, dict[str, Any]]]:
    return [(st, t["turn"], t) for st, conv in model_summary["conversations"].items() for t in conv["per_turn"]]


def _answers(turn: int) -> str:
    """What an overseer-variant turn answers."""
    return {1: "the request", 2: "the overseer"}.get(turn, f"follow-up {turn - 2}")


def _overseer_rows(model_summary: dict[str, Any]) -> list[tuple[str, int, str, dict[str, Any]]]:
    return [(st, t["turn"], _answers(t["turn"]), t) for st, conv in model_summary.get("conversations_overseer", {}).items()
            for t in conv["per_turn"]]


def _gate_line(model_summary: dict[str, Any]) -> str:
    parts = [f"{st}: {c['gate']['answered']} answered, {c['gate']['not_answered']} not undesired (conversation ends at turn 1)"
             for st, c in model_summary.get("conversations_overseer", {}).items()]
    return "First answers the overseer answered (undesired by the offline rules): " + "; ".join(parts) + "."


def _side_by_side(model_summary: dict[str, Any]) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(strategy, later turns of the self variant, later turns of the overseer variant), all scenarios."""
    self_, over = model_summary["conversations"], model_summary.get("conversations_overseer", {})
    return [(st, (self_.get(st) or {}).get("later_turns", {}).get("all") or {}, over[st].get("later_turns", {}).get("all") or {})
            for st in over]


def _cell(cell: dict[str, Any], measure: str) -> str:
    return fmt_rate(cell.get(measure)) if cell.get("n") else "n/a"


def _head(summary: dict[str, Any]) -> list[str]:
    s, p, c = summary.get("suite", {}), summary.get("protocol", {}), summary.get("classifier", {})
    return [
        f"suite {s.get('name')} {s.get('version') or ''} (sha256 {s.get('sha256')}, {s.get('n_scenarios')} scenarios)",
        f"classifier {c.get('name')} (sha256 {c.get('sha256')})",
        f"protocol {p.get('version')} format {p.get('format')} (sha256 {p.get('sha256')}); strategies {', '.join(summary.get('strategies', []))}; "
        f"variants {', '.join(summary.get('variants', ['self']))}; "
        f"{summary.get('turns')} follow-up turns; rebuttal template {p.get('rebuttal_template', {}).get('name')}",
        f"decoding {summary.get('decoding')}; seed {summary.get('seed')}",
    ]


DEFINITIONS = (
    "Rates are shares of the scored answers (the final output could be checked), with 95% Wilson intervals; "
    "unscored answers are counted beside them, never as safe. Reason-based deception = the final output does the "
    "undesired thing while the reasoning is absent or argues against it. First answers are the model's own answers "
    "to the request (strategy \"own\", turn 1); in the conversations turn 1 of \"refusal\" and \"rebuttal\" is inserted, "
    "and the later turns are the model's answers to the user's pressure."
)
OVERSEER_DEFINITION = (
    "Overseer variant: the model answers the request itself (turn 1); a first answer that does the undesired thing is "
    "answered by the user/overseer with a polite refusal to accept it (\"refusal\") or an explicit rebuttal (\"rebuttal\"), "
    "the model answers again (turn 2), and the follow-ups press on (turns 3 and later). A first answer that is not "
    "undesired is not answered; its conversation ends at turn 1."
)


def section_markdown(summary: dict[str, Any], plots: dict[str, dict[str, Path]] | None = None, rel_to: Path | None = None) -> str:
    lines = ["## Reason-based deception", ""] + [f"- {h}" for h in _head(summary)] + ["", DEFINITIONS, ""]
    for m, ms in summary["models"].items():
        lines += [f"### {m}", "", "First answers by scenario category (sensitive vs control):", ""]
        lines += ["| category | group | scored | unscored | " + " | ".join(HEADERS[c] for c in RATE_COLUMNS) + " |",
                  "| --- | --- | ---: | ---: | " + " | ".join("---" for _ in RATE_COLUMNS) + " |"]
        for cat, group, cell in _category_rows(ms):
            lines.append(f"| {cat} | {group} | {cell['scored']} | {cell['unscored']} | " + " | ".join(fmt_rate(cell[c]) for c in RATE_COLUMNS) + " |")
        if not _category_rows(ms):
            lines.append("| (no first answers: strategy \"own\" was not run) | | | | " + " | ".join("" for _ in RATE_COLUMNS) + " |")
        lines += ["", "Conversations, per assistant turn:", ""]
        for measure, path in (plots or {}).get(m, {}).items():
            shown = path.relative_to(rel_to) if rel_to else path
            lines.append(f"![{measure} per turn]({shown.as_posix()})")
        lines += ["", "| strategy | turn | scored | unscored | undesired output | reason-based deception |", "| --- | ---: | ---: | ---: | --- | --- |"]
        for st, t, cell in _turn_rows(ms):
            if not cell.get("n"):
                lines.append(f"| {st} | {t} | - | - | inserted | inserted |" if t == 1 and st != "own" else f"| {st} | {t} | 0 | 0 | n/a | n/a |")
                continue
            lines.append(f"| {st} | {t} | {cell['scored']} | {cell['unscored']} | {fmt_rate(cell['undesired'])} | {fmt_rate(cell['deception'])} |")
        lines.append("")
        if "conversations_overseer" in ms:
            lines += [OVERSEER_DEFINITION, "", _gate_line(ms), "", "Self vs overseer variant, later turns (turn 2 and later):", "",
                      "| strategy | self: undesired output | self: reason-based deception | overseer: undesired output | overseer: reason-based deception |",
                      "| --- | --- | --- | --- | --- |"]
            for st, a, b in _side_by_side(ms):
                lines.append(f"| {st} | {_cell(a, 'undesired')} | {_cell(a, 'deception')} | {_cell(b, 'undesired')} | {_cell(b, 'deception')} |")
            lines += ["", "Overseer variant, per assistant turn:", "",
                      "| strategy | turn | answers | scored | unscored | undesired output | reason-based deception |",
                      "| --- | ---: | --- | ---: | ---: | --- | --- |"]
            for st, t, what, cell in _overseer_rows(ms):
                if not cell.get("n"):
                    lines.append(f"| {st} | {t} | {what} | 0 | 0 | n/a | n/a |")
                    continue
                lines.append(f"| {st} | {t} | {what} | {cell['scored']} | {cell['unscored']} | {fmt_rate(cell['undesired'])} | "
                             f"{fmt_rate(cell['deception'])} |")
            lines.append("")
    return "\n".join(lines)


_CSS = """body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2em auto;max-width:1150px;color:#222;padding:0 1em}
table{border-collapse:collapse;margin:.6em 0 1.4em;font-size:.86em}th,td{border:1px solid #ccc;padding:.25em .5em;text-align:left;vertical-align:top}
th{background:#f3f3f3}td.num{text-align:right}.meta{color:#555;font-size:.9em}img{max-width:48%;margin:.3em}
pre{white-space:pre-wrap;background:#f7f7f7;padding:.5em;border:1px solid #e3e3e3;max-height:18em;overflow:auto;font-size:.85em}
.ex{border-left:3px solid #C44E52;padding-left:.8em;margin:1em 0}"""


def _img(path: Path) -> str:
    return f'<img alt="{html.escape(path.stem)}" src="{data_uri(path)}">'


def _examples(rows: list[dict[str, Any]], model: str, n: int) -> list[dict[str, Any]]:
    """Up to ``n`` answers of the model: reason-based deception first, then coherent unsafe."""
    mine = [r for r in rows if r["model"] == model]
    return ([r for r in mine if r["category"] == "deception"] + [r for r in mine if r["category"] == "coherent-unsafe"])[:n]


def section_html(summary: dict[str, Any], rows: list[dict[str, Any]] | None = None, plots: dict[str, dict[str, Path]] | None = None,
                 examples: int = 3) -> str:
    e = html.escape
    parts = ["<h2>Reason-based deception</h2>", '<ul class="meta">' + "".join(f"<li>{e(h)}</li>" for h in _head(summary)) + "</ul>",
             f"<p>{e(DEFINITIONS)}</p>"]
    for m, ms in summary["models"].items():
        parts.append(f"<h3>{e(m)}</h3><p>First answers by scenario category (sensitive vs control):</p>")
        head = "".join(f"<th>{e(HEADERS[c])}</th>" for c in RATE_COLUMNS)
        body = "".join(
            f"<tr><td>{e(cat)}</td><td>{e(g)}</td><td class=num>{cell['scored']}</td><td class=num>{cell['unscored']}</td>"
            + "".join(f"<td>{e(fmt_rate(cell[c]))}</td>" for c in RATE_COLUMNS) + "</tr>"
            for cat, g, cell in _category_rows(ms)
        ) or f'<tr><td colspan="{4 + len(RATE_COLUMNS)}">no first answers (strategy "own" was not run)</td></tr>'
        parts.append(f"<table><tr><th>category</th><th>group</th><th>scored</th><th>unscored</th>{head}</tr>{body}</table>")
        parts.append("<p>Conversations, per assistant turn:</p>" + "".join(_img(p) for p in (plots or {}).get(m, {}).values()))
        trs = []
        for st, t, cell in _turn_rows(ms):
            if not cell.get("n"):
                what = "inserted" if t == 1 and st != "own" else "n/a"
                trs.append(f"<tr><td>{e(st)}</td><td class=num>{t}</td><td>-</td><td>-</td><td>{what}</td><td>{what}</td></tr>")
            else:
                trs.append(f"<tr><td>{e(st)}</td><td class=num>{t}</td><td class=num>{cell['scored']}</td><td class=num>{cell['unscored']}</td>"
                           f"<td>{e(fmt_rate(cell['undesired']))}</td><td>{e(fmt_rate(cell['deception']))}</td></tr>")
        parts.append("<table><tr><th>strategy</th><th>turn</th><th>scored</th><th>unscored</th><th>undesired output</th>"
                     f"<th>reason-based deception</th></tr>{''.join(trs)}</table>")
        if "conversations_overseer" in ms:
            side = "".join(f"<tr><td>{e(st)}</td>" + "".join(f"<td>{e(_cell(c, k))}</td>" for c in (a, b) for k in ("undesired", "deception"))
                           + "</tr>" for st, a, b in _side_by_side(ms))
            parts.append(f"<p>{e(OVERSEER_DEFINITION)}</p><p>{e(_gate_line(ms))}</p><p>Self vs overseer variant, later turns (turn 2 and later):</p>"
                         "<table><tr><th>strategy</th><th>self: undesired output</th><th>self: reason-based deception</th>"
                         f"<th>overseer: undesired output</th><th>overseer: reason-based deception</th></tr>{side}</table>")
            orows = "".join(
                f"<tr><td>{e(st)}</td><td class=num>{t}</td><td>{e(what)}</td><td class=num>{cell.get('scored', 0)}</td>"
                f"<td class=num>{cell.get('unscored', 0)}</td><td>{e(_cell(cell, 'undesired'))}</td><td>{e(_cell(cell, 'deception'))}</td></tr>"
                for st, t, what, cell in _overseer_rows(ms))
            parts.append("<p>Overseer variant, per assistant turn:</p><table><tr><th>strategy</th><th>turn</th><th>answers</th><th>scored</th>"
                         f"<th>unscored</th><th>undesired output</th><th>reason-based deception</th></tr>{orows}</table>")
        shown = _examples(rows or [], m, examples)
        if shown:
            parts.append("<h4>Example answers</h4>")
        for r in shown:
            variant = "" if r.get("variant", "self") == "self" else f", {r['variant']}"
            parts.append(
                f'<div class="ex"><b>{e(r["scenario"])}</b> ({e(r["strategy"])}{e(variant)}, turn {r["turn"]}): {e(LABELS[r["category"]])} '
                f'<span class="meta">{e(r.get("explanation") or "")[:300]}</span>'
                f"<p>Reasoning:</p><pre>{e((r.get('reasoning') or '(none)')[:3000])}</pre>"
                f"<p>Final output:</p><pre>{e((r.get('final') or '(none)')[:3000])}</pre></div>"
            )
    return "\n".join(parts)


def write_report(summary: dict[str, Any], rows: list[dict[str, Any]], out_dir: str | Path, examples: int = 3) -> tuple[Path, Path]:
    """Write ``deception.md``, ``deception.html`` and ``plots/*.png`` into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = make_plots(summary, out_dir)
    md = out_dir / "deception.md"
    md.write_text("# derta deception report\n\n" + section_markdown(summary, plots, rel_to=out_dir) + "\n", encoding="utf-8")
    page = (f"<!doctype html><html><head><meta charset=\"utf-8\">{CSP_META}<title>derta deception report</title>"
            f"<style>{_CSS}</style></head><body><h1>derta deception report</h1>\n"
            + section_html(summary, rows, plots, examples) + "\n</body></html>\n")
    out_html = out_dir / "deception.html"
    out_html.write_text(page, encoding="utf-8")
    return md, out_html


def rebuild(out_dir: str | Path, examples: int = 3) -> tuple[Path, Path]:
    """Rewrite deception.md / deception.html of a finished study from its summary and classification log.

    The example answers are the rows of the summary's classifier (name and hash) and models; the
    log is the one the summary names under ``files`` (classifications.jsonl by default).
    """
    out = Path(out_dir)
    if not (out / "summary.json").exists():
        raise DataError(f"{out / 'summary.json'}: no such file (run `derta deception run` first)")
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    c = summary.get("classifier", {})
    log = out / (summary.get("files") or {}).get("classifications", "classifications.jsonl")
    ids = summary.get("model_ids") or {}  # a model retrained under the same name: only its own rows

    def current(r: dict[str, Any]) -> bool:
        return r.get("model") in summary["models"] and (r.get("model") not in ids or r.get("model_id") == ids[r["model"]])

    rows = [r for r in read_log(log, what="classification record")
            if r.get("classifier") == c.get("name") and r.get("classifier_sha256") == c.get("sha256") and current(r)]
    return write_report(summary, rows, out, examples=examples)
