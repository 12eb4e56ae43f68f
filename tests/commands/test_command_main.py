"""Each command module's ``main(argv)`` behaves as ``derta <command> argv...``: exit codes and errors."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import pytest

from derta import cli

MODULES = {name: f"derta.commands.{name.replace('-', '_')}" for name in cli.COMMANDS}


@pytest.mark.parametrize("name", cli.COMMANDS)
def test_help_returns_zero_like_the_cli(name, capsys):
    mod = importlib.import_module(MODULES[name])
    assert mod.main(["--help"]) == 0
    own = capsys.readouterr().out
    assert cli.main([name, "--help"]) == 0
    assert capsys.readouterr().out == own  # the same parser: same usage line and options
    assert own.startswith(f"usage: derta {name} ")


@pytest.mark.parametrize("name", cli.COMMANDS)
def test_an_unknown_option_returns_two_like_the_cli(name, capsys):
    mod = importlib.import_module(MODULES[name])
    argv = {"report": ["runs/x"], "judge": ["r.jsonl"], "judge-eval": ["f.jsonl"], "eval": ["c.yaml"], "list": ["judges"]}.get(name, [])
    assert mod.main([*argv, "--no-such-option"]) == 2
    own = capsys.readouterr().err
    assert cli.main([name, *argv, "--no-such-option"]) == 2
    assert capsys.readouterr().err == own and "error:" in own


def test_errors_from_run_print_one_line_and_return_two(tmp_path, capsys):
    from derta.commands import data, judge, train

    missing = tmp_path / "none.jsonl"
    assert judge.main([str(missing), "--out", str(tmp_path / "o.jsonl")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("derta judge: error: ") and str(missing) in err
    assert train.main(["--config", str(tmp_path / "none.yaml")]) == 2
    assert capsys.readouterr().err.startswith("derta train: error: ")
    assert data.main(["build", "--recipe", "nosuch", "--triples", str(missing), "--out", str(tmp_path / "d.jsonl")]) == 2
    assert "derta data: error: unknown recipe 'nosuch'" in capsys.readouterr().err
    assert data.main([]) == cli.main(["data"]) == 2  # no action: the usage line


def test_no_command_prints_help_and_returns_two(capsys):
    assert cli.main([]) == 2
    assert "COMMAND" in capsys.readouterr().out


def test_commands_import_alone_without_the_cli_or_torch():
    code = ("import sys, importlib\n"
            f"mods = {sorted(MODULES.values())!r}\n"
            "for m in mods: importlib.import_module(m)\n"
            "import json; print(json.dumps(sorted(m for m in ('derta.cli', 'torch', 'transformers') if m in sys.modules)))\n"
            "from derta.cli import build_parser\n"
            "build_parser()\n"
            "print(json.dumps(sorted(m for m in ('torch', 'transformers') if m in sys.modules)))\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    alone, with_parser = map(json.loads, p.stdout.splitlines())
    assert alone == [] and with_parser == []


def test_the_process_exit_code_matches_main(tmp_path):
    p = subprocess.run([sys.executable, "-m", "derta.cli", "train", "--lora", "maybe", "--print-config"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "derta train: error:" in p.stderr and "--lora" in p.stderr
    from derta.commands import train

    assert train.main(["--lora", "maybe", "--print-config"]) == 2
