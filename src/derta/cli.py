"""The ``derta`` command: a thin dispatcher over ``derta.commands.<name>`` modules.

Each command module defines ``HELP`` (one line), ``add_arguments(parser)``, ``run(args) -> int``
and ``main(argv) -> int`` (``derta <name> argv...`` as a function, through :func:`run_command`),
and keeps heavy imports (torch, transformers) inside ``run`` so that ``derta --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys

from .commands._main import OneLineParser, add_command, execute, module_name, parse, run_command, setup_logging

__all__ = ["COMMANDS", "build_parser", "main", "run_command"]

# In the order they are listed by `derta --help`.
COMMANDS = ("demo", "data", "train", "eval", "finetune-attack", "judge", "judge-eval", "report", "deception", "list")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="derta", description="Decoupled Refusal Training: build data, train, attack, judge, report.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    for name in COMMANDS:
        if importlib.util.find_spec(module_name(name)) is None:
            continue
        add_command(sub, name, importlib.import_module(module_name(name)))
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parse(parser, argv)
    if isinstance(args, int):
        return args
    setup_logging(args.verbose)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    return execute(args.command, args._run, args)


if __name__ == "__main__":
    sys.exit(main())
