"""JSONL rows end at "\\n" only: line separators inside JSON strings survive a round trip."""

from __future__ import annotations

import json

import pytest

from derta.io import DataError, JsonlAppender, iter_rows, read_jsonl, read_log, write_jsonl

# json.dumps(ensure_ascii=False) writes the first three raw; str.splitlines splits at all of them.
TRICKY = "a\u2028b\u2029c\u0085d\re\r\nf\x1cg"
ROWS = [{"id": "1", "response": TRICKY}, {"id": "2", "response": "plain"}, {"id": "3", "response": "\u2028" + TRICKY}]


def test_the_writer_really_leaves_separators_raw(tmp_path):
    path = write_jsonl(tmp_path / "x.jsonl", ROWS)
    text = path.read_bytes().decode("utf-8")
    assert "\u2028" in text and "\u2029" in text and "\u0085" in text  # else the test below proves nothing
    assert len(text.splitlines()) > len(ROWS) and text.count("\n") == len(ROWS)


def test_write_jsonl_iter_rows_round_trip(tmp_path):
    path = write_jsonl(tmp_path / "x.jsonl", ROWS)
    got = list(iter_rows(path))
    assert [row for _, _, row in got] == ROWS
    assert [line for _, line, _ in got] == [1, 2, 3]
    assert read_jsonl(path) == ROWS


def test_read_log_round_trip_with_an_appender(tmp_path):
    path = tmp_path / "log.jsonl"
    with JsonlAppender(path) as log:
        for row in ROWS:
            log.write(row)
    assert read_log(path) == ROWS
    # reopening must not mistake a separator inside a string for a torn last line
    with JsonlAppender(path) as log:
        log.write({"id": "4", "response": TRICKY})
    assert [r["id"] for r in read_log(path)] == ["1", "2", "3", "4"]
    assert read_log(path)[-1]["response"] == TRICKY


def test_error_line_numbers_count_newlines_only(tmp_path):
    path = tmp_path / "bad.jsonl"
    lines = [json.dumps(r, ensure_ascii=False) for r in ROWS] + ["{not json"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8", newline="")
    with pytest.raises(DataError, match=r"bad\.jsonl:4: invalid JSON"):
        list(iter_rows(path))
    with pytest.raises(DataError, match=r"bad\.jsonl:4: not a judged record"):
        read_log(path, what="judged record")


def test_crlf_files_still_read(tmp_path):
    path = tmp_path / "crlf.jsonl"
    path.write_bytes(b"".join(json.dumps(r, ensure_ascii=False).encode() + b"\r\n" for r in ROWS))
    assert read_jsonl(path) == ROWS
    assert read_log(path) == ROWS


def test_a_raw_carriage_return_is_not_a_row_break(tmp_path):
    # Universal-newline reading would split this row at the "\r" and report line 1 as broken.
    path = tmp_path / "cr.jsonl"
    path.write_bytes(b'{"id": "1", "note": "x"}\r{"id": "2"}\n')
    with pytest.raises(DataError, match=r"cr\.jsonl:1: invalid JSON \(Extra data"):
        list(iter_rows(path))
