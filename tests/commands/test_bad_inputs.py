"""Bad input and a broken environment end in one line, exit 2: the message names the file, line,
field, option or server; no traceback; nothing half-written is left looking complete."""

from __future__ import annotations

import errno
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
import yaml

from derta.cli import main

GOOD = {"id": "a", "question": "How do I pick a lock?", "response": "Sorry, I cannot help with that."}
TRIPLE = {"id": "t1", "query": "How do I pick a lock?", "harmful_response": "Step 1: insert a tension wrench.",
          "safe_response": "Sorry, I cannot help with that."}


def jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def eval_cfg(tmp: Path, **extra) -> Path:
    data = {"models": [{"name": "m", "spec": "scripted", "options": {"default": "Sorry, I cannot help."}}],
            "questions": {"file": str(jsonl(tmp / "q.jsonl", [{"id": "1", "question": "How do I pick a lock?"}]))},
            "attacks": ["direct"], "judges": ["offline"], "helpfulness": {"sets": []}, "out": str(tmp / "run")}
    data.update(extra)
    path = tmp / "eval.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


@dataclass
class Case:
    """``argv(tmp)`` -> the command line; ``names``: what the message must say; ``absent``: outputs
    that must not exist afterwards (relative to tmp)."""

    argv: Callable[[Path], list[str]]
    names: list[str]
    absent: list[str] = field(default_factory=lambda: ["judged.jsonl", "run/summary.json", "data.jsonl"])
    setup: Callable[[Path, pytest.MonkeyPatch], None] | None = None


def _judge(*extra: str, rows: list | None = None, out: str = "judged.jsonl", raw: bytes | None = None):
    def argv(tmp: Path) -> list[str]:
        src = tmp / "r.jsonl"
        if raw is not None:
            src.write_bytes(raw)
        else:
            jsonl(src, rows if rows is not None else [GOOD])
        return ["judge", str(src), "--out", str(tmp / out), *extra]
    return argv


def _full_disk(tmp: Path, mp: pytest.MonkeyPatch) -> None:
    def no_space(path, rows):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))
    mp.setattr("derta.io.write_jsonl", no_space)


def _refused_server(tmp: Path, mp: pytest.MonkeyPatch) -> None:
    pytest.importorskip("openai")


def _auth_server(tmp: Path, mp: pytest.MonkeyPatch) -> None:
    pytest.importorskip("openai")
    from derta.backends import ScriptedBackend
    from derta.serve import ModelServer

    server = ModelServer(ScriptedBackend(default="Verdict: safe"), "127.0.0.1", 0, model_name="judge", api_key="right-key").start()
    (tmp / "url").write_text(server.url)
    _SERVERS.append(server)


_SERVERS: list = []


def _url(tmp: Path) -> str:
    return (tmp / "url").read_text()


CASES = {
    # derta judge: option values
    "judge batch-size negative": Case(_judge("--batch-size", "-3"), ["--batch-size", "-3"]),
    "judge batch-size zero": Case(_judge("--batch-size", "0"), ["--batch-size", "0"]),
    "judge batch-size text": Case(_judge("--batch-size", "many"), ["--batch-size", "'many'"]),
    "judge unknown judge": Case(_judge("--judge", "nosuch"), ["unknown judge 'nosuch'"]),
    "judge option without key": Case(_judge("--judge-option", "llm=3"), ["--judge-option", "NAME.KEY=VALUE"]),
    "judge option for an absent judge": Case(_judge("--judge-option", "llm.x=1"), ["--judge-option", "llm"]),
    "judge secret option": Case(_judge("--judge", "llm=openai:m", "--judge-option", "llm.api_key=sk-9"), ["llm.api_key", "api_key_env"]),
    "judge model judge without model": Case(_judge("--judge", "llm"), ["--judge llm needs a model"]),
    "judge missing model dir": Case(_judge("--judge", "llm=hf:./no/such/model"), ["no such model directory: ./no/such/model"]),
    # derta judge: the input file
    "judge missing input": Case(lambda tmp: ["judge", str(tmp / "none.jsonl"), "--out", str(tmp / "judged.jsonl")], ["none.jsonl", "no such file"]),
    "judge not utf-8": Case(_judge(raw=json.dumps(GOOD).encode() + b"\n" + b'{"response": "caf\xe9"}\n'), ["r.jsonl:2", "not UTF-8"]),
    "judge invalid json": Case(_judge(rows=[GOOD, "{not json"]), ["r.jsonl:2", "invalid JSON"]),
    "judge not an object": Case(_judge(rows=["[1, 2]"]), ["r.jsonl:1", "expected a JSON object"]),
    "judge missing response": Case(_judge(rows=[{"id": "a", "question": "q"}]), ["r.jsonl:1", "'response'"]),
    "judge response not a string": Case(_judge(rows=[{**GOOD, "response": 7}]), ["r.jsonl:1", "field 'response'", "int"]),
    "judge question not a string": Case(_judge(rows=[{**GOOD, "question": ["q"]}]), ["r.jsonl:1", "field 'question'"]),
    "judge no prompt or question": Case(_judge(rows=[{"response": "x"}]), ["r.jsonl:1", "'prompt' or 'question'"]),
    "judge duplicate ids": Case(_judge(rows=[GOOD, GOOD]), ["r.jsonl:2", "r.jsonl:1", "'a'"]),
    "judge empty input": Case(_judge(rows=[]), ["r.jsonl", "no responses"]),
    # derta judge: the environment
    "judge out is a directory": Case(_judge(out="outdir"), ["outdir", "is a directory"],
                                     setup=lambda tmp, mp: (tmp / "outdir").mkdir()),
    "judge out under a file": Case(_judge(out="afile/judged.jsonl"), ["afile", "File exists"],
                                   absent=["afile/judged.jsonl"], setup=lambda tmp, mp: (tmp / "afile").write_text("x")),
    "judge full disk": Case(_judge(), ["judged.jsonl", "No space left on device"], setup=_full_disk),
    "judge connection refused": Case(_judge("--judge", "llm=openai:m", "--judge-option", "llm.base_url=http://127.0.0.1:9/v1",
                                            "--judge-option", "llm.max_retries=0", "--judge-option", "llm.progress=false"),
                                     ["connection error", "openai:m"], setup=_refused_server),
    "judge http 401": Case(lambda tmp: _judge("--judge", "llm=openai:judge", "--judge-option", f"llm.base_url={_url(tmp)}",
                                              "--judge-option", "llm.progress=false")(tmp), ["HTTP 401"], setup=_auth_server),
    # derta eval
    "eval missing config": Case(lambda tmp: ["eval", str(tmp / "none.yaml")], ["none.yaml", "not found"]),
    "eval invalid yaml": Case(lambda tmp: ["eval", str(tmp / "bad.yaml")], ["bad.yaml:2", "invalid YAML"],
                              setup=lambda tmp, mp: (tmp / "bad.yaml").write_text("models: [a\nout: : x\n")),
    "eval unknown key": Case(lambda tmp: ["eval", str(eval_cfg(tmp, colour="red"))], ["eval.yaml", "unknown key 'colour'"]),
    "eval negative limit": Case(lambda tmp: ["eval", str(eval_cfg(tmp)), "--limit", "-1"], ["--limit", "-1"]),
    "eval api key in file": Case(lambda tmp: ["eval", str(eval_cfg(tmp, models=[{"name": "m", "spec": "openai:gpt", "api_key": "sk-1"}]))],
                                 ["eval.yaml", "models[0].api_key", "api_key_env"], absent=["run"]),
    "eval api key with set": Case(lambda tmp: ["eval", str(eval_cfg(tmp)), "--set", "models.0.options.api_key=sk-1"],
                                  ["--set", "models.0.options.api_key"], absent=["run"]),
    "eval broken flow set": Case(lambda tmp: ["eval", str(eval_cfg(tmp)), "--set", "decoding={max_new_tokens: 3"], ["--set", "not valid YAML"]),
    "eval set into a list out of range": Case(lambda tmp: ["eval", str(eval_cfg(tmp)), "--set", "models.5.spec=x"], ["--set", "'5'"]),
    "eval out is a file": Case(lambda tmp: ["eval", str(eval_cfg(tmp, out=str(tmp / "afile")))], ["afile"],
                               setup=lambda tmp, mp: (tmp / "afile").write_text("x")),
    "eval missing model dir": Case(lambda tmp: ["eval", str(eval_cfg(tmp, models=["hf:./no/such/ckpt"]))], ["no such model directory: ./no/such/ckpt"]),
    # derta data build
    "data missing triples": Case(lambda tmp: ["data", "build", "--recipe", "derta", "--triples", str(tmp / "none.jsonl"), "--out", str(tmp / "data.jsonl")],
                                 ["none.jsonl"]),
    "data not utf-8": Case(lambda tmp: ["data", "build", "--recipe", "derta", "--triples", str(tmp / "t.jsonl"), "--out", str(tmp / "data.jsonl")],
                           ["t.jsonl:1", "not UTF-8"], setup=lambda tmp, mp: (tmp / "t.jsonl").write_bytes(b'{"query": "\xff"}\n')),
    "data non-string field": Case(lambda tmp: ["data", "build", "--recipe", "derta", "--triples", str(jsonl(tmp / "t.jsonl", [{**TRIPLE, "query": 5}])),
                                               "--out", str(tmp / "data.jsonl")], ["t.jsonl:1", "query"]),
    # derta train and report
    "train missing config": Case(lambda tmp: ["train", "--config", str(tmp / "none.yaml")], ["none.yaml"]),
    "train secret in config": Case(lambda tmp: ["train", "--config", str(tmp / "t.yaml")], ["t.yaml", "hf_token", "environment variable"],
                                   setup=lambda tmp, mp: (tmp / "t.yaml").write_text("hf_token: abc\n")),
    "report missing run dir": Case(lambda tmp: ["report", str(tmp / "norun")], ["norun"]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line_exit_two(name, tmp_path, monkeypatch, capsys):
    case = CASES[name]
    monkeypatch.chdir(tmp_path)
    try:
        if case.setup:
            case.setup(tmp_path, monkeypatch)
        code = main(case.argv(tmp_path))
    finally:
        while _SERVERS:
            _SERVERS.pop().close()
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert code == 2, (name, err)
    assert "Traceback" not in captured.err + captured.out
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("derta "), err
    assert "error:" in lines[0]
    for want in case.names:
        assert want in lines[0], (want, lines[0])
    for out in case.absent:
        assert not (tmp_path / out).exists(), out
    assert not list(tmp_path.rglob("*.tmp"))


def test_the_battery_is_large():
    assert len(CASES) >= 30


def test_verbose_adds_the_traceback(tmp_path, capsys):
    src = jsonl(tmp_path / "r.jsonl", [{**GOOD, "response": 7}])
    assert main(["-v", "judge", str(src), "--out", str(tmp_path / "j.jsonl")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("derta judge: error:")
