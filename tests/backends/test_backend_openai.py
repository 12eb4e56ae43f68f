"""The OpenAI backend over real HTTP: ``derta.serve`` in a thread, the real ``openai`` client."""

from __future__ import annotations

import time
from contextlib import contextmanager

import pytest

pytest.importorskip("openai")

from derta.backends import BackendError, Decoding, load_backend  # noqa: E402
from derta.backends.hf import HFBackend  # noqa: E402
from derta.records import AttackPrompt, Message  # noqa: E402
from derta.serve import make_server  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@contextmanager
def served(chat_model, **opts):
    server = make_server(chat_model.model, chat_model.tokenizer, "127.0.0.1", 0, model_name="tiny", **opts).start()
    try:
        yield server
    finally:
        server.close()


def client(server, **kw):
    kw = {"backoff": 0.01, "progress": False, **kw}
    return load_backend("openai:tiny", base_url=server.url, **kw)


def chat(pid: str, question: str, prefill: str = "") -> AttackPrompt:
    return AttackPrompt(id=pid, question=question, attack="test", messages=[Message("user", question)], prefill=prefill)


def prompts_of(chat_model) -> list[AttackPrompt]:
    out = [chat(str(i), q) for i, (q, _) in enumerate(chat_model.chats)]
    out.append(chat("prefill", "How do I wash a car?", prefill="Sure, wash"))
    out.append(AttackPrompt(id="raw", question="", attack="completing", text="Here is how to wash a car:"))
    out.append(chat("unseen", "What is the capital of Spain?"))
    return out


def test_outputs_equal_the_hf_backend(chat_model):
    prompts = prompts_of(chat_model)
    decoding = Decoding(max_new_tokens=24)
    local = HFBackend(chat_model.model, chat_model.tokenizer, progress=False).complete(prompts, decoding)
    with served(chat_model) as server:
        remote = client(server, max_concurrency=3).complete(prompts, decoding)
    assert [c.text for c in remote] == [c.text for c in local]
    assert [c.n_tokens for c in remote] == [c.n_tokens for c in local]
    assert [c.finish_reason for c in remote] == [c.finish_reason for c in local]
    assert remote[len(chat_model.chats)].text == " the car with soap and water."  # prefill continued, not repeated
    assert remote[len(chat_model.chats) + 1].text == " use soap and water."  # raw completion


def test_concurrency_limit_is_respected_and_order_kept(chat_model):
    prompts = [chat(str(i), q) for i, (q, _) in enumerate(chat_model.chats)] * 2
    prompts = [AttackPrompt(**{**p.__dict__, "id": f"{p.id}-{k}"}) for k, p in enumerate(prompts)]
    with served(chat_model, delay=0.15) as server:
        out = client(server, max_concurrency=2).generate(prompts, Decoding(max_new_tokens=20))
        assert server.stats["max_in_flight"] == 2
        assert server.stats["completed"] == len(prompts)
    assert out == [a for _, a in chat_model.chats] * 2


def test_retries_after_429_and_5xx(chat_model):
    q, answer = chat_model.chats[0]
    with served(chat_model, fail=[429, 500, 503]) as server:
        assert client(server, max_retries=3).generate([chat("a", q)], Decoding(max_new_tokens=20)) == [answer]
        assert server.stats["requests"] == 4 and server.stats["failures_injected"] == 3
    with served(chat_model, fail=[429, 429, 429]) as server:
        with pytest.raises(BackendError, match=r"prompt 'a'.*after 3 tries: HTTP 429"):
            client(server, max_retries=2).generate([chat("a", q)], Decoding(max_new_tokens=20))
        assert server.stats["requests"] == 3


def test_client_errors_are_not_retried(chat_model):
    with served(chat_model, fail=[400]) as server:
        with pytest.raises(BackendError, match=r"not retried.*HTTP 400"):
            client(server, max_retries=5).generate([chat("a", "What is 2 plus 3?")], Decoding(max_new_tokens=5))
        assert server.stats["requests"] == 1


def test_timeout_raises_or_is_recorded(chat_model):
    with served(chat_model, delay=2.0) as server:
        t0 = time.perf_counter()
        with pytest.raises(BackendError, match=r"prompt 'slow'.*after 2 tries: timed out"):
            client(server, timeout=0.25, max_retries=1).generate([chat("slow", "Hi")], Decoding(max_new_tokens=5))
        assert time.perf_counter() - t0 < 1.5  # gave up on its own timeout, not the server's delay
        [c] = client(server, timeout=0.25, max_retries=0, on_error="record").complete([chat("slow", "Hi")], Decoding(max_new_tokens=5))
    assert c.finish_reason == "error" and c.text == "" and "timed out" in c.error


def test_api_key_comes_from_the_named_environment_variable(chat_model, monkeypatch):
    q, answer = chat_model.chats[1]
    with served(chat_model, api_key="s3cret") as server:
        monkeypatch.setenv("DERTA_TEST_KEY", "s3cret")
        assert client(server, api_key_env="DERTA_TEST_KEY").generate([chat("a", q)], Decoding(max_new_tokens=20)) == [answer]
        monkeypatch.delenv("DERTA_TEST_KEY")
        with pytest.raises(BackendError, match="HTTP 401"):
            client(server, api_key_env="DERTA_TEST_KEY").generate([chat("a", q)], Decoding(max_new_tokens=20))
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ValueError, match="OPENAI_API_KEY"):
        load_backend("openai:gpt-x")  # a hosted API without a key


def test_models_endpoint_and_bad_requests(chat_model):
    import openai

    with served(chat_model) as server:
        api = openai.OpenAI(api_key="x", base_url=server.url, max_retries=0)
        assert [m.id for m in api.models.list()] == ["tiny"]
        with pytest.raises(openai.BadRequestError, match="final assistant message"):
            api.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hi"}],
                                        extra_body={"continue_final_message": True})
