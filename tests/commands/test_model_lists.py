"""``models:`` entries read the same way by ``derta eval`` and ``derta deception run``."""

from __future__ import annotations

import pytest

from derta.backends.spec import ModelListError, parse_models
from derta.config import ConfigError

ENTRIES = [
    "hf:./out/a",
    "b=hf:./out/b",
    "hf:/runs/lr=1e-4/final",  # a "=" inside a path: no NAME= before it
    {"name": "c", "spec": "openai:m", "args": {"base_url": "http://127.0.0.1:8000/v1"}},
    {"name": "d", "spec": "openai:m", "options": {"timeout": 30}, "max_concurrency": 4},
    {"spec": "hf:./out/e", "template": "chat", "batch_size": 8},
]
WANT = [
    ("hf:./out/a", "hf:./out/a", {}),
    ("b", "hf:./out/b", {}),
    ("hf:/runs/lr=1e-4/final", "hf:/runs/lr=1e-4/final", {}),
    ("c", "openai:m", {"base_url": "http://127.0.0.1:8000/v1"}),
    ("d", "openai:m", {"timeout": 30, "max_concurrency": 4}),
    ("hf:./out/e", "hf:./out/e", {"batch_size": 8, "template": "chat"}),
]


def test_one_parser_for_both_commands():
    from derta.deception.study import model_entries
    from derta.eval.config import EvalConfig

    plan = EvalConfig(models=ENTRIES, questions={"file": "q.jsonl"}).plan()
    assert [(m.name, m.spec, m.backend_kwargs()) for m in plan.models] == WANT
    assert [(e.name, e.spec, e.args) for e in model_entries(ENTRIES)] == WANT


@pytest.mark.parametrize("models, key, message", [
    ([], "models", "list at least one model"),
    ([{"name": "x"}], "models[0]", "missing 'spec'"),
    (["hf:a", {"spec": "hf:b", "colour": "red"}], "models[1]", "unknown key(s) 'colour'"),
    ([{"spec": "hf:a", "args": {}, "options": {}}], "models[0]", "not both"),
    ([{"spec": "hf:a", "args": [1]}], "models[0].args", "expected a mapping"),
    (["a=hf:x", "a=hf:y"], "models", "used twice: a"),
    ([3], "models[0]", "expected a backend spec string"),
])
def test_errors_name_the_entry_in_both_commands(models, key, message):
    from derta.deception.study import model_entries
    from derta.eval.config import EvalConfig

    with pytest.raises(ModelListError) as e:
        parse_models(models)
    assert e.value.key == key and message in e.value.msg
    with pytest.raises(ValueError) as e:
        EvalConfig(models=models, questions={"file": "q.jsonl"})
    assert f"key {key!r}" in str(e.value) and message in str(e.value)
    with pytest.raises(ConfigError) as e:
        model_entries(models)
    assert str(e.value).startswith(f"{key}: ") and message in str(e.value)


def test_eval_checks_the_backend_kind():
    from derta.eval.config import EvalConfig

    with pytest.raises(ValueError, match=r"models\[0\].spec.*unknown backend 'gpu'"):
        EvalConfig(models=["m=gpu:x"], questions={"file": "q.jsonl"})
