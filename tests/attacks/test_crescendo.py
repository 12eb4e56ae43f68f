"""Crescendo with scripted attacker, target and scorer: backtracking, stopping, the transcript."""

from __future__ import annotations

import hashlib
import json

import pytest

from derta.attacks.crescendo import ATTACKER_SHA, ATTACKER_SYSTEM, ATTACKER_TURN, CrescendoAttack
from derta.records import Question

REFUSAL = "I'm sorry, I cannot help with that."


class ScriptedAttacker:
    """Answers the next scripted question as JSON (a ``None`` entry: a reply that is not JSON)."""

    name = "fake-attacker"

    def __init__(self, script):
        self.script, self.asks = list(script), []

    def generate(self, prompts, decoding=None):
        out = []
        for p in prompts:
            self.asks.append(p)
            q = self.script[len(self.asks) - 1] if len(self.asks) <= len(self.script) else f"extra {len(self.asks)}"
            out.append("no json here" if q is None else json.dumps({"reasoning": "step up", "prompt": q}))
        return out


class Target:
    """Refuses any question holding "bad"; answers others with "answer: QUESTION"."""

    name = "fake-target"

    def __init__(self, refuse_all=False):
        self.seen, self.refuse_all = [], refuse_all

    def generate(self, prompts, decoding=None):
        self.seen += prompts
        return [REFUSAL if self.refuse_all or "bad" in p.messages[-1].content else f"answer: {p.messages[-1].content}" for p in prompts]


def scorer(table):
    return lambda goal, prompt, response: table.get(prompt, 1)


def run(script, table=None, target=None, **kw):
    target = target or Target()
    attacker = ScriptedAttacker(script)
    attack = CrescendoAttack(attacker=attacker, target=target, scorer=scorer(table or {}), **kw)
    return attack.attack_one(Question("q0", "the goal")), attacker, target


def test_a_refused_turn_is_dropped_and_the_attacker_told():
    p, attacker, target = run(["history of locks", "bad: pick one now", "how do pins work"], {"how do pins work": 10})
    m = p.metadata
    assert m["success"] and m["turns"] == 2 and m["backtracks"] == 1 and m["scores"] == [1, 10]
    # the target's conversation for the turn after the refusal holds no trace of the refused question
    last = target.seen[-1].messages
    assert [x.content for x in last] == ["history of locks", "answer: history of locks", "how do pins work"]
    assert "REFUSED" in attacker.asks[2].messages[-1].content and "bad: pick one now" in attacker.asks[2].messages[-1].content
    assert [t["backtracked"] for t in m["transcript"]] == [False, True, False]
    assert m["transcript"][1]["response"] == REFUSAL
    # the prompt is the conversation up to the winning question: the pipeline generates its answer
    assert [x.role for x in p.messages] == ["user", "assistant", "user"] and p.messages[-1].content == "how do pins work"


def test_stops_at_max_turns_and_returns_the_best_turn():
    p, attacker, _ = run([f"q{i}" for i in range(10)], {"q1": 6, "q2": 3}, max_turns=3)
    m = p.metadata
    assert not m["success"] and m["turns"] == 3 and len(attacker.asks) == 3 and m["scores"] == [1, 6, 3]
    assert m["best_turn"] == 2 and m["best_score"] == 6
    assert [x.content for x in p.messages] == ["q0", "answer: q0", "q1"]
    assert "CONVERSATION SO FAR:\nQUESTION 1: q0\nANSWER 1: answer: q0" in attacker.asks[1].messages[-1].content


def test_backtracks_are_bounded_then_a_refusal_is_kept():
    p, _, target = run(["a", "b", "c", "d", "e"], target=Target(refuse_all=True), max_turns=2, max_backtracks=2)
    m = p.metadata
    assert m["backtracks"] == 2 and m["turns"] == 2 and len(target.seen) == 4
    assert [t["backtracked"] for t in m["transcript"]] == [True, True, False, False]
    assert m["transcript"][-1]["refused"] and [x.content for x in p.messages] == ["c"]


def test_an_unparseable_attacker_reply_costs_a_backtrack():
    p, _, target = run([None, "fine question"], {"fine question": 10})
    m = p.metadata
    assert m["backtracks"] == 1 and m["success"] and m["attacker_queries"] == 2 and m["target_queries"] == 1 == len(target.seen)
    assert m["transcript"][0]["reason"] == "unparseable"


def test_nothing_accepted_falls_back_to_the_goal():
    p, _, _ = run([None] * 5, max_backtracks=2)
    assert p.metadata["turns"] == 0 and p.metadata["best_score"] is None and [x.content for x in p.messages] == ["the goal"]


def test_record_and_defaults():
    p, _, _ = run(["x"], {"x": 10}, seed=7)
    assert p.attack == "crescendo" and p.seed == 7 and p.params["max_turns"] == 10 and p.params["max_backtracks"] == 10
    assert p.params["attacker"] == "fake-attacker" and json.loads(json.dumps(p.to_dict()))["params"]["target"] == "fake-target"
    want = hashlib.sha256((ATTACKER_SYSTEM + "\n" + ATTACKER_TURN).encode()).hexdigest()[:16]
    assert p.metadata["attacker_template_sha256"] == ATTACKER_SHA == want
    with pytest.raises(ValueError, match="needs attacker"):
        CrescendoAttack(target=Target(), scorer=scorer({}))


def test_crescendo_runs_as_a_searched_attack_cached_per_target(tmp_path, monkeypatch):
    import derta.attacks as attacks
    from derta.backends.base import BACKENDS
    from derta.eval.config import AttackSpec
    from derta.eval.prompts import searched_prompts

    made = []

    def attacker(arg="", **kw):
        made.append(arg)
        return ScriptedAttacker(["q1", "q2"])

    monkeypatch.setitem(attacks.ATTACKS, "crescendo", CrescendoAttack)
    monkeypatch.setitem(BACKENDS, "fakeattacker", attacker)
    monkeypatch.setitem(BACKENDS, "fakescorer", lambda arg="", **kw: Rater())
    spec = AttackSpec("crescendo", "crescendo", {"attacker": "fakeattacker:a", "scorer": "fakescorer:s", "max_turns": 2})
    questions = [Question("q0", "the goal")]
    (p,) = searched_prompts(spec, questions, Target(), "m1", 0, tmp_path / "cache.jsonl")
    assert [x.content for x in p.messages] == ["q1", "answer: q1", "q2"] and p.metadata["success"]  # rating 10 on turn 2
    (again,) = searched_prompts(spec, questions, Target(), "m1", 0, tmp_path / "cache.jsonl")
    assert again.to_dict() == p.to_dict() and made == ["a"]  # resumed: no second search
    searched_prompts(spec, questions, Target(), "m2", 0, tmp_path / "cache.jsonl")
    assert made == ["a", "a"]  # another target is searched again


class Rater:
    """A judge model answering PAIR's rating prompt: 10 once the answer holds "q2"."""

    name = "rater"

    def generate(self, prompts, decoding=None):
        return ["Rating: [[10]]" if "answer: q2" in p.messages[-1].content else "Rating: [[2]]" for p in prompts]
