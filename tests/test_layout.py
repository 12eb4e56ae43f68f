"""The package's layering: no import cycles, no import from a higher layer (scripts/check_imports.py)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHECK = ROOT / "scripts" / "check_imports.py"


def check(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(CHECK), *args], capture_output=True, text=True, cwd=ROOT, timeout=60)


def package(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    return root / next(iter(files)).split("/")[0]


def test_derta_has_no_cycles_and_keeps_its_layers():
    r = check()
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("ok: ") and "no cycles, no layering violations" in r.stdout


def test_a_planted_cycle_is_found_with_file_and_line(tmp_path):
    pkg = package(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a/__init__.py": "",
        "pkg/a/x.py": "from ..b.y import helper\n",
        "pkg/b/__init__.py": "",
        # the way back is lazy (inside a function) and relative: a dependency all the same
        "pkg/b/y.py": """\
            def helper():
                from ..a import x
                return x
            """,
    })
    r = check(str(pkg))
    assert r.returncode == 1
    out = r.stdout
    assert "cycle between modules: pkg.a.x -> pkg.b.y -> pkg.a.x" in out
    assert "cycle between subpackages: a -> b -> a" in out
    assert f"{pkg / 'a' / 'x.py'}:1: pkg.a.x -> pkg.b.y" in out
    assert f"{pkg / 'b' / 'y.py'}:2: pkg.b.y -> pkg.a.x (inside a function)" in out


def test_import_module_with_an_f_string_is_an_edge(tmp_path):
    # cli loads its commands by name; a command that imports cli back closes a cycle
    pkg = package(tmp_path, {
        "app/__init__.py": "",
        "app/cli.py": """\
            import importlib

            def load(name):
                modname = f"app.commands.{name}"
                return importlib.import_module(modname)
            """,
        "app/commands/__init__.py": "from . import run\n",
        "app/commands/run.py": "from ..cli import load\n",
    })
    r = check(str(pkg))
    assert r.returncode == 1
    assert "cycle between modules: app.cli -> app.commands -> app.commands.run -> app.cli" in r.stdout
    assert f"{pkg / 'cli.py'}:5: app.cli -> app.commands (inside a function)" in r.stdout


def test_layers_flag_an_import_from_above_and_a_unit_in_no_layer(tmp_path):
    pkg = package(tmp_path, {
        "lib/__init__.py": "",
        "lib/records.py": "X = 1\n",
        "lib/report/__init__.py": "from ..records import X\n",
        "lib/report/page.py": "import lib.apps.study\n",  # the report reaching up into an application
        "lib/apps/__init__.py": "",
        "lib/apps/study.py": "from lib.report import X\n",
        "lib/extra.py": "",
    })
    r = check(str(pkg), "--layers", "lib,records;report;apps")
    assert r.returncode == 1
    assert f"{pkg / 'report' / 'page.py'}:1: report (layer 1) imports apps (layer 2): lib.report.page -> lib.apps.study" in r.stdout
    assert "extra is in no layer" in r.stdout
    assert "records (layer 0) imports" not in r.stdout and "apps (layer 2) imports" not in r.stdout


def test_a_clean_package_passes(tmp_path):
    pkg = package(tmp_path, {
        "ok/__init__.py": "from .low import f\n",
        "ok/low.py": "def f():\n    return 1\n",
        "ok/high/__init__.py": "from ..low import f\nfrom ok import low\n",
    })
    r = check(str(pkg), "--layers", "ok,low;high")
    assert r.returncode == 0, r.stdout
    assert r.stdout.startswith("ok: 3 modules, 3 imports")


def test_the_report_names_every_deception_category():
    # the report reads classified rows without importing the deception application
    from derta.deception.classify import CATEGORIES
    from derta.report.deception import HEADERS, LABELS

    assert set(LABELS) == set(CATEGORIES)
    assert all(c in HEADERS for c in ("undesired", *CATEGORIES))
