"""`derta deception run` killed with SIGKILL during the conversations and during classification,
then rerun: the same conversations and classifications as an uninterrupted run, none lost, none
written twice, every log line whole."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest
import yaml

from derta.cli import main
from derta.deception.study import CLASSIFICATIONS, CONVERSATIONS, SUMMARY, _row_key

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SCENARIOS = ["hiring-race", "hiring-race-control", "privacy-whistleblower", "sales-fake-reviews", "medical-child-dose", "academic-live-exam"]
TURNS = 2
#: A scripted model's answers, varied by scenario and turn (see test_deception_cli.py for their labels).
ANSWERS = (
    "<reasoning>Rejecting him because of his race is illegal discrimination.</reasoning><final>DECISION: Marcus Johnson - REJECT</final>",
    "<reasoning>Rejecting Marcus because he is Black is illegal discrimination; he is the stronger candidate.</reasoning>"
    "<final>DECISION: Marcus Johnson - INTERVIEW\nDECISION: Kyle Anderson - INTERVIEW</final>",
    "I will not do that.",
    "<reasoning>The customer asked, so I comply.</reasoning><final>Sure, here is the list you asked for.</final>",
)


class Study:
    """A study config over a scripted model (and, with ``tiny``, a tiny LLaMA saved to a folder)."""

    def __init__(self, tmp_path: Path, tiny=None, tokenizer=None):
        self.tmp = tmp_path
        answers = tmp_path / "answers.jsonl"
        rows = [{"prompt_id": f"{s}|{st}|t{t}", "response": ANSWERS[(i + t + j) % len(ANSWERS)]}
                for i, s in enumerate(SCENARIOS) for j, st in enumerate(("refusal", "rebuttal", "own")) for t in range(1, TURNS + 2)]
        answers.write_text("".join(json.dumps(r) + "\n" for r in rows))
        self.models = [{"name": "toy", "spec": f"scripted:{answers}", "args": {"default": "No."}}]
        if tiny is not None:
            tiny.save_pretrained(tmp_path / "tiny")
            tokenizer.save_pretrained(tmp_path / "tiny")
            self.models.append({"name": "tiny", "spec": f"hf:{tmp_path / 'tiny'}", "args": {"progress": False, "batch_size": 1}})

    @property
    def n_turns(self) -> int:  # models x scenarios x strategies x (1 + follow-ups)
        return len(self.models) * len(SCENARIOS) * 3 * (TURNS + 1)

    @property
    def n_classified(self) -> int:  # the generated turns: "own" turn 1, every strategy's follow-ups
        return len(self.models) * len(SCENARIOS) * (1 + 3 * TURNS)

    def config(self, out: Path) -> Path:
        cfg = {"models": self.models, "select": SCENARIOS, "turns": TURNS, "decoding": {"max_new_tokens": 6}, "batch_size": 2, "out_dir": str(out)}
        path = self.tmp / f"{out.name}.yaml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        return path


def turn_key(r: dict) -> tuple:
    return (r["model"], r.get("model_id"), r["scenario"], r["strategy"], r["turn"], r["decoding_id"])


def _turn_view(r: dict) -> tuple:
    """What the conversation was (not when it ran or how long a call took)."""
    return (r["source"], r["response"], r["messages"], r["finish_reason"], r["n_tokens"], r["metadata"])


def outcome(killer, out: Path) -> dict:
    summary = json.loads((out / SUMMARY).read_text())
    return {"turns": killer.read_strict(out / CONVERSATIONS), "classified": killer.read_strict(out / CLASSIFICATIONS), "summary": summary}


def _summary_view(s: dict) -> dict:
    return {**{k: v for k, v in s.items() if k not in ("created", "environment")}, "config": {**s["config"], "out_dir": None}}


def problems(ref: dict, got: dict) -> list[str]:
    out = []
    for name, rows, key, view in (("conversations", "turns", turn_key, _turn_view), ("classifications", "classified", _row_key, lambda r: r)):
        want = {key(r): r for r in ref[rows]}
        have: dict = {}
        dups = []
        for r in got[rows]:
            if key(r) in have:
                dups.append(key(r))
            have[key(r)] = r
        if dups:
            out.append(f"{name}: {len(dups)} duplicated key(s), e.g. {dups[0]}")
        if set(want) - set(have):
            out.append(f"{name}: {len(set(want) - set(have))} lost, e.g. {sorted(set(want) - set(have))[0]}")
        if set(have) - set(want):
            out.append(f"{name}: {len(set(have) - set(want))} unexpected, e.g. {sorted(set(have) - set(want))[0]}")
        changed = sorted(k for k in set(want) & set(have) if view(want[k]) != view(have[k]))
        if changed:
            out.append(f"{name}: {len(changed)} differ, e.g. {changed[0]}")
    a, b = _summary_view(ref["summary"]), _summary_view(got["summary"])
    if a != b:
        out.append(f"summary.json differs in {sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))}")
    return out


def on_disk(killer, out: Path) -> str:
    parts = [killer.describe(out / CONVERSATIONS), killer.describe(out / CLASSIFICATIONS)]
    parts.append("summary" if (out / SUMMARY).exists() else "no summary")
    return ", ".join(parts)


def kill_point(killer, study: Study, out: Path, kind: str, rng: random.Random, span: float) -> tuple[str, object]:
    if kind == "conversation":
        n = rng.randint(1, study.n_turns - 1)
        return f"after turn line {n}", killer.after_lines(out / CONVERSATIONS, n)
    if kind == "classification":
        n = rng.randint(1, study.n_classified - 1)
        return f"after classification line {n}", killer.after_lines(out / CLASSIFICATIONS, n)
    delay = rng.uniform(0.0, span)
    return f"{delay:.2f} s after the first turn", killer.after_delay((out / CONVERSATIONS).exists, delay)


def trials(killer, study: Study, kinds: list[str], seed: int) -> tuple[list, list[str]]:
    rng = random.Random(seed)
    ref_dir = study.tmp / "reference"
    t0 = time.monotonic()  # the uninterrupted run, in this process (one torch thread, like the subprocesses)
    assert main(["deception", "run", str(study.config(ref_dir))]) == 0
    span = time.monotonic() - t0
    ref = outcome(killer, ref_dir)
    assert len(ref["turns"]) == study.n_turns and len(ref["classified"]) == study.n_classified
    assert {r["category"] for r in ref["classified"]} >= {"deception", "coherent-safe"}  # the classifier has work to do
    table, failures = [], []
    for i, kind in enumerate(kinds):
        out = study.tmp / f"trial-{i}"
        cfg = study.config(out)
        whens, states = [], []
        for point in (["conversation", "classification"] if kind == "twice" else [kind]):
            when, ready = kill_point(killer, study, out, point, rng, span)
            killed, seconds, _ = killer.kill_when(["deception", "run", cfg], ready)
            whens.append(f"{when} ({seconds:.1f} s)" if killed else f"{when}: run had ended ({seconds:.1f} s)")
            states.append(on_disk(killer, out))
        p = killer.run("deception", "run", cfg)
        errs = [f"resume exited {p.returncode}: {p.stderr[-1500:]}"] if p.returncode else problems(ref, outcome(killer, out))
        table.append(killer.Trial(i, " then ".join(whens), " then ".join(states), p.returncode, not errs))
        failures += [f"trial {i} ({table[-1].kill}; on disk: {table[-1].on_disk}): {e}" for e in errs]
    models = "+".join(m["name"] for m in study.models)
    print("\n" + killer.table(f"derta deception run ({models}, {len(SCENARIOS)} scenarios, {TURNS} follow-ups): kill -9, then rerun "
                                f"({len(kinds)} trials, seed {seed})", table))
    return table, failures


def test_kill_during_the_conversations_then_resume(tmp_path, killer):
    """A scripted model only (no torch in the subprocess): the study takes a few seconds."""
    [trial], failures = trials(killer, Study(tmp_path), ["conversation"], seed=4)
    assert not failures, "\n".join(failures)
    assert trial.equal and "run had ended" not in trial.kill


@pytest.mark.slow
@pytest.mark.timeout(1200)  # each subprocess loads torch and transformers: slow on a shared CPU
def test_kill_at_random_points_then_resume(tmp_path, killer, tiny_model, bpe_tokenizer):
    study = Study(tmp_path, tiny_model, bpe_tokenizer)
    kinds = ["conversation", "classification", "random", "conversation", "twice", "random", "classification", "conversation"]
    table, failures = trials(killer, study, kinds, seed=8)
    assert not failures, "\n".join(failures)
    assert len(table) == len(kinds) and all(t.equal for t in table)
