"""``derta list KIND [--json]``: every registry's names, each with a one-line description."""

from __future__ import annotations

import json

import pytest

from derta.commands import list as list_command


def _registry(kind: str) -> list[str]:
    if kind == "attacks":
        from derta.attacks import ATTACKS, PREBUILT

        return [*ATTACKS, *(f"{k}-prebuilt" for k in PREBUILT)]
    if kind == "judges":
        from derta.judges import JUDGES

        return list(JUDGES)
    if kind == "recipes":
        from derta.data.recipes import RECIPES

        return list(RECIPES)
    if kind == "backends":
        from derta.backends import BACKENDS

        return list(BACKENDS)
    from derta.attacks.questions import PLAIN_SET
    from derta.eval.config import FILE_ONLY_TASKS, HELPFULNESS_SETS

    return [PLAIN_SET, *HELPFULNESS_SETS, *FILE_ONLY_TASKS, "over_refusal", "xstest"]


@pytest.mark.parametrize("kind", list_command.KINDS)
def test_json_lists_the_registry_names_with_descriptions(kind, capsys):
    assert list_command.main([kind, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == _registry(kind)
    assert all(set(r) == {"name", "description"} and r["description"].strip() for r in rows)
    assert all("\n" not in r["description"] for r in rows)


@pytest.mark.parametrize("kind", list_command.KINDS)
def test_text_is_one_line_per_name(kind, capsys):
    assert list_command.main([kind]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == _registry(kind)
    assert all(len(line.split(None, 1)) == 2 for line in lines)  # a description beside each name


def test_descriptions_come_from_the_registry(capsys):
    from derta.data.recipes import RECIPES

    assert list_command.main(["recipes", "--json"]) == 0
    rows = {r["name"]: r["description"] for r in json.loads(capsys.readouterr().out)}
    assert rows["derta"] == RECIPES["derta"].__doc__.strip().splitlines()[0]
    assert list_command.main(["judges", "--json"]) == 0
    judges = {r["name"]: r["description"] for r in json.loads(capsys.readouterr().out)}
    assert "Needs a model" in judges["llm"] and "Needs a model" not in judges["offline"]
    assert list_command.main(["attacks", "--json"]) == 0
    attacks = {r["name"]: r["description"] for r in json.loads(capsys.readouterr().out)}
    assert attacks["pair"].startswith("PAIR")  # a dataclass without a docstring: its module's first line


def test_a_backend_registered_later_is_listed(capsys, monkeypatch):
    from derta.backends import BACKENDS

    def fake(arg: str = "", **kw):
        """A fake backend for this test."""

    monkeypatch.setitem(BACKENDS, "fake", fake)
    assert list_command.main(["backends", "--json"]) == 0
    rows = {r["name"]: r["description"] for r in json.loads(capsys.readouterr().out)}
    assert rows["fake"] == "A fake backend for this test."


def test_an_unknown_kind_is_a_usage_error(capsys):
    assert list_command.main(["models"]) == 2
    assert "invalid choice" in capsys.readouterr().err


def test_it_is_a_derta_command(capsys):
    from derta.cli import main

    assert main(["list", "recipes"]) == 0
    assert capsys.readouterr().out.splitlines()[0].startswith("vanilla ")
