"""``derta eval`` exits 1 when generations are missing (a backend outage) and says how to resume."""

from __future__ import annotations

import json

import pytest
import yaml

from derta.backends import Completion
from derta.backends.base import BACKENDS
from derta.cli import main


class Outage:
    """An API model that fails for good on the prompts whose id is in ``down`` (recorded, not raised)."""

    down: set[str] = set()

    def __init__(self, arg: str = "", **kw):
        self.name = "outage"

    def complete(self, prompts, decoding=None):
        return [Completion(text="", finish_reason="error", error="HTTP 503 after 6 tries") if p.id in Outage.down
                else Completion(text="Sorry, I cannot help.", finish_reason="stop") for p in prompts]

    def generate(self, prompts, decoding=None):
        return [c.text for c in self.complete(prompts, decoding)]


def test_an_incomplete_eval_exits_one_and_a_rerun_completes_it(tmp_path, testsets_dir, monkeypatch, capsys):
    monkeypatch.setitem(BACKENDS, "outage", Outage)
    monkeypatch.setattr("derta.eval.run.NO_TOKENIZER", ("outage",))
    cfg = tmp_path / "eval.yaml"
    cfg.write_text(yaml.safe_dump({"models": [{"name": "m", "spec": "outage:x"}], "questions": {"dir": str(testsets_dir), "limit": 4},
                                   "attacks": ["direct"], "judges": ["offline"], "helpfulness": {"sets": []}, "over_refusal": {"limit": 2},
                                   "out": str(tmp_path / "run")}))
    Outage.down = set()
    # which prompt ids: run once with nothing down, then take half of them down in a fresh run dir
    assert main(["eval", str(cfg), "--progress", "false", "--out", str(tmp_path / "probe")]) == 0
    gens = [json.loads(l) for l in (tmp_path / "probe" / "generations.jsonl").read_text().splitlines()]
    Outage.down = {g["prompt_id"] for g in gens[:3]}
    capsys.readouterr()
    assert main(["eval", str(cfg), "--progress", "false"]) == 1
    err = capsys.readouterr().err
    assert f"incomplete: 3 of {len(gens)} generations are missing" in err and len(gens) == 6 and "rerun the same command to resume" in err
    assert json.loads((tmp_path / "run" / "run.json").read_text())["status"] == "incomplete"
    Outage.down = set()
    assert main(["eval", str(cfg), "--progress", "false"]) == 0
    assert json.loads((tmp_path / "run" / "run.json").read_text())["status"] == "complete"


@pytest.mark.parametrize("value", ["-1", "x"])
def test_a_bad_limit_is_one_line(tmp_path, capsys, value):
    assert main(["eval", str(tmp_path / "c.yaml"), "--limit", value]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--limit" in err and "integer >= 0" in err
