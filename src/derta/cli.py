"""The ``derta`` command: a thin dispatcher over ``derta.commands.<name>`` modules.

Each command module defines ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> int``, and keeps heavy imports (torch, transformers) inside ``run`` so that
``derta --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import sys

from .config import ConfigError
from .io import DataError

# In the order they are listed by `derta --help`.
COMMANDS = ("demo", "data", "train", "eval", "judge", "judge-eval", "report", "deception")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="derta", description="Decoupled Refusal Training: build data, train, attack, judge, report.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        modname = f"derta.commands.{name.replace('-', '_')}"  # judge-eval -> judge_eval
        if importlib.util.find_spec(modname) is None:
            continue
        mod = importlib.import_module(modname)
        # argparse %-formats help strings: a literal "95%" in a module's HELP must not break --help
        p = sub.add_parser(name, help=mod.HELP.replace("%", "%%"), description=mod.HELP)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except (DataError, ConfigError, FileNotFoundError) as e:
        print(f"derta {args.command}: error: {e}", file=sys.stderr)
        return 2
    except ValueError as e:
        print(f"derta {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"derta {args.command}: interrupted; finished records are kept and the run can be resumed", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
