"""Reading and writing records: JSONL/JSON/CSV files and Hugging Face datasets.

Every reader names the file, the line and the field when input is bad; every writer either
writes the whole file (atomic rename) or appends one complete line at a time (resumable logs).
"""

from __future__ import annotations

import csv
import json
import os
import platform
import re
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


class DataError(ValueError):
    """Bad input data; the message names the file, line and field."""


def _where(path: str | Path, line: int | None, field: str | None = None) -> str:
    loc = f"{path}:{line}" if line is not None else str(path)
    return f"{loc}: field {field!r}" if field else loc


def _read_text(path: Path) -> str:
    """A file's text exactly as stored: no newline translation.

    JSONL rows are split on "\\n" alone: ``str.splitlines`` would also split at U+2028, U+2029 and
    U+0085, which ``json.dumps(..., ensure_ascii=False)`` writes raw inside strings, and
    universal-newline reading would turn a stray "\\r" into a row break. A "\\r" before the
    "\\n" (a CRLF file) is JSON whitespace, so such files still read.
    """
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise DataError(f"{path}:{line}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}); "
                        "save the file as UTF-8") from None


def iter_rows(source: str | Path, split: str = "train") -> Iterator[tuple[str, int | None, dict[str, Any]]]:
    """Yield ``(path, line, row)`` from a .jsonl/.json/.csv file or a Hugging Face dataset.

    A directory, or a source that is not an existing path, is treated as a dataset (``org/name``,
    ``hf:org/name`` or a local dataset folder) and loaded with :func:`datasets.load_dataset`; rows
    then carry their index.
    """
    src = str(source)
    path = Path(src)
    if src.startswith("hf:") or not path.exists() or path.is_dir():
        if not src.startswith("hf:") and not path.exists() and (path.suffix in {".jsonl", ".json", ".csv"} or os.sep in src and path.parent.exists()):
            raise DataError(f"{src}: no such file")
        yield from _iter_hf(src.removeprefix("hf:"), split)
        return
    suffix = path.suffix.lower()
    text = _read_text(path)
    if suffix == ".csv":
        import io as _io

        for i, row in enumerate(csv.DictReader(_io.StringIO(text, newline="")), start=2):  # line 1 is the header
            yield src, i, dict(row)
        return
    if suffix == ".json" and text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{src}:{e.lineno}: invalid JSON ({e.msg})") from None
        for i, row in enumerate(rows, start=1):
            if not isinstance(row, dict):
                raise DataError(f"{src}: item {i}: expected a JSON object, got {type(row).__name__}")
            yield src, i, row
        return
    for i, line in enumerate(text.split("\n"), start=1):  # JSONL rows end at "\n" only (see _read_text)
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{src}:{i}: invalid JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(row, dict):
            raise DataError(f"{src}:{i}: expected a JSON object, got {type(row).__name__}")
        yield src, i, row


def _iter_hf(name: str, split: str) -> Iterator[tuple[str, int | None, dict[str, Any]]]:
    import datasets  # heavy; imported only when a dataset name is used

    config = None
    if ":" in name:  # "org/name:config"
        name, config = name.split(":", 1)
    try:
        ds = datasets.load_dataset(name, config, split=split)
    except Exception as e:  # network, missing dataset, bad split: say which
        raise DataError(f"{name}: could not load Hugging Face dataset (split {split!r}): {e}") from e
    for i, row in enumerate(ds):
        yield f"hf:{name}", i, dict(row)


def require_str(row: dict[str, Any], names: tuple[str, ...], path: str, line: int | None, optional: bool = False) -> str:
    """The first present field of ``names`` as a non-empty string, or a DataError naming it."""
    for name in names:
        if name in row and row[name] is not None:
            value = row[name]
            if not isinstance(value, str):
                raise DataError(f"{_where(path, line, name)}: expected a string, got {type(value).__name__}")
            if not value.strip() and not optional:
                raise DataError(f"{_where(path, line, name)}: is empty")
            return value
    if optional:
        return ""
    alts = " or ".join(repr(n) for n in names)
    raise DataError(f"{_where(path, line)}: missing field {alts} (has: {', '.join(sorted(row)) or 'nothing'})")


def read_log(path: str | Path, parse: Any = None, what: str = "record") -> list[Any]:
    """All records of an append-only JSONL log, in file order, each passed through ``parse``.

    A last line without its newline (a write in flight, or one torn by a crash) is ignored; any
    other bad line (invalid JSON, or a row ``parse`` rejects with a ValueError, TypeError or
    KeyError) is a DataError naming the file, the line and ``what`` it should have been.
    """
    path = Path(path)
    if not path.exists():
        return []
    # Split the bytes, then decode each line: a torn last line may end inside a UTF-8 character.
    lines = path.read_bytes().split(b"\n")[:-1]  # b"" after the final newline, or a torn line
    out = []
    for i, raw in enumerate(lines, start=1):
        try:
            line = raw.decode("utf-8")  # UnicodeDecodeError is a ValueError: named like bad JSON
            if not line.strip():
                continue
            row = json.loads(line)
            out.append(parse(row) if parse else row)
        except (ValueError, TypeError, KeyError) as e:  # ValueError: bad JSON, or ``parse`` rejected the row
            raise DataError(f"{path}:{i}: not a {what} ({e})") from None
    return out


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    return [row for _, _, row in iter_rows(path)]


#: Key names that hold a secret (an API key, a token, a password): never written to a record.
SECRET_KEY = re.compile(r"^(?:.*[_-])?(?:api[_-]?key|secret(?:[_-]key)?|password|passwd)$"
                        r"|^(?:(?:access|auth|bearer|hf|api|secret)[_-])?token$", re.I)


def is_secret_key(name: Any) -> bool:
    """Is ``name`` a key that holds a secret (``api_key``, ``hf_token``, ``password``; not ``api_key_env``)?"""
    return isinstance(name, str) and bool(SECRET_KEY.match(name.strip()))


def redact_secrets(data: Any) -> Any:
    """``data`` without the keys that hold secrets (:func:`is_secret_key`), at any depth."""
    if isinstance(data, dict):
        return {k: redact_secrets(v) for k, v in data.items() if not is_secret_key(k)}
    if isinstance(data, (list, tuple)):
        return [redact_secrets(v) for v in data]
    return data


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_file(path: str | Path, mode: str = "w") -> Iterator[IO[Any]]:
    """A file opened for writing that appears under ``path`` only when the block succeeds.

    The content goes to a temp file ``.NAME.*.tmp`` beside ``path`` and is renamed over it at the
    end, so a reader (or a crash) never sees half a file; on an error the temp file is removed
    and an existing ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # as open() would create it (mkstemp makes it owner-only)
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> Path:
    """Write all rows, atomically: a reader never sees a half-written file under ``path``."""
    with atomic_file(path) as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return Path(path)


def write_json(path: str | Path, data: Any) -> Path:
    """Write one JSON document atomically; keys that hold secrets are left out (:func:`redact_secrets`)."""
    data = redact_secrets(data)
    with atomic_file(path) as f:
        json.dump(data, f, indent=2, ensure_ascii=False)
        f.write("\n")
    return Path(path)


def write_yaml(path: str | Path, data: Any) -> Path:
    """Write one YAML document (a config as run) atomically, without the keys that hold secrets."""
    import yaml

    with atomic_file(path) as f:
        yaml.safe_dump(redact_secrets(data), f, sort_keys=False, allow_unicode=True)
    return Path(path)


class JsonlAppender:
    """Append complete lines to a log and fsync them, so a crash loses at most the line in flight.

    On open, a torn last line (from a killed process) is cut off, so resumed runs neither lose nor
    duplicate finished records.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            data = self.path.read_bytes()
            if data and not data.endswith(b"\n"):
                os.truncate(self.path, data.rfind(b"\n") + 1)  # in place: a kill now never loses the whole lines
        self._f = self.path.open("a", encoding="utf-8")

    def write(self, row: dict[str, Any]) -> None:
        self._f.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> "JsonlAppender":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: The sidecars of an append-only log ``<log>``: its runs, and the requests that failed for good.
META_SUFFIX = ".meta.json"
ERRORS_SUFFIX = ".errors.jsonl"


def record_run(log_path: str | Path, run: dict[str, Any], fmt: str) -> Path:
    """Add or update ``run`` (matched by ``run_id``) in the log's sidecar ``<log>.meta.json``.

    Each invocation over an append-only log is one entry: its config, versions, seed, status.
    """
    log_path = Path(log_path)
    path = Path(str(log_path) + META_SUFFIX)
    meta: dict[str, Any] = {"format": fmt, "log": log_path.name, "runs": []}
    if path.exists():
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            meta["corrupt_sidecar_replaced"] = True
    meta["runs"] = [r for r in meta.get("runs", []) if r.get("run_id") != run["run_id"]] + [run]
    return write_json(path, meta)


def environment() -> dict[str, Any]:
    """Versions that make a result reproducible; recorded in every output."""
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("derta", "torch", "transformers", "trl", "peft", "accelerate", "datasets", "tokenizers"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out
