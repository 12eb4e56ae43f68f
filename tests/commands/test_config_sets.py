"""One config mechanism: YAML + ``--field`` overrides + ``--set KEY.PATH=VALUE`` for every command,
and the example configs still load."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from derta.config import ConfigError, apply_sets, load_config

REPO = Path(__file__).resolve().parents[2]


def test_sets_reach_inside_sections_and_keep_the_rest():
    from derta.deception.study import DeceptionConfig

    cfg = load_config(DeceptionConfig, None, sets=["decoding.temperature=0.7", "models=[scripted]"])
    assert cfg.decoding == {"max_new_tokens": 512, "temperature": 0.7}  # the field's default kept beside the new key
    assert cfg.models == ["scripted"]


def test_sets_apply_to_the_file_and_overrides_win(tmp_path):
    from derta.deception.study import DeceptionConfig

    path = tmp_path / "d.yaml"
    path.write_text(yaml.safe_dump({"models": [{"name": "a", "spec": "scripted"}], "decoding": {"max_new_tokens": 8}, "turns": 1}))
    cfg = load_config(DeceptionConfig, path, {"turns": "4"}, ["models.0.name=b", "decoding.seed=3", "turns=2"])
    assert cfg.models == [{"name": "b", "spec": "scripted"}]
    assert cfg.decoding == {"max_new_tokens": 8, "seed": 3}
    assert cfg.turns == 4  # --turns wins over --set turns=2


@pytest.mark.parametrize("item, message", [
    ("models.3.spec=hf:x", "'3' is not an index of a list of 1"),
    ("turnz.x=1", "unknown key 'turnz'"),
    ("decoding", "expected KEY.PATH=VALUE"),
    ("turns.x=1", "cannot set 'x' inside int"),
])
def test_bad_sets_name_the_item(tmp_path, item, message):
    from derta.deception.study import DeceptionConfig

    path = tmp_path / "d.yaml"
    path.write_text("models: [scripted]\nturns: 1\n")
    with pytest.raises(ConfigError, match=message):
        load_config(DeceptionConfig, path, sets=[item])


def test_apply_sets_copies_instead_of_changing_the_input():
    values = {"models": [{"name": "a", "spec": "hf:x"}]}
    out = apply_sets(values, ["models.0.spec=hf:y"])
    assert out == {"models": [{"name": "a", "spec": "hf:y"}]} and values["models"][0]["spec"] == "hf:x"


def _eval_config(tmp_path, **kw):
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump({"models": ["hf:x"], "questions": {"file": "q.jsonl", "limit": 50}, **kw}))
    return path


def test_eval_set_out_and_limit_through_the_parser(tmp_path):
    from derta.cli import build_parser
    from derta.commands.eval import limit_sets
    from derta.config import config_from_args
    from derta.eval.config import EvalConfig

    path = _eval_config(tmp_path, over_refusal=None)
    args = build_parser().parse_args(["eval", str(path), "--set", "questions.sets=[a, b]", "--out", "runs/x", "--limit", "3"])
    cfg = config_from_args(EvalConfig, args.config, args, limit_sets(args.config, args.limit))
    assert cfg.out == "runs/x" and cfg.questions == {"file": "q.jsonl", "limit": 3, "sets": ["a", "b"]}
    assert cfg.over_refusal is None  # --limit leaves a section the file turned off alone
    assert cfg.helpfulness == {"limit": 3}


def test_train_and_deception_take_set_too(tmp_path, capsys):
    from derta.cli import main

    assert main(["train", "--set", "lora_target_modules=[q_proj]", "--set", "method=dpo", "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["lora_target_modules"] == ["q_proj"] and printed["method"] == "dpo"
    bad = tmp_path / "d.yaml"
    bad.write_text("models: [scripted]\n")
    assert main(["deception", "run", str(bad), "--set", "models.4=hf:x"]) == 2
    assert "models.4" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["eval_hf.yaml", "eval_openai.yaml"])
def test_eval_examples_load(name):
    from derta.eval.config import EvalConfig

    cfg = load_config(EvalConfig, REPO / "examples" / name)
    plan = cfg.plan()
    assert len(plan.models) == 2 and plan.judges
    if name == "eval_hf.yaml":
        assert [(m.name, m.spec, m.template, m.options) for m in plan.models] == [
            ("vanilla", "hf:out/llama3-8b-vanilla", "chat", {"batch_size": 16}), ("derta", "hf:out/llama3-8b-derta", "chat", {"batch_size": 16})]
    else:
        assert plan.models[0].options == {"api_key_env": "OPENAI_API_KEY", "max_concurrency": 8}
        assert plan.models[1].options == {"timeout": 300, "on_error": "record", "base_url": "http://localhost:8000/v1"}


def test_deception_example_loads():
    from derta.deception.study import DeceptionConfig, model_entries

    cfg = load_config(DeceptionConfig, REPO / "examples" / "deception.yaml")
    entries = model_entries(cfg.models)
    assert [(e.name, e.spec, e.args) for e in entries] == [
        ("base", "hf:meta-llama/Meta-Llama-3-8B-Instruct", {}), ("derta-rebuttal", "hf:./out/derta-rebuttal", {"batch_size": 16})]
