"""The README's result tables against what ``derta demo --seeds`` writes to ``seeds.md``.

The toy-demo table is the first table of ``derta demo --seeds 0,1,2``'s ``seeds.md``; the real-model
table the first of ``derta demo --real --seeds 0,1``'s. The README may set a cell in bold
(``**0.0**``); otherwise each row is the renderer's row, cell for cell.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from derta.demo import seeds as multi

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"

# Where each table is: the first table after the first line holding the marker.
TABLES = {
    "toy": {"marker": "`make demo-seeds`", "generated": REPO / "runs" / "demo-seeds" / "seeds.md"},
    "real": {"marker": "make demo-real-seeds", "generated": REPO / "runs" / "demo-real-seeds" / "seeds.md"},
}
CELL = re.compile(r"(\d{1,3}\.\d)(?:–(\d{1,3}\.\d))?")
BOLD = re.compile(r"\*\*(.*)\*\*")


def first_table(lines: list[str]) -> list[list[str]]:
    """The first markdown table in ``lines``: header, then the rows (the --- line dropped)."""
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines[start:end]]
    assert all(set(c) <= {"-"} for c in rows[1]), f"no header separator under {lines[start]!r}"
    return [rows[0], *rows[2:]]


def readme_table(name: str) -> list[list[str]]:
    lines = README.read_text(encoding="utf-8").splitlines()
    marker = TABLES[name]["marker"]
    at = next((i for i, line in enumerate(lines) if marker in line), None)
    assert at is not None, f"README.md no longer mentions {marker}"
    return first_table(lines[at:])


def unbold(table: list[list[str]]) -> list[list[str]]:
    return [[BOLD.fullmatch(c).group(1) if BOLD.fullmatch(c) else c for c in row] for row in table]


def seeds_md_table(text: str) -> list[list[str]]:
    return first_table(text.splitlines())


def synthetic_summary(methods: list[str], attacks: list[str], shift: float) -> dict:
    """A per-seed summary in the demo schema with the methods and attacks a run writes."""
    def method(i: int) -> dict:
        return {"attacks": {a: {"asr": (0.1 * i + shift) % 1} for a in attacks}, "helpfulness": 0.8 + shift,
                "over_refusal": 0.05, "degenerate": {"rate": shift, "k": 1, "n": 10}}

    return {"methods": {m: method(i) for i, m in enumerate(methods)}, "seconds": 1.0}


def rendered(name: str) -> list[list[str]]:
    """The first table of seeds.md as the renderer writes it for the run behind README table ``name``."""
    if name == "toy":
        from derta.demo.run import FOLLOW_UP_STRATEGIES, DemoConfig

        cfg = DemoConfig()  # `derta demo --seeds` without method flags
        methods = ["base", *cfg.methods]
        attacks = ["direct", "completion", *(f"prefill-{n}" for n in cfg.prefill_tokens), *(f"follow-up-{s}" for s in FOLLOW_UP_STRATEGIES)]
        seeds = (0, 1, 2)
    else:
        from derta.demo.real import RealConfig

        cfg = RealConfig()  # `derta demo --real --seeds 0,1`
        methods = (["untuned"] if cfg.eval_base else []) + list(cfg.methods)
        attacks = [*cfg.attacks, *(f"prefill-{n}" for n in cfg.prefill_tokens)]
        seeds = (0, 1)
    agg = multi.aggregate({s: synthetic_summary(methods, attacks, 0.01 * s) for s in seeds})
    return seeds_md_table(multi.markdown(agg))


def test_renderer_of_the_toy_run_has_the_expected_shape():
    # a guard on `rendered` itself: the toy run's table leads with these columns and rows
    table = rendered("toy")
    assert table[0][:3] == ["method", "direct", "completion"] and table[0][-3:] == ["helpfulness", "over-refusal", "degenerate"]
    assert [r[0] for r in table[1:]] == ["base", "vanilla", "derta", "derta-rebuttal"]


@pytest.mark.parametrize("name", ["toy", "real"])
def test_readme_columns_are_the_renderers(name):
    assert unbold(readme_table(name))[0] == rendered(name)[0]


@pytest.mark.parametrize("name", sorted(TABLES))
def test_readme_rows_are_the_renderers(name):
    ours, theirs = unbold(readme_table(name)), rendered(name)
    assert [r[0] for r in ours[1:]] == [r[0] for r in theirs[1:]]
    assert all(len(r) == len(theirs[0]) for r in ours), "a row with a different number of cells than the header"


@pytest.mark.parametrize("name", sorted(TABLES))
def test_readme_cells_are_percent_ranges_in_the_renderers_format(name):
    for row in unbold(readme_table(name))[1:]:
        for c in row[1:]:
            m = CELL.fullmatch(c)
            assert m, f"{row[0]}: {c!r} is neither a number nor a range a–b"
            low = float(m.group(1))
            high = float(m.group(2)) if m.group(2) else low
            assert 0 <= low <= high <= 100, f"{row[0]}: {c!r} is not a range within [0, 100]"
            assert multi.fmt_range({"min": low / 100, "max": high / 100}) == c, f"{row[0]}: {c!r} is not written as fmt_range writes it"


@pytest.mark.parametrize("name", sorted(TABLES))
def test_readme_bold_marks_whole_cells_only(name):
    # emphasis is the only markup the README adds, and only around a whole cell
    for row in readme_table(name):
        for c in row:
            assert c.count("**") in (0, 2) and (not c.count("**") or BOLD.fullmatch(c)), f"stray emphasis in {c!r}"


@pytest.mark.parametrize("name", sorted(TABLES))
def test_readme_matches_the_last_generated_seeds_md(name):
    path = TABLES[name]["generated"]
    if not path.exists():
        pytest.skip(f"{path} not generated (make {'demo-seeds' if name == 'toy' else 'demo-real-seeds'})")
    ours, theirs = unbold(readme_table(name)), seeds_md_table(path.read_text(encoding="utf-8"))
    if name == "toy":
        assert ours[0] == theirs[0]
    # the real table's column names are checked (and known to differ) in test_readme_columns_are_the_renderers
    diff = [(r[0], col, c, t) for r, g in zip(ours[1:], theirs[1:]) for col, c, t in zip(theirs[0][1:], r[1:], g[1:]) if c != t]
    assert [r[0] for r in ours[1:]] == [r[0] for r in theirs[1:]] and diff == [], f"README vs {path}: {diff}"


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_readme_toy_table_is_what_demo_seeds_writes(tmp_path):
    out = tmp_path / "demo-seeds"
    subprocess.run([sys.executable, "-m", "derta.cli", "demo", "--seeds", "0,1,2", "--out", str(out), "--no-progress"],
                   check=True, cwd=tmp_path, capture_output=True, text=True)
    assert unbold(readme_table("toy")) == seeds_md_table((out / "seeds.md").read_text(encoding="utf-8"))
