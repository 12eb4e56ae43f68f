"""The resumable keyed log: one append-only JSONL file of records, found again by key after a crash.

Generation, multi-turn conversations, judging and classification all write the same way::

    with KeyedLog(path, key=lambda g: (g.attack, g.prompt_id), read=read_generations) as log:
        todo = [p for p in prompts if log.logged((p.attack, p.id), same=...) is None]
        run = log.start(META_FORMAT, {"model": ..., "n_prompts": ...}, metadata)   # optional
        for ...:
            log.append(record)        # or log.error({...}) for a request that failed for good

- Opening cuts a torn last line (a write killed mid-way), then reads the log and indexes the
  records that ``keep`` accepts by ``key`` (a key logged twice: the later record wins).
- :meth:`KeyedLog.logged` is the record under a key, and an error if it differs from what the
  caller would write now (``same``), never a silent reuse.
- :meth:`KeyedLog.append` writes one fsynced line; a key that is already in the log is an error.
- :meth:`KeyedLog.start` writes this run's entry in ``<log>.meta.json`` (status "running"); on
  leaving the ``with`` block it is rewritten with ``finished`` and the status "complete" (no
  error rows), "incomplete" (some) or "interrupted" (an exception left the block).
- :meth:`KeyedLog.error` appends a row to ``<log>.errors.jsonl``: the request is not in the log,
  so a rerun retries it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Hashable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Generic, TypeVar

from .io import ERRORS_SUFFIX, META_SUFFIX, JsonlAppender, environment, read_log, record_run

__all__ = ["ERRORS_SUFFIX", "META_SUFFIX", "KeyedLog", "now"]

R = TypeVar("R")


def now() -> str:
    """The current UTC time as logs record it (ISO 8601, seconds)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class KeyedLog(Generic[R]):
    """An append-only JSONL log of records indexed by ``key``, with its run and error sidecars.

    ``read(path)`` returns the log's records (default: the rows as dicts, :func:`derta.io.read_log`);
    ``keep`` selects those that belong to this run's key space (e.g. one model and decoding);
    ``conflict(old)`` builds the error raised when :meth:`logged` finds ``old`` differs.
    """

    def __init__(
        self,
        path: str | Path,
        key: Callable[[R], Hashable],
        read: Callable[[Path], list[R]] | None = None,
        keep: Callable[[R], bool] | None = None,
        conflict: Callable[[R], Exception] | None = None,
    ):
        self.path = Path(path)
        self.key = key
        self._conflict = conflict
        self._out = JsonlAppender(self.path)  # opening cuts a torn last line
        try:
            rows = (read or read_log)(self.path)
        except BaseException:
            self._out.close()
            raise
        self.records: dict[Hashable, R] = {key(r): r for r in rows if keep is None or keep(r)}
        self.run: dict[str, Any] | None = None
        self.n_errors = 0
        self._fmt = ""
        self._finish: Callable[[], dict[str, Any]] | None = None

    def __contains__(self, key: Hashable) -> bool:
        return key in self.records

    def logged(self, key: Hashable, same: Callable[[R], bool] | None = None) -> R | None:
        """The record logged under ``key`` (None: not yet); one for which ``same`` is false is an error."""
        old = self.records.get(key)
        if old is not None and same is not None and not same(old):
            raise self._conflict(old) if self._conflict else ValueError(
                f"{self.path}: the record logged under {key!r} differs from the one given now")
        return old

    def append(self, record: R) -> R:
        """Write one record (a dict, or a record with ``to_dict``) and index it."""
        k = self.key(record)
        if k in self.records:
            raise ValueError(f"{self.path}: key {k!r} is already in the log; a key is written once")
        self._out.write(record if isinstance(record, dict) else record.to_dict())  # type: ignore[attr-defined]
        self.records[k] = record
        return record

    def error(self, row: dict[str, Any]) -> None:
        """Record a request that failed for good in ``<log>.errors.jsonl`` (with the time)."""
        self.n_errors += 1
        with JsonlAppender(str(self.path) + ERRORS_SUFFIX) as f:
            f.write({**row, "time": now()})

    def start(self, fmt: str, fields: dict[str, Any], metadata: dict[str, Any] | None = None,
              finish: Callable[[], dict[str, Any]] | None = None) -> dict[str, Any]:
        """Write this run's entry (status "running") in ``<log>.meta.json``; return it to update.

        The entry is ``run_id, started, finished, status``, then ``fields``, then ``environment``
        and ``metadata``; ``finish()`` adds fields when the run ends (e.g. its counts).
        """
        self._fmt, self._finish = fmt, finish
        self.run = {"run_id": uuid.uuid4().hex[:12], "started": now(), "finished": None, "status": "running",
                    **fields, "environment": environment(), "metadata": metadata or {}}
        record_run(self.path, self.run, fmt)
        return self.run

    def close(self, interrupted: bool = False) -> None:
        """Finish the run entry (if :meth:`start` wrote one) and close the log."""
        try:
            if self.run is not None and self.run["status"] == "running":
                self.run["status"] = "interrupted" if interrupted else "complete" if not self.n_errors else "incomplete"
                self.run["finished"] = now()
                if self._finish is not None:
                    self.run.update(self._finish())
                record_run(self.path, self.run, self._fmt)
        finally:
            self._out.close()

    def __enter__(self) -> "KeyedLog[R]":
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.close(interrupted=exc_type is not None)
