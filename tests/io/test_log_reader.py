"""The append-only log: ``read_log`` (torn tails ignored, bad lines named), ``JsonlAppender``
(torn tail cut on open, fsync per line) and the atomic whole-file writers."""

from __future__ import annotations

import json
import os

import pytest

from derta import io as dio
from derta.io import DataError, JsonlAppender, read_log, write_json, write_jsonl


def lines(*rows: dict) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


# ---- read_log -------------------------------------------------------------------------------

def test_reads_records_in_file_order(tmp_path):
    p = tmp_path / "log.jsonl"
    p.write_bytes(lines({"i": 2}, {"i": 0}, {"i": 1}))
    assert read_log(p) == [{"i": 2}, {"i": 0}, {"i": 1}]


def test_missing_and_empty_files_have_no_records(tmp_path):
    assert read_log(tmp_path / "absent.jsonl") == []
    (tmp_path / "empty.jsonl").write_bytes(b"")
    assert read_log(tmp_path / "empty.jsonl") == []
    (tmp_path / "blank.jsonl").write_bytes(b"\n\n  \n")
    assert read_log(tmp_path / "blank.jsonl") == []


def test_torn_last_line_is_ignored(tmp_path):
    p = tmp_path / "log.jsonl"
    p.write_bytes(lines({"i": 0}, {"i": 1}) + b'{"i": 2, "text": "half writ')
    assert read_log(p) == [{"i": 0}, {"i": 1}]


def test_last_line_without_newline_is_ignored_even_when_it_parses(tmp_path):
    # a write in flight may have stopped right before its "\n": the record is not finished yet
    p = tmp_path / "log.jsonl"
    p.write_bytes(lines({"i": 0}) + b'{"i": 1}')
    assert read_log(p) == [{"i": 0}]


def test_a_single_torn_line_gives_no_records(tmp_path):
    p = tmp_path / "log.jsonl"
    p.write_bytes(b'{"i": 0')
    assert read_log(p) == []


def test_bad_middle_line_names_file_line_and_what(tmp_path):
    p = tmp_path / "log.jsonl"
    p.write_bytes(lines({"i": 0}) + b"{not json\n" + lines({"i": 2}))
    with pytest.raises(DataError, match=rf"^{p}:2: not a generation \("):
        read_log(p, what="generation")


def test_bad_line_number_counts_blank_lines(tmp_path):
    p = tmp_path / "log.jsonl"
    p.write_bytes(lines({"i": 0}) + b"\n" + b"[1, 2\n" + lines({"i": 3}))
    with pytest.raises(DataError, match=rf"^{p}:3: not a record"):
        read_log(p)


def test_parse_is_applied_and_its_failures_name_the_line(tmp_path):
    p = tmp_path / "log.jsonl"
    p.write_bytes(lines({"id": "a"}, {"id": "b"}))
    assert read_log(p, parse=lambda r: r["id"].upper()) == ["A", "B"]
    p.write_bytes(lines({"id": "a"}, {"name": "b"}))
    with pytest.raises(DataError, match=rf"^{p}:2: not a judgement \(.*'id'"):
        read_log(p, parse=lambda r: r["id"], what="judgement")


def test_parse_rejecting_a_row_with_a_value_error_names_the_line(tmp_path):
    def parse(r):
        if r["verdict"] not in ("safe", "unsafe"):
            raise ValueError(f"bad verdict {r['verdict']!r}")
        return r["verdict"]

    p = tmp_path / "log.jsonl"
    p.write_bytes(lines({"verdict": "safe"}, {"verdict": "maybe"}))
    with pytest.raises(DataError, match=rf"^{p}:2: not a judgement \(bad verdict 'maybe'\)"):
        read_log(p, parse=parse, what="judgement")


def test_crlf_lines_and_raw_line_separators_inside_strings(tmp_path):
    # U+2028 inside a string is not a row break; a CRLF file still reads ("\r" is JSON whitespace)
    p = tmp_path / "log.jsonl"
    p.write_bytes('{"t": "a\u2028b"}\r\n{"t": "c"}\r\n'.encode())
    assert read_log(p) == [{"t": "a\u2028b"}, {"t": "c"}]


def test_utf8_text_reads(tmp_path):
    p = tmp_path / "log.jsonl"
    p.write_bytes(json.dumps({"t": "café ☕"}, ensure_ascii=False).encode() + b"\n")
    assert read_log(p) == [{"t": "café ☕"}]


def test_torn_last_line_cut_inside_a_utf8_character_is_ignored(tmp_path):
    p = tmp_path / "log.jsonl"
    full = json.dumps({"t": "café"}, ensure_ascii=False).encode()
    p.write_bytes(lines({"i": 0}) + full[: full.index("é".encode()) + 1])  # first byte of "é" only
    assert read_log(p) == [{"i": 0}]


def test_non_utf8_middle_line_is_a_data_error_naming_file_and_line(tmp_path):
    p = tmp_path / "log.jsonl"
    p.write_bytes(lines({"i": 0}) + b'{"t": "\xff\xfe"}\n' + lines({"i": 2}))
    with pytest.raises(DataError, match=rf"^{p}:2: "):
        read_log(p)


def test_non_utf8_bytes_are_an_error_not_silently_replaced(tmp_path):
    # whatever the error type, a non-UTF-8 log never reads as if it were valid
    p = tmp_path / "log.jsonl"
    p.write_bytes(lines({"i": 0}) + b'{"t": "\xff"}\n')
    with pytest.raises(ValueError):
        read_log(p)


# ---- JsonlAppender --------------------------------------------------------------------------

def test_appender_cuts_a_torn_tail_on_open(tmp_path):
    p = tmp_path / "log.jsonl"
    p.write_bytes(lines({"i": 0}, {"i": 1}) + b'{"i": 2, "te')
    with JsonlAppender(p) as log:
        assert p.read_bytes() == lines({"i": 0}, {"i": 1})  # cut before the first write
        log.write({"i": 2})
    assert read_log(p) == [{"i": 0}, {"i": 1}, {"i": 2}]


def test_appender_on_a_file_that_is_one_torn_line_empties_it(tmp_path):
    p = tmp_path / "log.jsonl"
    p.write_bytes(b'{"i": 0, "t')
    JsonlAppender(p).close()
    assert p.read_bytes() == b""


def test_appender_keeps_complete_files_and_appends(tmp_path):
    p = tmp_path / "log.jsonl"
    before = lines({"i": 0})
    p.write_bytes(before)
    with JsonlAppender(p) as log:
        log.write({"i": 1, "t": "é"})
    assert p.read_bytes() == before + json.dumps({"i": 1, "t": "é"}, ensure_ascii=False).encode() + b"\n"


def test_appender_creates_parent_folders(tmp_path):
    p = tmp_path / "a" / "b" / "log.jsonl"
    with JsonlAppender(p) as log:
        log.write({"i": 0})
    assert read_log(p) == [{"i": 0}]


def test_each_write_is_on_disk_before_close(tmp_path, monkeypatch):
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(dio.os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    p = tmp_path / "log.jsonl"
    log = JsonlAppender(p)
    try:
        log.write({"i": 0})
        assert read_log(p) == [{"i": 0}]  # another reader sees it: flushed, not buffered
        assert synced == [log._f.fileno()]
        log.write({"i": 1})
        assert read_log(p) == [{"i": 0}, {"i": 1}] and len(synced) == 2
    finally:
        log.close()


def test_appender_unserialisable_row_writes_nothing(tmp_path):
    p = tmp_path / "log.jsonl"
    with JsonlAppender(p) as log:
        log.write({"i": 0})
        with pytest.raises(TypeError):
            log.write({"i": 1, "bad": object()})
        log.write({"i": 2})
    assert read_log(p) == [{"i": 0}, {"i": 2}]


# ---- atomic whole-file writers --------------------------------------------------------------

def leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_write_jsonl_writes_every_row(tmp_path):
    p = write_jsonl(tmp_path / "sub" / "rows.jsonl", iter([{"a": 1}, {"t": "é"}]))
    assert p == tmp_path / "sub" / "rows.jsonl"
    assert p.read_bytes() == b'{"a": 1}\n' + '{"t": "é"}\n'.encode()
    assert leftovers(p.parent) == []


def test_write_jsonl_failing_midway_leaves_the_old_file_and_no_temp(tmp_path):
    p = tmp_path / "rows.jsonl"
    p.write_bytes(b'{"old": true}\n')

    def rows():
        yield {"a": 1}
        yield {"a": 2}
        raise RuntimeError("source failed")

    with pytest.raises(RuntimeError, match="source failed"):
        write_jsonl(p, rows())
    with pytest.raises(TypeError):
        write_jsonl(p, [{"a": 1}, {"bad": object()}])
    assert p.read_bytes() == b'{"old": true}\n'
    assert leftovers(tmp_path) == []


def test_write_jsonl_failing_leaves_no_file_when_there_was_none(tmp_path):
    p = tmp_path / "rows.jsonl"
    with pytest.raises(TypeError):
        write_jsonl(p, [{"a": 1}, {"bad": {1, 2}}])
    assert list(tmp_path.iterdir()) == []


def test_write_json_round_trip_and_format(tmp_path):
    p = write_json(tmp_path / "s.json", {"b": [1, 2], "t": "é"})
    assert p.read_text(encoding="utf-8") == '{\n  "b": [\n    1,\n    2\n  ],\n  "t": "é"\n}\n'
    assert leftovers(tmp_path) == []


def test_write_json_failing_midway_leaves_the_old_file_and_no_temp(tmp_path):
    p = tmp_path / "s.json"
    p.write_text('{"old": 1}\n')
    # json.dump streams: "first" is written to the temporary file before "bad" fails
    with pytest.raises(TypeError):
        write_json(p, {"first": "x" * 10_000, "bad": object()})
    assert p.read_text() == '{"old": 1}\n'
    assert leftovers(tmp_path) == []
    with pytest.raises(TypeError):
        write_json(tmp_path / "new.json", [1, object()])
    assert sorted(x.name for x in tmp_path.iterdir()) == ["s.json"]


def test_writers_replace_atomically(tmp_path, monkeypatch):
    # the destination changes only through os.replace of a complete temporary file
    seen: list[bytes] = []
    real_replace = os.replace
    monkeypatch.setattr(dio.os, "replace", lambda src, dst: (seen.append(open(src, "rb").read()), real_replace(src, dst))[1])
    write_jsonl(tmp_path / "r.jsonl", [{"a": 1}])
    write_json(tmp_path / "s.json", {"a": 1})
    assert seen == [b'{"a": 1}\n', b'{\n  "a": 1\n}\n']


def test_atomic_writes_get_the_permissions_open_would_give(tmp_path):
    """A summary written atomically is readable by the group and others as the umask allows,
    like a file made by open(), not owner-only as the temp file it starts as."""
    import os
    import stat

    from derta.io import write_json

    old = os.umask(0o022)
    try:
        p = write_json(tmp_path / "summary.json", {"a": 1})
        with open(tmp_path / "plain.json", "w") as f:
            f.write("{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE(p.stat().st_mode) == stat.S_IMODE((tmp_path / "plain.json").stat().st_mode) == 0o644
