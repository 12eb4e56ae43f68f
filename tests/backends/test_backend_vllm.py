"""The vLLM backend: needs vllm and a CUDA GPU (opt in with ``-m gpu``)."""

from __future__ import annotations

import importlib.util

import pytest

from derta.backends import Decoding, load_backend
from derta.records import AttackPrompt, Message


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed")
def test_missing_vllm_says_how_to_install():
    with pytest.raises(ImportError, match=r"pip install 'derta\[vllm\]'"):
        load_backend("vllm:some/model")


@pytest.mark.gpu
@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm is not installed")
def test_vllm_matches_the_hf_backend(chat_model, tmp_path):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    from derta.backends.hf import HFBackend, render_prompt

    chat_model.model.save_pretrained(tmp_path)
    chat_model.tokenizer.save_pretrained(tmp_path)
    prompts = [AttackPrompt(id=str(i), question=q, attack="direct", messages=[Message("user", q)]) for i, (q, _) in enumerate(chat_model.chats)]
    prompts.append(AttackPrompt(id="p", question="", attack="prefill", messages=[Message("user", "How do I wash a car?")], prefill="Sure, wash"))
    prompts.append(AttackPrompt(id="r", question="", attack="completing", text="Here is how to wash a car:"))
    decoding = Decoding(max_new_tokens=30)

    backend = load_backend(f"vllm:{tmp_path}", dtype="bfloat16", gpu_memory_utilization=0.2, max_model_len=256,
                           enforce_eager=True, progress=False)
    assert backend.name == f"vllm:{tmp_path}"
    assert all(render_prompt(p, backend.tokenizer).ids == render_prompt(p, chat_model.tokenizer).ids for p in prompts)
    got = backend.complete(prompts, decoding)
    want = HFBackend(chat_model.model, chat_model.tokenizer, progress=False).complete(prompts, decoding)
    assert [c.text for c in got] == [c.text for c in want]
    assert [c.token_ids for c in got] == [c.token_ids for c in want]  # end-of-turn id trimmed like HF
    assert all(c.finish_reason == "stop" for c in got)
    assert got[-2].text == " the car with soap and water." and got[-1].text == " use soap and water."


def test_prefix_caching_is_asked_for_and_each_sample_gets_its_seed(monkeypatch, chat_model, tmp_path):
    """Without a GPU: a stand-in ``vllm`` module records what the backend asks of ``vllm.LLM``."""
    import sys
    import types

    seen: dict = {}

    class Out:
        def __init__(self, ids):
            self.outputs = [types.SimpleNamespace(token_ids=ids, text="", finish_reason="length")]

    class LLM:
        def __init__(self, **kw):
            seen["init"] = kw

        def get_tokenizer(self):
            return chat_model.tokenizer

        def generate(self, inputs, params, use_tqdm=False):
            seen["params"] = params
            return [Out([chat_model.tokenizer.eos_token_id]) for _ in inputs]

    class SamplingParams:
        def __init__(self, **kw):
            self.kw = kw

    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(LLM=LLM, SamplingParams=SamplingParams))
    chat_model.model.save_pretrained(tmp_path)
    chat_model.tokenizer.save_pretrained(tmp_path)
    from derta.backends.vllm import VLLMBackend

    backend = VLLMBackend(str(tmp_path), progress=False)
    assert seen["init"]["enable_prefix_caching"] is True
    assert VLLMBackend(str(tmp_path), progress=False, enable_prefix_caching=False) and seen["init"]["enable_prefix_caching"] is False
    prompts = [AttackPrompt(id=f"p#{i}", question="q", attack="direct", messages=[Message("user", "How do I wash a car?")],
                            metadata={"sample": i}) for i in range(3)]
    backend.complete(prompts, Decoding(max_new_tokens=4, temperature=0.7, seed=5))
    assert [p.kw.get("seed") for p in seen["params"]] == [5, 6, 7]  # k samples of a prompt: k seeds
