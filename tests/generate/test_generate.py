"""Resumable generation logs: nothing lost, nothing duplicated, whatever stops the run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from derta.backends import Backend, Completion, Decoding, ScriptedBackend, load_backend
from derta.generate import ERRORS_SUFFIX, META_SUFFIX, decoding_id, read_generations, run_generation
from derta.io import write_jsonl
from derta.records import AttackPrompt, Message

REPO = Path(__file__).resolve().parents[2]


def make_prompts(n: int, attack: str = "direct") -> list[AttackPrompt]:
    return [AttackPrompt(id=f"q{i}", question=f"question {i}", attack=attack, messages=[Message("user", f"question {i}")])
            for i in range(n)]


def answer(p: AttackPrompt) -> str:
    return f"answer to {p.question}"


def lines(path: Path) -> list[dict]:
    text = path.read_text()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def assert_complete(path: Path, prompts: list[AttackPrompt], model: str = "scripted") -> None:
    rows = [r for r in lines(path) if r["model"] == model]
    ids = Counter((r["attack"], r["prompt_id"]) for r in rows)
    assert set(ids) == {(p.attack, p.id) for p in prompts}  # nothing lost
    assert max(ids.values()) == 1  # nothing duplicated
    assert all(r["response"] == f"answer to {r['question']}" for r in rows)


def test_resume_after_a_crash_generates_only_what_is_missing(tmp_path):
    prompts, out = make_prompts(9), tmp_path / "gen.jsonl"
    seen = []

    def crashes_after_5(p):
        if len(seen) == 5:
            raise RuntimeError("out of memory")
        seen.append(p.id)
        return answer(p)

    with pytest.raises(RuntimeError, match="out of memory"):
        run_generation(ScriptedBackend(crashes_after_5), prompts, out, decoding=Decoding(max_new_tokens=8), batch_size=2)
    assert [r["prompt_id"] for r in lines(out)] == ["q0", "q1", "q2", "q3"]  # two whole batches kept
    meta = json.loads(Path(str(out) + META_SUFFIX).read_text())
    assert meta["runs"][-1]["status"] == "interrupted"

    backend = ScriptedBackend(answer)
    got = run_generation(backend, prompts, out, decoding=Decoding(max_new_tokens=8), batch_size=2)
    assert [i for call in backend.calls for i in call] == ["q4", "q5", "q6", "q7", "q8"]
    assert [g.prompt_id for g in got] == [p.id for p in prompts]  # old + new, in prompt order
    assert_complete(out, prompts)
    runs = json.loads(Path(str(out) + META_SUFFIX).read_text())["runs"]
    assert [(r["status"], r["n_reused"], r["n_generated"]) for r in runs] == [("interrupted", 0, 4), ("complete", 4, 5)]
    assert runs[-1]["environment"]["python"] and "torch" in runs[-1]["environment"]
    assert runs[-1]["seed"] == 0 and runs[-1]["decoding"]["max_new_tokens"] == 8


CHILD = """
import sys, time
from derta.backends import ScriptedBackend
from derta.generate import run_generation
from derta.io import read_jsonl
from derta.records import AttackPrompt

prompts = [AttackPrompt.from_dict(r) for r in read_jsonl(sys.argv[1])]
def slow(p):
    time.sleep(0.05)
    return f"answer to {p.question}"
run_generation(ScriptedBackend(slow), prompts, sys.argv[2], batch_size=1)
"""


def test_resume_after_the_process_is_killed(tmp_path):
    prompts, out = make_prompts(40), tmp_path / "gen.jsonl"
    write_jsonl(tmp_path / "prompts.jsonl", [p.to_dict() for p in prompts])
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path / "prompts.jsonl"), str(out)], env=env)
    try:
        deadline = time.monotonic() + 30
        while not (out.exists() and out.read_text().count("\n") >= 3) and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait()
    n_before = out.read_text().count("\n")
    assert 3 <= n_before < len(prompts)
    with out.open("a") as f:  # and a line torn in the middle, as a crash during a write leaves it
        f.write('{"prompt_id": "q39", "attack": "dir')
    backend = ScriptedBackend(answer)
    got = run_generation(backend, prompts, out)
    assert sum(len(c) for c in backend.calls) == len(prompts) - n_before
    assert [g.prompt_id for g in got] == [p.id for p in prompts]
    assert_complete(out, prompts)


def test_torn_last_line_is_repaired(tmp_path):
    prompts, out = make_prompts(4), tmp_path / "gen.jsonl"
    run_generation(ScriptedBackend(answer), prompts[:3], out)
    good = out.read_text()
    out.write_text(good + good.splitlines()[0][:25])  # a half-written copy of a record
    assert len(read_generations(out)) == 3  # a reader skips the incomplete line
    run_generation(ScriptedBackend(answer), prompts, out)
    assert out.read_text().startswith(good)
    assert_complete(out, prompts)


def test_resume_key_is_model_attack_prompt_and_decoding(tmp_path):
    out = tmp_path / "gen.jsonl"
    direct, prefill = make_prompts(3), make_prompts(3, attack="prefill")
    run_generation(ScriptedBackend(answer), direct, out, decoding=Decoding(max_new_tokens=8))

    same = ScriptedBackend(answer)
    run_generation(same, direct, out, decoding=Decoding(max_new_tokens=8))
    assert same.calls == []  # everything reused
    for change in (dict(prompts=prefill), dict(model_name="other"), dict(decoding=Decoding(max_new_tokens=8, seed=1))):
        backend = ScriptedBackend(answer)
        kw = {"prompts": direct, "decoding": Decoding(max_new_tokens=8), **change}
        got = run_generation(backend, out_path=out, **kw)
        assert sum(len(c) for c in backend.calls) == 3, change  # a new key: generated anew
        assert len(got) == 3
    assert len(lines(out)) == 12
    assert decoding_id(Decoding(stop=["x"])) == decoding_id(Decoding(stop=("x",)).to_dict())


def test_a_changed_prompt_under_a_logged_id_is_an_error(tmp_path):
    out = tmp_path / "gen.jsonl"
    run_generation(ScriptedBackend(answer), make_prompts(2), out)
    changed = make_prompts(2)
    changed[1].prefill = "Sure,"
    with pytest.raises(ValueError, match="differs from the one logged"):
        run_generation(ScriptedBackend(answer), changed, out)


def test_duplicate_prompt_ids_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="appears twice"):
        run_generation(ScriptedBackend(answer), make_prompts(2) + make_prompts(1), tmp_path / "gen.jsonl")


def test_failed_requests_go_to_the_errors_log_and_are_retried(tmp_path):
    prompts, out = make_prompts(3), tmp_path / "gen.jsonl"

    def flaky(p):
        return Completion(text="", finish_reason="error", error="HTTP 500") if p.id == "q1" else answer(p)

    got = run_generation(ScriptedBackend(flaky), prompts, out)
    assert [g.prompt_id for g in got] == ["q0", "q2"]  # a failure is never a response
    assert [r["prompt_id"] for r in lines(out)] == ["q0", "q2"]
    [err] = lines(Path(str(out) + ERRORS_SUFFIX))
    assert err["prompt_id"] == "q1" and err["error"] == "HTTP 500"
    assert json.loads(Path(str(out) + META_SUFFIX).read_text())["runs"][-1]["status"] == "incomplete"

    retry = ScriptedBackend(answer)
    got = run_generation(retry, prompts, out)
    assert retry.calls == [["q1"]] and [g.prompt_id for g in got] == ["q0", "q1", "q2"]
    assert_complete(out, prompts)


@pytest.fixture()
def one_thread():
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices on a shared CPU
    yield
    torch.set_num_threads(n)


def test_records_carry_prompt_decoding_and_token_counts(chat_model, one_thread, tmp_path):
    from derta.backends.hf import HFBackend

    q, ans = chat_model.chats[0]
    prompts = [AttackPrompt(id="a", question=q, attack="direct", messages=[Message("user", q)]),
               AttackPrompt(id="b", question=q, attack="prefill", messages=[Message("user", q)], prefill="2 plus")]
    backend = HFBackend(chat_model.model, chat_model.tokenizer, progress=False)
    decoding = Decoding(max_new_tokens=20)
    got = run_generation(backend, prompts, tmp_path / "gen.jsonl", model_name="tiny", decoding=decoding)
    assert [g.response for g in got] == [ans, ans.removeprefix("2 plus")]
    assert read_generations(tmp_path / "gen.jsonl") == got
    for g, p in zip(got, prompts):
        assert g.model == "tiny" and g.question == q and g.prompt == p.to_dict() and g.decoding == decoding.to_dict()
        ids = chat_model.tokenizer(g.response, add_special_tokens=False)["input_ids"]
        assert g.metadata["token_ids"] == ids and g.metadata["n_generated_tokens"] == len(ids)
        assert g.metadata["finish_reason"] == "stop" and g.seconds >= 0


def test_scripted_backend_from_the_registry(tmp_path):
    write_jsonl(tmp_path / "canned.jsonl", [{"prompt_id": "q0", "response": "canned. STOP here"}])
    backend = load_backend(f"scripted:{tmp_path / 'canned.jsonl'}", default="fallback")
    assert isinstance(backend, Backend)
    assert backend.generate(make_prompts(2), Decoding(stop=(" STOP",))) == ["canned.", "fallback"]
    with pytest.raises(KeyError, match="no output for prompt 'q1'"):
        load_backend("scripted", outputs={"q0": "x"}).generate(make_prompts(2))
