"""Prompt templates: the exact text before the assistant's content (``prompt``), the separator that
belongs to the response (``lead``) and the text that closes the turn (``end``), on a tokenizer built
here and on the shipped SmolLM2 tokenizer."""

from __future__ import annotations

import pytest

from derta.records import Message
from derta.templates import PLAIN_TEMPLATES, Turn, default_template, get_template

USER = [Message("user", "What is 2 plus 3?")]
SYSTEM = [Message("system", "Answer briefly."), Message("user", "What is 2 plus 3?")]
PREFILL = "Sure, here is how"


def prefilled(turn: Turn, prefill: str = PREFILL) -> str:
    """The text the model continues under a prefill attack (``backends.hf.render_prompt``)."""
    return turn.prompt + turn.lead + prefill


@pytest.fixture(scope="module")
def smollm2():
    """The shipped SmolLM2-135M-Instruct tokenizer (its HF folder, converted once and cached)."""
    from transformers import AutoTokenizer

    from derta.gguf import shipped_smollm2, to_hf_folder

    try:
        folder = to_hf_folder(shipped_smollm2())  # the cached folder under ~/.cache/derta/models when present
    except (FileNotFoundError, ImportError) as e:
        pytest.skip(f"shipped SmolLM2 unavailable: {e}")
    return AutoTokenizer.from_pretrained(folder)


@pytest.fixture()
def toy(bpe_tokenizer):
    """The toy world's tokenizer, a copy each test may change."""
    import copy

    return copy.deepcopy(bpe_tokenizer)


# ---- the tokenizer built here (chat template: "<|role|>\n{content}<|end|>\n") -----------------

def test_chat_user_turn(toy):
    turn = get_template("chat")(USER, toy)
    assert turn == Turn(prompt="<|user|>\nWhat is 2 plus 3?<|end|>\n<|assistant|>\n", lead="", end="<|end|>\n", add_bos=False)


def test_chat_system_message(toy):
    turn = get_template("chat")(SYSTEM, toy)
    assert turn.prompt == "<|system|>\nAnswer briefly.<|end|>\n<|user|>\nWhat is 2 plus 3?<|end|>\n<|assistant|>\n"
    assert turn.end == "<|end|>\n"


def test_chat_prefill(toy):
    assert prefilled(get_template("chat")(USER, toy)) == "<|user|>\nWhat is 2 plus 3?<|end|>\n<|assistant|>\nSure, here is how"


def test_chat_turn_reassembles_the_full_conversation(toy):
    turn = get_template("chat")(USER, toy)
    full = toy.apply_chat_template([*(m.to_dict() for m in USER), {"role": "assistant", "content": "5."}], tokenize=False)
    assert turn.prompt + turn.lead + "5." + turn.end == full


def test_reference_template(toy):
    assert get_template("reference")(USER, toy) == Turn(prompt="[INST] What is 2 plus 3? [\\INST]", lead=" ", end="<|end|>", add_bos=True)
    assert get_template("reference")(SYSTEM, toy).prompt == "[INST] Answer briefly.\n\nWhat is 2 plus 3? [\\INST]"
    assert prefilled(get_template("reference")(USER, toy)) == "[INST] What is 2 plus 3? [\\INST] Sure, here is how"


def test_plain_template(toy):
    assert get_template("plain")(USER, toy) == Turn(prompt="User: What is 2 plus 3?\nAssistant:", lead=" ", end="<|end|>", add_bos=True)
    assert get_template("plain")(SYSTEM, toy).prompt == "Answer briefly.\n\nUser: What is 2 plus 3?\nAssistant:"
    assert prefilled(get_template("plain")(USER, toy)) == "User: What is 2 plus 3?\nAssistant: Sure, here is how"


def test_raw_template_is_the_user_text(toy):
    assert get_template("raw")(USER, toy) == Turn(prompt="What is 2 plus 3?", lead=" ", end="<|end|>", add_bos=True)
    assert get_template("raw")(SYSTEM, toy).prompt == "What is 2 plus 3?"  # no template: the system text is not part of a document


@pytest.mark.parametrize("name", sorted(PLAIN_TEMPLATES))
def test_plain_templates_take_exactly_one_user_message(toy, name):
    two = [Message("user", "a"), Message("assistant", "b"), Message("user", "c")]
    with pytest.raises(ValueError, match="exactly one user message, got 2"):
        get_template(name)(two, toy)
    with pytest.raises(ValueError, match="exactly one user message, got 0"):
        get_template(name)([Message("system", "s")], toy)


@pytest.mark.parametrize("name", sorted(PLAIN_TEMPLATES))
def test_plain_templates_end_with_the_eos_token(toy, name):
    toy.eos_token = "<|pad|>"
    assert get_template(name)(USER, toy).end == "<|pad|>"


def test_unknown_template_names_the_choices():
    with pytest.raises(ValueError, match=r"unknown template 'alpaca'; choose 'chat', 'reference', 'plain', 'raw'"):
        get_template("alpaca")


def test_default_template(toy):
    assert default_template(toy) == "chat"
    toy.chat_template = None
    assert default_template(toy) == "reference"


def test_chat_without_a_chat_template_is_an_error(toy):
    toy.chat_template = None
    with pytest.raises(ValueError, match=r"^the tokenizer's chat template cannot render a user conversation: ValueError: .*chat_template is not set"):
        get_template("chat")(USER, toy)


def test_chat_template_that_rejects_every_form_names_its_complaint(toy):
    toy.chat_template = "{{ raise_exception('only one role here') }}"
    with pytest.raises(ValueError, match=r"cannot render a system/user conversation: .*only one role here"):
        get_template("chat")(SYSTEM, toy)


def test_chat_template_without_a_system_role_gets_it_in_the_first_user_turn(toy):
    toy.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('no system role') }}{% endif %}"
        "[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}[assistant] {% endif %}"
    )
    turn = get_template("chat")(SYSTEM, toy)
    assert turn.prompt == "[user] Answer briefly.\n\nWhat is 2 plus 3?\n[assistant] "
    assert turn.end == "\n"


def test_chat_template_with_list_of_parts_content(toy):
    # multimodal templates iterate over [{"type": "text", "text": ...}]
    toy.chat_template = (
        "{% for m in messages %}<{{ m['role'] }}>{% for p in m['content'] %}{{ p['text'] }}{% endfor %}</s>{% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}"
    )
    turn = get_template("chat")(USER, toy)
    assert turn.prompt == "<user>What is 2 plus 3?</s><assistant>"
    assert turn.end == "</s>"


def test_chat_template_that_enforces_alternation_ends_with_eos(toy):
    # one more assistant turn is refused: the turn then closes with the end-of-text token
    toy.chat_template = (
        "{% if messages[-1]['role'] == 'assistant' %}{{ raise_exception('Conversation roles must alternate') }}{% endif %}"
        "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}<assistant>"
    )
    assert get_template("chat")(USER, toy) == Turn(prompt="<user>What is 2 plus 3?<assistant>", lead="", end="<|end|>", add_bos=False)


# ---- the real SmolLM2 tokenizer (ChatML, with a default system prompt) -----------------------

SMOL_SYSTEM = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"


def test_smollm2_chat_user_turn(smollm2):
    turn = get_template("chat")(USER, smollm2)
    assert turn == Turn(prompt=SMOL_SYSTEM + "<|im_start|>user\nWhat is 2 plus 3?<|im_end|>\n<|im_start|>assistant\n",
                        lead="", end="<|im_end|>\n", add_bos=False)
    assert default_template(smollm2) == "chat"


def test_smollm2_chat_system_message_replaces_the_default(smollm2):
    turn = get_template("chat")(SYSTEM, smollm2)
    assert turn.prompt == "<|im_start|>system\nAnswer briefly.<|im_end|>\n<|im_start|>user\nWhat is 2 plus 3?<|im_end|>\n<|im_start|>assistant\n"


def test_smollm2_chat_prefill(smollm2):
    assert prefilled(get_template("chat")(USER, smollm2)) == (
        SMOL_SYSTEM + "<|im_start|>user\nWhat is 2 plus 3?<|im_end|>\n<|im_start|>assistant\nSure, here is how")


def test_smollm2_chat_turn_reassembles_the_full_conversation(smollm2):
    turn = get_template("chat")(SYSTEM, smollm2)
    full = smollm2.apply_chat_template([*(m.to_dict() for m in SYSTEM), {"role": "assistant", "content": "5."}], tokenize=False)
    assert turn.prompt + "5." + turn.end == full


def test_smollm2_plain_templates(smollm2):
    assert get_template("reference")(USER, smollm2) == Turn(prompt="[INST] What is 2 plus 3? [\\INST]", lead=" ", end="<|im_end|>", add_bos=True)
    assert get_template("plain")(SYSTEM, smollm2) == Turn(prompt="Answer briefly.\n\nUser: What is 2 plus 3?\nAssistant:", lead=" ",
                                                          end="<|im_end|>", add_bos=True)
    assert prefilled(get_template("plain")(USER, smollm2)) == "User: What is 2 plus 3?\nAssistant: Sure, here is how"
