"""Backends say what is wrong with a model before generating: a missing local path, a tokenizer
without a chat template, a model the server does not serve."""

from __future__ import annotations

import copy
import json

import pytest

from derta.backends import load_backend
from derta.backends.hf import HFBackend, looks_like_path, render_prompt, trained_template
from derta.records import AttackPrompt, Message
from derta.templates import NoChatTemplate, generation_template

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("arg, path", [("./out/x", True), ("../m", True), ("/abs/m", True), ("~/m", True),
                                       ("org/name", False), ("gpt2", False)])
def test_looks_like_path(arg, path):
    assert looks_like_path(arg) is path


@pytest.mark.parametrize("spec", ["hf:./out/no-such-model", "hf:/no/such/dir"])
def test_a_missing_model_directory_is_named(spec):
    with pytest.raises(ValueError, match=f"no such model directory: {spec[3:]}$"):
        load_backend(spec)


def test_vllm_names_a_missing_model_directory_before_importing_vllm():
    from derta.backends.vllm import VLLMBackend

    with pytest.raises(ValueError, match="no such model directory: ./out/none"):
        VLLMBackend("./out/none")


@pytest.fixture()
def no_template_tok(bpe_tokenizer):
    tok = copy.deepcopy(bpe_tokenizer)
    tok.chat_template = None
    return tok


def test_no_chat_template_is_an_error_unless_a_template_is_named(tiny_model, no_template_tok):
    with pytest.raises(NoChatTemplate, match="no chat template.*template: reference"):
        HFBackend(tiny_model, no_template_tok, progress=False)
    with pytest.raises(NoChatTemplate, match="template 'chat' was asked for"):
        HFBackend(tiny_model, no_template_tok, template="chat", progress=False)
    backend = HFBackend(tiny_model, no_template_tok, template="reference", progress=False)
    p = AttackPrompt(id="1", question="q", attack="direct", messages=[Message("user", "q")])
    assert backend.template == "reference" and backend.render(p).ids == render_prompt(p, no_template_tok, "reference").ids
    with pytest.raises(NoChatTemplate):
        render_prompt(p, no_template_tok)


def test_a_trained_checkpoint_brings_its_template(tmp_path, no_template_tok, bpe_tokenizer):
    assert trained_template(str(tmp_path), no_template_tok) is None
    (tmp_path / "derta_run.json").write_text(json.dumps({"config": {"template": "auto"}}))
    assert trained_template(str(tmp_path), no_template_tok) == "reference"  # what training's "auto" chose
    assert trained_template(str(tmp_path), bpe_tokenizer) == "chat"
    (tmp_path / "derta_run.json").write_text(json.dumps({"config": {"template": "plain"}}))
    assert trained_template(str(tmp_path), bpe_tokenizer) == "plain"
    assert generation_template(bpe_tokenizer, None) == "chat"


def test_a_saved_model_without_chat_template_loads_with_its_trained_template(tmp_path, tiny_model, no_template_tok):
    tiny_model.save_pretrained(tmp_path)
    no_template_tok.save_pretrained(tmp_path)
    with pytest.raises(NoChatTemplate):
        load_backend(f"hf:{tmp_path}", progress=False)
    (tmp_path / "derta_run.json").write_text(json.dumps({"config": {"template": "auto"}}))
    assert load_backend(f"hf:{tmp_path}", progress=False).template == "reference"


# -- the served model ------------------------------------------------------------------------------

@pytest.fixture()
def server(tiny_model, bpe_tokenizer):
    pytest.importorskip("openai")
    from derta.serve import make_server

    with make_server(tiny_model, bpe_tokenizer, "127.0.0.1", 0, model_name="tiny").start() as srv:
        yield srv


def test_the_server_refuses_a_model_it_does_not_serve(server):
    import openai

    api = openai.OpenAI(api_key="x", base_url=server.url, max_retries=0)
    with pytest.raises(openai.NotFoundError) as e:
        api.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "Hi"}], max_tokens=2)
    assert e.value.code == "model_not_found" and "`gpt-4o` does not exist" in str(e.value)
    assert api.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hi"}], max_tokens=2).model == "tiny"
    assert server.stats["completed"] == 1


def test_the_client_checks_the_served_models_once_at_start(server):
    with pytest.raises(ValueError, match="does not serve model 'gpt-4o'; it serves 'tiny'"):
        load_backend("openai:gpt-4o", base_url=server.url, progress=False)
    assert load_backend("openai:tiny", base_url=server.url, progress=False).model == "tiny"
    load_backend("openai:gpt-4o", base_url=server.url, progress=False, check_model=False)  # told not to check


def test_an_asked_for_check_of_an_unreachable_server_is_an_error():
    pytest.importorskip("openai")
    with pytest.raises(ValueError, match="cannot list the models"):
        load_backend("openai:m", base_url="http://127.0.0.1:9/v1", check_model=True, progress=False)
    load_backend("openai:m", base_url="http://127.0.0.1:9/v1", progress=False)  # not asked: the first request reports it
