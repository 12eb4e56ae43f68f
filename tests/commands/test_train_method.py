"""``derta train``'s method is explicit (``--method``, ``method:``): rows of the other kind stop
with the file, the line and the option that trains them."""

from __future__ import annotations

import json

import pytest

from derta.cli import main

PAIR = {"messages": [{"role": "user", "content": "q"}], "chosen": "Sorry, no.", "rejected": "Sure: step 1."}
EXAMPLE = {"messages": [{"role": "user", "content": "q"}], "target": "Sorry, no.", "objective": "mle"}


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_default_is_sft(capsys):
    from derta.train.config import TrainConfig

    assert TrainConfig().method == "sft"
    assert main(["train", "--print-config"]) == 0
    assert "method: sft" in capsys.readouterr().out


def test_preference_pairs_under_sft_name_file_line_and_option(tmp_path, capsys):
    data = _jsonl(tmp_path / "pairs.jsonl", [PAIR])
    assert main(["train", "--model", "m", "--data", str(data)]) == 2
    err = capsys.readouterr().err
    assert f"{data}:1: a DPO preference pair (chosen/rejected)" in err and "--method dpo" in err


def test_training_examples_under_dpo_name_file_line_and_option(tmp_path, capsys):
    data = _jsonl(tmp_path / "sft.jsonl", [PAIR, EXAMPLE])
    assert main(["train", "--method", "dpo", "--model", "m", "--data", str(data)]) == 2
    err = capsys.readouterr().err
    assert f"{data}:2: a training example (messages/target)" in err and "--method sft" in err


def test_an_empty_pair_file_is_an_error(tmp_path):
    from derta.data.formats import load_preference_pairs
    from derta.io import DataError

    with pytest.raises(DataError, match="no preference pairs"):
        load_preference_pairs(_jsonl(tmp_path / "empty.jsonl", []))


def test_unknown_method(tmp_path, capsys):
    cfg = tmp_path / "t.yaml"
    cfg.write_text("method: ppo\n")
    assert main(["train", "--config", str(cfg), "--print-config"]) == 2
    assert "method must be sft or dpo" in capsys.readouterr().err
