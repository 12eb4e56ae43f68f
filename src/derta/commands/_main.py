"""What ``derta COMMAND ...`` does around a command's ``run``, shared by :mod:`derta.cli` and by each
command module's ``main(argv)``: parse, set up logging, run, and turn errors into an exit code.

Exit codes: 0 done, 1 a run that finished incomplete (it says how to resume), 2 a bad input or an
environment error (one line ``derta COMMAND: error: ...`` naming the file, line, option or server:
bad data or config, a file system error with its path, a backend's HTTP or connection error after
its retries), 130 interrupted, and argparse's own (0 for ``--help``, 2 for a bad option, also one
line). With ``-v`` the traceback is printed too.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import re
import sys
import traceback
from typing import Any, Callable

from ..config import ConfigError
from ..io import DataError

__all__ = ["ConfigError", "DataError", "execute", "positive_int", "nonnegative_int", "run_command"]


def module_name(command: str) -> str:
    """``judge-eval`` -> ``derta.commands.judge_eval``."""
    return f"derta.commands.{command.replace('-', '_')}"


class OneLineParser(argparse.ArgumentParser):
    """argparse with its errors on one line (``derta judge: error: argument --batch-size: ...``)
    and a pointer to ``--help`` instead of the usage block."""

    def error(self, message: str) -> Any:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def add_command(sub: Any, name: str, mod: Any) -> argparse.ArgumentParser:
    """The subparser of command ``name`` from its module's ``HELP`` and ``add_arguments``."""
    # argparse %-formats help strings: a literal "95%" in a module's HELP must not break --help
    p = sub.add_parser(name, help=mod.HELP.replace("%", "%%"), description=mod.HELP)
    mod.add_arguments(p)
    p.set_defaults(_run=mod.run)
    return p


def parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace | int:
    """The parsed arguments, or argparse's exit code (``--help``, a bad option) as an int."""
    try:
        return parser.parse_args(argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)


def positive_int(text: str) -> int:
    """An argparse ``type``: an integer >= 1."""
    return _int_at_least(text, 1)


def nonnegative_int(text: str) -> int:
    """An argparse ``type``: an integer >= 0."""
    return _int_at_least(text, 0)


def _int_at_least(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {value}")
    return value


def _os_message(e: OSError) -> str:
    """``PATH: reason`` (both paths for a rename), or the error itself when it names no file."""
    reason = e.strerror or str(e)
    if e.filename is not None and e.filename2 is not None:
        return f"{e.filename} -> {e.filename2}: {reason}"
    if e.filename is not None:
        return f"{e.filename}: {reason}"
    return f"{type(e).__name__}: {reason}" if not str(e) else str(e)


def backend_error(e: BaseException) -> str | None:
    """A one-line message for an HTTP or connection error of a model backend, or None when
    ``e`` is not one (openai's APIStatusError / APIConnectionError, httpx's errors)."""
    mod = type(e).__module__.split(".")[0]
    if mod == "openai":
        status = getattr(e, "status_code", None)
        request = getattr(e, "request", None)
        url = f" ({request.url})" if request is not None and getattr(request, "url", None) else ""
        if status is not None:
            return f"the model server answered HTTP {status}{url}: {getattr(e, 'message', e)}"
        if type(e).__name__ in ("APIConnectionError", "APITimeoutError"):
            return f"cannot reach the model server{url}: {e}"
    if mod == "httpx":
        request = getattr(e, "_request", None)
        url = f" ({request.url})" if request is not None else ""
        return f"model server request failed{url}: {type(e).__name__}: {e}"
    return None


_REPO_ID = re.compile(r"Repo id must be in the form .*?: '([^']+)'")


def _user_message(e: Exception) -> str:
    """The message of a ValueError (or a file-less OSError); huggingface_hub's "Repo id must be in the form ..." for a
    local path that does not exist (a typo in ``hf:./out/x``) says so instead."""
    from ..backends.hf import looks_like_path

    m = _REPO_ID.search(str(e))  # raised as HFValidationError, or re-raised by transformers
    if m and looks_like_path(m.group(1)):
        return f"no such model directory: {m.group(1)}"
    return _os_message(e) if isinstance(e, OSError) else str(e)


def _fail(command: str, message: str, verbose: bool) -> int:
    if verbose:
        traceback.print_exc()
    print(f"derta {command}: error: {' '.join(str(message).split())}", file=sys.stderr)
    return 2


def execute(command: str, run: Callable[[argparse.Namespace], Any], args: argparse.Namespace) -> int:
    """``run(args)`` with the errors a user can fix, or that the environment caused, printed as
    one line (exit 2; with ``-v`` the traceback too)."""
    from ..backends.base import BackendError

    verbose = bool(getattr(args, "verbose", False))
    try:
        return int(run(args) or 0)
    except (DataError, ConfigError, ValueError) as e:
        return _fail(command, _user_message(e), verbose)
    except BackendError as e:
        return _fail(command, str(e), verbose)
    except OSError as e:  # transformers re-raises a bad repo id as an OSError
        return _fail(command, _user_message(e) if e.filename is None else _os_message(e), verbose)
    except ImportError as e:  # an optional dependency (vllm, openai) that is not installed
        return _fail(command, str(e), verbose)
    except KeyboardInterrupt:
        print(f"derta {command}: interrupted; finished records are kept and the run can be resumed", file=sys.stderr)
        return 130
    except Exception as e:
        message = backend_error(e)
        if message is None:
            raise
        return _fail(command, message, verbose)


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


def run_command(command: str, argv: list[str] | None = None) -> int:
    """``derta COMMAND argv...`` as a function; ``argv`` defaults to ``sys.argv[1:]``."""
    parser = OneLineParser(prog="derta")  # as derta.cli builds it: the same messages
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    add_command(parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser), command, importlib.import_module(module_name(command)))
    args = parse(parser, [command, *(sys.argv[1:] if argv is None else argv)])
    if isinstance(args, int):
        return args
    setup_logging(args.verbose)
    return execute(command, args._run, args)
