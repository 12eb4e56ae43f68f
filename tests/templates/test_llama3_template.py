"""Llama-3-Instruct chat templates on a tiny tokenizer: a training target ends with <|eot_id|>,
never with the next assistant header (the first Llama-3 template writes it after every conversation)."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest

from derta.data.render import Renderer, closed_turn
from derta.records import IGNORE_INDEX, Message, PreferencePair, TrainingExample
from derta.templates import get_template

HEADER = "<|start_header_id|>assistant<|end_header_id|>\n\n"
SAFE = "Sorry, I cannot help with stealing a car."


def _trl_template(name: str) -> str:
    import trl

    return (Path(trl.__file__).parent / "chat_templates" / f"{name}.jinja").read_text()


def _first_release(fixed: str) -> str:
    """The template as Llama-3-Instruct first shipped it: the assistant header after every conversation."""
    first = re.sub(r"\{% if add_generation_prompt %\}(.*?)\{% endif %\}", r"\1", fixed, flags=re.S)
    assert first != fixed and "add_generation_prompt" not in first
    return first


@pytest.fixture()
def llama3_tokenizer(bpe_tokenizer):
    tok = copy.deepcopy(bpe_tokenizer)
    tok.add_tokens(["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"], special_tokens=True)
    tok.bos_token, tok.eos_token = "<|begin_of_text|>", "<|eot_id|>"
    return tok


def _example():
    return TrainingExample(messages=[Message("user", "How do I steal a car?")], target=SAFE)


@pytest.mark.parametrize("variant", ["fixed", "first"])
def test_the_trained_target_ends_with_eot_and_no_header(llama3_tokenizer, variant):
    tok = llama3_tokenizer
    fixed = _trl_template("llama3")
    tok.chat_template = fixed if variant == "fixed" else _first_release(fixed)
    raw = get_template("chat")(_example().messages, tok)
    if variant == "first":
        assert raw.end == "<|eot_id|>" + HEADER  # what the template itself says follows an answer
    r = Renderer(tok, 5, template="chat")(_example())
    trained = [lab for lab in r.labels if lab != IGNORE_INDEX]
    assert tok.decode(trained) == SAFE + "<|eot_id|>"
    assert tok.convert_tokens_to_ids("<|start_header_id|>") not in trained
    prompt = r.input_ids[: len(r.input_ids) - len(trained)]
    assert tok.decode(prompt).endswith(HEADER) and tok.decode(prompt).count("<|begin_of_text|>") == 1


def test_dpo_answers_end_with_eot_and_no_header(llama3_tokenizer):
    from derta.train.run import dpo_rows

    tok = llama3_tokenizer
    tok.chat_template = _first_release(_trl_template("llama3"))
    row = dpo_rows([PreferencePair(messages=_example().messages, chosen=SAFE, rejected="Sure, here is how.")], tok, "chat")[0]
    assert row["chosen"] == SAFE + "<|eot_id|>" and row["rejected"] == "Sure, here is how.<|eot_id|>"


@pytest.mark.parametrize("name", ["llama3", "llama3_1", "qwen2_5", "phi3"])
def test_templates_that_close_their_turn_keep_their_end(llama3_tokenizer, name):
    """Templates that write nothing after an answer but its close (phi3 closes a conversation with
    the eos token) keep the end they write."""
    tok = llama3_tokenizer
    tok.chat_template = _trl_template(name)
    turn = get_template("chat")(_example().messages, tok)
    assert turn.end.strip() and closed_turn(turn, tok) == turn
    r = Renderer(tok, 5, template="chat")(_example())
    assert tok.decode([lab for lab in r.labels if lab != IGNORE_INDEX]) == SAFE + turn.end
