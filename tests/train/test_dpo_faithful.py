"""DPO as the paper runs it: one BOS in TRL's tokenized rows, counts of what TRL cuts, helpfulness
pairs mixed with the safety pairs, and the example config's learning rate and epochs."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
import yaml

from derta.cli import main
from derta.data.recipes import build
from derta.data.render import Renderer, adds_bos
from derta.io import DataError
from derta.records import TrainingExample

REPO = Path(__file__).resolve().parents[2]
BOS_CHAT_TEMPLATE = (  # a chat template that writes the BOS itself, as Llama-3's and Gemma's do
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


@pytest.fixture()
def bos_adding_tokenizer(bpe_tokenizer):
    tok = copy.deepcopy(bpe_tokenizer)
    tok.add_bos_token = True
    assert tok("Hi")["input_ids"][0] == tok.bos_token_id
    return tok


def _trainer(tok, world, template, max_length=256, n=3):
    from derta.demo.model import tiny_llama
    from derta.train.config import TrainConfig
    from derta.train.run import build_dpo_trainer

    cfg = TrainConfig(method="dpo", model="in-memory", template=template, output_dir="unused", max_length=max_length,
                      progress=False, batch_size=2, total_batch_size=2)
    pairs = build("dpo", world.triples[:n])
    return build_dpo_trainer(cfg, tiny_llama(tok, hidden=32, layers=1, heads=2), tok, pairs), pairs


@pytest.mark.parametrize("adds", [True, False])
@pytest.mark.parametrize("template", ["reference", "chat-bos"])
def test_trl_rows_start_with_exactly_the_mle_prompt(bpe_tokenizer, world, one_torch_thread, adds, template):
    tok = copy.deepcopy(bpe_tokenizer)
    tok.add_bos_token = adds
    if template == "chat-bos":
        tok.chat_template = BOS_CHAT_TEMPLATE
    name = "chat" if template == "chat-bos" else template
    assert adds_bos(tok) == adds
    trainer, pairs = _trainer(tok, world, name)
    renderer = Renderer(tok, 5, template=name)
    for row, pair in zip(trainer.train_dataset, pairs):
        ids = row["prompt_ids"]
        assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1
        turn = renderer.turn(TrainingExample(messages=pair.messages, target=pair.chosen))
        assert ids == renderer.prompt_ids(turn)  # what MLE training and generation put before the answer
        assert tok.decode(row["chosen_ids"]).strip().startswith(pair.chosen.strip()[:20])


def test_truncation_record_counts_what_trl_cuts(bos_adding_tokenizer, world, one_torch_thread):
    from derta.train.run import dpo_rows, dpo_truncation

    tok = bos_adding_tokenizer
    max_length = 40
    trainer, pairs = _trainer(tok, world, "reference", max_length=max_length, n=6)
    rec = dpo_truncation(dpo_rows(pairs, tok, "reference"), tok, max_length, [p.id for p in pairs])
    kept = list(trainer.train_dataset)
    assert rec["rows_untrained"] == len(pairs) - len(kept)  # TRL drops a pair whose prompt fills max_length
    overs = [len(r["prompt_ids"]) + max(len(r["chosen_ids"]), len(r["rejected_ids"])) - max_length for r in kept]
    assert rec["rows_cut"] - rec["rows_untrained"] == sum(o > 0 for o in overs) > 0
    if not rec["rows_untrained"]:
        assert rec["tokens_cut"] == sum(o for o in overs if o > 0)
        assert rec["first_cut_ids"][0] in [p.id for p in pairs]


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_helpfulness_pairs_are_mixed_with_the_safety_pairs(tmp_path, world):
    from derta.data.formats import load_preference_pairs

    triples = _jsonl(tmp_path / "t.jsonl", [t.to_dict() for t in world.triples[:4]])
    helpful = [{"instruction": "Add 2 and 3.", "input": "Show the sum.", "chosen": "2 plus 3 is 5.", "rejected": "It is 6."},
               {"query": "Capital of France?", "chosen": "Paris.", "rejected": "Lyon.", "id": "cap"}]
    hp = _jsonl(tmp_path / "hp.jsonl", helpful)
    out = tmp_path / "pairs.jsonl"
    assert main(["data", "build", "--recipe", "dpo", "--triples", str(triples), "--helpful-pairs", str(hp), "--out", str(out)]) == 0
    pairs = load_preference_pairs(out)
    assert len(pairs) == 6
    mixed = [p for p in pairs if p.source == "helpful"]
    assert sorted((p.chosen, p.rejected) for p in mixed) == sorted((h["chosen"], h["rejected"]) for h in helpful)
    first = next(p for p in mixed if p.chosen == "2 plus 3 is 5.")
    assert first.messages[-1].content == "Add 2 and 3.\n\nShow the sum."
    safety = {p.chosen: p.rejected for p in pairs if p.source == "safety"}
    assert safety == {t.safe_response: t.harmful_response for t in world.triples[:4]}
    meta = json.loads((tmp_path / "pairs.meta.json").read_text())
    assert meta["counts"]["dpo_pairs"] == 6 and meta["counts"]["dpo_helpful_pairs"] == 2 and meta["helpful_pairs_read"] == 2


@pytest.mark.parametrize("row, field", [({"query": "q", "rejected": "no"}, "chosen"), ({"chosen": "a", "rejected": "b"}, "query"),
                                        ({"query": "q", "chosen": "a", "rejected": ""}, "rejected")])
def test_a_bad_helpfulness_pair_names_file_line_and_field(tmp_path, row, field):
    from derta.data.formats import load_helpful_pairs

    path = _jsonl(tmp_path / "hp.jsonl", [{"query": "q", "chosen": "a", "rejected": "b"}, row])
    with pytest.raises(DataError, match=rf"hp\.jsonl:2.*{field}"):
        load_helpful_pairs(path)


def test_helpful_pairs_belong_to_the_dpo_recipe(tmp_path, world, capsys):
    triples = _jsonl(tmp_path / "t.jsonl", [t.to_dict() for t in world.triples[:2]])
    hp = _jsonl(tmp_path / "hp.jsonl", [{"query": "q", "chosen": "a", "rejected": "b"}])
    out = tmp_path / "o.jsonl"
    assert main(["data", "build", "--recipe", "vanilla", "--triples", str(triples), "--helpful-pairs", str(hp), "--out", str(out)]) != 0
    assert "--helpful-pairs is for --recipe dpo" in capsys.readouterr().err and not out.exists()


def test_the_dpo_example_uses_the_papers_learning_rate_and_one_epoch():
    from derta.config import load_config
    from derta.train.config import TrainConfig

    spec = (REPO.parent / "shared" / "docs" / "SPEC.md")
    if not spec.exists():
        pytest.skip("SPEC.md not found")
    row = next(line for line in spec.read_text().splitlines() if line.startswith("| DPO |"))
    lr_8b = float(re.search(r"LR ([0-9.e-]+) \(8B\)", row).group(1))
    assert "one more epoch" in row
    cfg = load_config(TrainConfig, str(REPO / "examples" / "train_dpo.yaml"), {}, [])
    assert cfg.method == "dpo" and cfg.learning_rate == lr_8b and cfg.epochs == 1
    assert "2.0e-6" in (REPO / "examples" / "train_dpo.yaml").read_text()  # the 70B value, in its comment
    assert yaml.safe_load((REPO / "examples" / "train_dpo.yaml").read_text())["template"] == "reference"
