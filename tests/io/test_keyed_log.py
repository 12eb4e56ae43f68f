"""The resumable keyed log: resume by key, torn lines, one write per key, error and run sidecars."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from derta.io import ERRORS_SUFFIX, META_SUFFIX, read_log
from derta.logs import KeyedLog

FMT = "derta.test-log/1"


def by_id(row: dict) -> str:
    return row["id"]


def meta(path: Path) -> dict:
    return json.loads(Path(str(path) + META_SUFFIX).read_text())


def test_resume_finds_logged_keys_and_appends_only_new_ones(tmp_path):
    path = tmp_path / "log.jsonl"
    with KeyedLog(path, key=by_id) as log:
        assert log.records == {}
        log.append({"id": "a", "x": 1})
        log.append({"id": "b", "x": 2})
    with KeyedLog(path, key=by_id) as log:
        assert set(log.records) == {"a", "b"} and "a" in log and "c" not in log
        assert log.logged("b") == {"id": "b", "x": 2} and log.logged("c") is None
        todo = [k for k in ("a", "b", "c") if k not in log]
        for k in todo:
            log.append({"id": k, "x": 3})
    assert [r["id"] for r in read_log(path)] == ["a", "b", "c"]


def test_keep_selects_the_key_space_of_this_run(tmp_path):
    path = tmp_path / "log.jsonl"
    with KeyedLog(path, key=by_id) as log:
        log.append({"id": "a", "model": "m1"})
    with KeyedLog(path, key=lambda r: (r["model"], r["id"])) as log:
        log.append({"id": "a", "model": "m2"})  # the same id, another model: another key
    with KeyedLog(path, key=by_id, keep=lambda r: r["model"] == "m2") as log:
        assert log.records == {"a": {"id": "a", "model": "m2"}}


def test_records_are_read_with_the_callers_reader(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text('{"id": "a", "n": 1}\n')
    with KeyedLog(path, key=lambda r: r[0], read=lambda p: [(r["id"], r["n"]) for r in read_log(p)]) as log:
        assert log.records == {"a": ("a", 1)}


def test_a_torn_last_line_is_cut_on_open(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text('{"id": "a"}\n{"id": "b", "x": ')  # a write killed mid-way
    with KeyedLog(path, key=by_id) as log:
        assert set(log.records) == {"a"}
        assert path.read_text() == '{"id": "a"}\n'
        log.append({"id": "b", "x": 1})
    assert path.read_text() == '{"id": "a"}\n{"id": "b", "x": 1}\n'


def test_a_key_is_written_once(tmp_path):
    path = tmp_path / "log.jsonl"
    with KeyedLog(path, key=by_id) as log:
        log.append({"id": "a"})
        with pytest.raises(ValueError, match="key 'a' is already in the log"):
            log.append({"id": "a", "again": True})
    with KeyedLog(path, key=by_id) as log, pytest.raises(ValueError, match="already in the log"):
        log.append({"id": "a"})  # logged by an earlier run
    assert read_log(path) == [{"id": "a"}]


def test_a_logged_record_that_differs_is_an_error(tmp_path):
    path = tmp_path / "log.jsonl"
    with KeyedLog(path, key=by_id) as log:
        log.append({"id": "a", "text": "old"})
    with KeyedLog(path, key=by_id, conflict=lambda old: LookupError(f"{old['id']} changed")) as log:
        assert log.logged("a", same=lambda r: r["text"] == "old") == {"id": "a", "text": "old"}
        with pytest.raises(LookupError, match="a changed"):
            log.logged("a", same=lambda r: r["text"] == "new")
    with KeyedLog(path, key=by_id) as log, pytest.raises(ValueError, match="logged under 'a' differs"):
        log.logged("a", same=lambda r: False)


def test_error_rows_go_to_the_errors_sidecar_not_the_log(tmp_path):
    path = tmp_path / "log.jsonl"
    with KeyedLog(path, key=by_id) as log:
        log.error({"id": "a", "error": "timeout"})
        log.error({"id": "b", "error": "rate limit"})
        assert log.n_errors == 2
    errors = read_log(str(path) + ERRORS_SUFFIX)
    assert [(e["id"], e["error"]) for e in errors] == [("a", "timeout"), ("b", "rate limit")]
    assert all(e["time"] for e in errors)
    assert read_log(path) == []


def test_run_sidecar_running_then_complete(tmp_path):
    path = tmp_path / "log.jsonl"
    counts = {"written": 0}
    with KeyedLog(path, key=by_id) as log:
        run = log.start(FMT, {"model": "m", "n": 2}, {"why": "test"}, finish=lambda: {"counts": counts})
        entry = meta(path)["runs"][0]
        assert entry["status"] == "running" and entry["finished"] is None and "counts" not in entry
        log.append({"id": "a"})
        counts["written"] += 1
    m = meta(path)
    assert m["format"] == FMT and m["log"] == "log.jsonl"
    [entry] = m["runs"]
    assert list(entry) == ["run_id", "started", "finished", "status", "model", "n", "environment", "metadata", "counts"]
    assert entry["run_id"] == run["run_id"] and entry["status"] == "complete" and entry["finished"]
    assert entry["metadata"] == {"why": "test"} and entry["counts"] == {"written": 1} and entry["environment"]["python"]


def test_run_sidecar_incomplete_after_error_rows(tmp_path):
    path = tmp_path / "log.jsonl"
    with KeyedLog(path, key=by_id) as log:
        log.start(FMT, {})
        log.error({"id": "a", "error": "boom"})
    assert meta(path)["runs"][-1]["status"] == "incomplete"


def test_run_sidecar_interrupted_when_the_block_raises(tmp_path):
    path = tmp_path / "log.jsonl"
    with pytest.raises(KeyboardInterrupt):
        with KeyedLog(path, key=by_id) as log:
            log.start(FMT, {}, finish=lambda: {"counts": {"n": 1}})
            log.append({"id": "a"})
            raise KeyboardInterrupt
    entry = meta(path)["runs"][-1]
    assert entry["status"] == "interrupted" and entry["finished"] and entry["counts"] == {"n": 1}
    assert read_log(path) == [{"id": "a"}]  # what was written before stays
    with KeyedLog(path, key=by_id) as log:  # a later run is one more entry
        log.start(FMT, {})
    assert [r["status"] for r in meta(path)["runs"]] == ["interrupted", "complete"]


def test_no_run_sidecar_without_start(tmp_path):
    path = tmp_path / "log.jsonl"
    with pytest.raises(RuntimeError):
        with KeyedLog(path, key=by_id) as log:
            log.append({"id": "a"})
            raise RuntimeError("before any run entry")
    assert not Path(str(path) + META_SUFFIX).exists()
