"""Several demo seeds at once: every figure as a range (min–max over seeds) beside its per-seed values.

``parse_seeds("0,1,2")`` reads ``--seeds``. ``aggregate({seed: summary})`` takes the ``summary.json``
of each seed and returns, per method and figure (each attack's ASR, helpfulness, over-refusal, the
degenerate share where present), the minimum, the maximum and the value of every seed. ``table``
prints it fixed-width and ``markdown`` as the README's table; ``write`` saves ``seeds.json`` and
``seeds.md``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import ConfigError
from ..io import write_json
from .summary import is_follow_up


def parse_seeds(text: str) -> list[int]:
    """``--seeds 0,1,2`` -> [0, 1, 2]; a ConfigError unless they are distinct integers (at least one)."""
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"--seeds takes comma-separated integers, got {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds needs distinct seeds, got {text!r}")
    return seeds


def figures(m: dict[str, Any]) -> dict[str, float | None]:
    """One method's figures in one seed's summary, as rates in [0, 1] (None when undefined)."""
    out: dict[str, float | None] = {a: cell.get("asr") for a, cell in m["attacks"].items()}
    out["helpfulness"] = m.get("helpfulness")
    out["over_refusal"] = m.get("over_refusal")
    if isinstance(m.get("degenerate"), dict):
        out["degenerate"] = m["degenerate"].get("rate")
    return out


def aggregate(summaries: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """``{seed: summary}`` -> ``{"seeds": [...], "methods": {method: {figure: {min, max, per_seed}}}}``.

    A figure a seed lacks (a method it did not run, an attack it skipped) is left out of that
    figure's range and recorded as None in ``per_seed``.
    """
    seeds = sorted(summaries)
    methods: dict[str, dict[str, Any]] = {}
    for seed in seeds:
        for name, m in summaries[seed]["methods"].items():
            for fig, value in figures(m).items():
                cell = methods.setdefault(name, {}).setdefault(fig, {"per_seed": {}})
                cell["per_seed"][str(seed)] = value
    for cells in methods.values():
        for cell in cells.values():
            per = {str(s): cell["per_seed"].get(str(s)) for s in seeds}
            values = [v for v in per.values() if v is not None]
            cell.update(per_seed=per, min=min(values) if values else None, max=max(values) if values else None)
    first = summaries[seeds[0]] if seeds else {}
    return {"seeds": seeds, "methods": methods, "world": first.get("world", {}), "judge": first.get("judge", {}),
            "seconds": {str(s): summaries[s].get("seconds") for s in seeds}}


def columns(agg: dict[str, Any], follow_up: bool = False) -> list[str]:
    """Attack columns in the order first seen, then helpfulness, over-refusal, degenerate."""
    attacks = [f for cells in agg["methods"].values() for f in cells if f not in ("helpfulness", "over_refusal", "degenerate")]
    attacks = [a for a in dict.fromkeys(attacks) if is_follow_up(a) == follow_up]
    if follow_up:
        return attacks
    extra = [f for f in ("helpfulness", "over_refusal", "degenerate") if any(f in cells for cells in agg["methods"].values())]
    return attacks + extra


def fmt_range(cell: dict[str, Any] | None) -> str:
    """``"75.0–81.2"`` (percent), one number when min = max, ``"-"`` when undefined."""
    if not cell or cell.get("min") is None:
        return "-"
    low, high = f"{100 * cell['min']:.1f}", f"{100 * cell['max']:.1f}"
    return low if low == high else f"{low}–{high}"


def fmt_seeds(cell: dict[str, Any] | None) -> str:
    if not cell:
        return "-"
    return " / ".join("-" if v is None else f"{100 * v:.1f}" for v in cell["per_seed"].values())


def table(agg: dict[str, Any], follow_up: bool = False) -> str:
    cols = columns(agg, follow_up)
    head = ["method", *[c.replace("_", "-") for c in cols]]
    width = 12
    lines = [" | ".join(f"{h:>{width}}" for h in head)]
    for name, cells in agg["methods"].items():
        lines.append(" | ".join(f"{c:>{width}}" for c in [name, *(fmt_range(cells.get(c)) for c in cols)]))
    return "\n".join(lines)


def markdown(agg: dict[str, Any]) -> str:
    seeds = ", ".join(str(s) for s in agg["seeds"])
    cols = columns(agg)
    head = ["method", *[c.replace("_", "-") for c in cols]]
    lines = [f"# derta demo: seeds {seeds}", "",
             f"Each cell is the range min–max over seeds {seeds}, in %. ASR, over-refusal and degenerate: lower is "
             "better; helpfulness: higher is better.", "",
             "| " + " | ".join(head) + " |", "| " + " | ".join("---" for _ in head) + " |"]
    for name, cells in agg["methods"].items():
        lines.append("| " + " | ".join([name, *(fmt_range(cells.get(c)) for c in cols)]) + " |")
    follow = columns(agg, follow_up=True)
    if follow:
        lines += ["", "Harmful-output rate (%) after the user presses on:", "",
                  "| method | " + " | ".join(follow) + " |", "| --- | " + " | ".join("---" for _ in follow) + " |"]
        for name, cells in agg["methods"].items():
            lines.append("| " + " | ".join([name, *(fmt_range(cells.get(c)) for c in follow)]) + " |")
    lines += ["", f"Per seed ({' / '.join(str(s) for s in agg['seeds'])}):", "",
              "| method | figure | per seed | range |", "| --- | --- | --- | --- |"]
    for name, cells in agg["methods"].items():
        for fig, cell in cells.items():
            lines.append(f"| {name} | {fig.replace('_', '-')} | {fmt_seeds(cell)} | {fmt_range(cell)} |")
    return "\n".join(lines) + "\n"


def write(agg: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "seeds.json", agg)
    (out / "seeds.md").write_text(markdown(agg))
