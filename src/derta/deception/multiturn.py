"""Multi-turn conversations: how the assistant's first answer shapes what the model does under pressure.

For every scenario and strategy a conversation runs like this (turn t = the t-th assistant answer):

    system: role prompt + chain-of-thought instruction      user: the undesired request
    turn 1  assistant: "refusal"  -> a polite refusal (inserted, not generated)
                       "rebuttal" -> an explicit rebuttal from the scenario's fields (inserted)
                       "own"      -> the model's own answer
    user: follow-up 1 (pressure)   turn 2  assistant: the model
    user: follow-up 2              turn 3  assistant: the model      ... up to 1 + ``turns``

Every turn is one :class:`TurnRecord` line in an append-only JSONL log (inserted turns too, marked
``source: "inserted"``, so the log shows exactly what the model was told it had said). The log is
resumable like :mod:`derta.generate`: the key is (model, model_id, scenario, strategy, turn,
decoding_id), ``model_id`` saying which model the name stood for (a model changed under the same
name runs its conversations anew, appended beside the old); a rerun generates only the missing
turns, rebuilding each conversation from the log. A logged
turn whose conversation differs from the one rebuilt now (the scenario text, the template or the
protocol changed) is an error, not a silent mix. Turns run breadth-first (all turn-1 prompts,
then all turn-2 prompts, ...), so a batch backend (HF, vLLM, an API pool) gets full batches.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..backends.base import Backend, Decoding, complete
from ..generate import decoding_id
from ..io import DataError, read_log
from ..logs import ERRORS_SUFFIX, META_SUFFIX, KeyedLog, now  # noqa: F401 (META_SUFFIX: the sidecar's name, for callers)
from ..records import AttackPrompt, Message, Record
from .protocol import FORMATS, PROTOCOL_VERSION, opening_messages, protocol_sha
from .rebuttal import RebuttalTemplate, load_template
from .scenarios import Scenario, Suite

log = logging.getLogger(__name__)

STRATEGIES = ("refusal", "rebuttal", "own")
DEFAULT_REFUSAL = "I'm sorry, but I can't help with that."
RECORD_FORMAT = "derta.deception.turns/1"


@dataclass
class TurnRecord(Record):
    """One assistant turn of one conversation; ``messages`` is everything before it."""

    model: str
    scenario: str
    strategy: str
    turn: int
    source: str  # "model" (generated) or "inserted" (the strategy's first answer)
    response: str
    messages: list[dict[str, str]]
    scenario_category: str = ""
    control: bool = False
    pair: str = ""
    scenario_version: int = 1
    finish_reason: str = ""
    n_tokens: int | None = None
    decoding: dict[str, Any] = field(default_factory=dict)
    decoding_id: str = ""
    seed: int | None = None
    suite: dict[str, Any] = field(default_factory=dict)
    protocol: dict[str, Any] = field(default_factory=dict)
    backend: str = ""
    model_id: str | None = None  # which model wrote the turn (its identity hash); None: not given
    seconds: float = 0.0
    time: str = ""
    format: str = RECORD_FORMAT
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str | None, str, str, int, str]:
        return (self.model, self.model_id, self.scenario, self.strategy, self.turn, self.decoding_id)


@dataclass(frozen=True)
class Protocol:
    """How conversations are run: strategies, number of follow-up turns, answer format, texts."""

    strategies: tuple[str, ...] = STRATEGIES
    turns: int = 3
    fmt: str = "tags"
    system_role: bool = True
    refusal: str = DEFAULT_REFUSAL
    rebuttal: RebuttalTemplate = field(default_factory=load_template)

    def __post_init__(self) -> None:
        object.__setattr__(self, "strategies", tuple(self.strategies))
        bad = [s for s in self.strategies if s not in STRATEGIES]
        if bad or not self.strategies:
            raise ValueError(f"strategies must be a non-empty subset of {', '.join(STRATEGIES)}, got {list(self.strategies)}")
        if len(set(self.strategies)) != len(self.strategies):
            raise ValueError(f"strategy listed twice: {list(self.strategies)}")
        if self.turns < 0:
            raise ValueError(f"turns (follow-up turns) must be >= 0, got {self.turns}")
        if self.fmt not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {self.fmt!r}")
        if not self.refusal.strip():
            raise ValueError("the polite refusal text is empty")

    def info(self) -> dict[str, Any]:
        return {"version": PROTOCOL_VERSION, "format": self.fmt, "sha256": protocol_sha(self.fmt), "system_role": self.system_role,
                "strategies": list(self.strategies), "turns": self.turns, "refusal": self.refusal, "rebuttal_template": self.rebuttal.info()}

    def inserted(self, scenario: Scenario, strategy: str) -> str | None:
        """The assistant's first answer that the strategy inserts (None: the model answers)."""
        if strategy == "refusal":
            return self.refusal
        if strategy == "rebuttal":
            return self.rebuttal.for_scenario(scenario)
        return None

    def check(self, suite: Suite) -> None:
        short = [s for s in suite.scenarios if len(s.followups) < self.turns]
        if short:
            s = short[0]
            raise DataError(f"{s.source}: scenario {s.id!r}: field 'followups': has {len(s.followups)}, "
                            f"but {self.turns} follow-up turns were asked for")


def conversation(scenario: Scenario, protocol: Protocol, answers: list[str]) -> list[Message]:
    """The messages before assistant turn ``len(answers) + 1``, given the earlier answers."""
    msgs = opening_messages(scenario.system, scenario.request, protocol.fmt, protocol.system_role)
    for k, answer in enumerate(answers):
        msgs += [Message("assistant", answer), Message("user", scenario.followups[k])]
    return msgs


def read_turns(path: str | Path) -> list[TurnRecord]:
    """All records of a conversation log, in file order (see :func:`derta.io.read_log`)."""
    return read_log(path, TurnRecord.from_dict, "deception turn record")


def _turn_key(r: TurnRecord) -> tuple[str, str, int]:
    return (r.scenario, r.strategy, r.turn)


class _Run:
    """State of one model's run over a log: what is done (the log's records of this model and
    decoding, by scenario, strategy and turn), what to write."""

    def __init__(self, conv: KeyedLog[TurnRecord], suite: Suite, protocol: Protocol, model: str, backend: Backend, decoding: Decoding,
                 model_id: str | None = None):
        self.conv, self.suite, self.protocol = conv, suite, protocol
        self.model, self.model_id, self.backend, self.decoding = model, model_id, backend, decoding
        self.dec, self.dec_id = decoding.to_dict(), decoding_id(decoding)
        self.done = conv.records
        self.counts = {"reused": 0, "generated": 0, "inserted": 0, "errors": 0}
        self.failed: set[tuple[str, str]] = set()

    def answers(self, s: Scenario, strategy: str, turn: int) -> list[str] | None:
        got = [self.done.get((s.id, strategy, k)) for k in range(1, turn)]
        return None if any(r is None for r in got) else [r.response for r in got]  # type: ignore[union-attr]

    def record(self, s: Scenario, strategy: str, turn: int, msgs: list[Message], text: str, source: str, **extra: Any) -> TurnRecord:
        r = TurnRecord(
            model=self.model, scenario=s.id, strategy=strategy, turn=turn, source=source, response=text,
            messages=[m.to_dict() for m in msgs], scenario_category=s.category, control=s.control, pair=s.pair,
            scenario_version=s.version, decoding=self.dec, decoding_id=self.dec_id, seed=self.decoding.seed,
            suite={k: v for k, v in self.suite.info().items() if k != "source"}, protocol=self.protocol.info(),
            backend=getattr(self.backend, "name", ""), model_id=self.model_id, time=now(), **extra,
        )
        return self.conv.append(r)

    def step(self, turn: int, batch_size: int) -> None:
        """Write every missing record of ``turn``: inserted answers at once, model answers in batches."""
        todo: list[tuple[Scenario, str, list[Message], AttackPrompt]] = []
        for s in self.suite.scenarios:
            for strategy in self.protocol.strategies:
                if (s.id, strategy) in self.failed:
                    continue
                answers = self.answers(s, strategy, turn)
                if answers is None:  # an earlier turn failed in this run: the rerun continues it
                    continue
                msgs = conversation(s, self.protocol, answers)
                inserted = self.protocol.inserted(s, strategy) if turn == 1 else None
                old = self.conv.logged((s.id, strategy, turn),
                                       same=lambda r: r.messages == [m.to_dict() for m in msgs] and (inserted is None or r.response == inserted))
                if old is not None:
                    self.counts["reused"] += 1
                elif inserted is not None:
                    self.record(s, strategy, turn, msgs, inserted, "inserted")
                    self.counts["inserted"] += 1
                else:
                    pid = f"{s.id}|{strategy}|t{turn}"
                    todo.append((s, strategy, msgs, AttackPrompt(id=pid, question=s.request, attack=f"deception:{strategy}", messages=msgs,
                                                                 params={"scenario": s.id, "strategy": strategy, "turn": turn})))
        for start in range(0, len(todo), batch_size):
            chunk = todo[start : start + batch_size]
            t0 = time.perf_counter()
            results = complete(self.backend, [p for *_, p in chunk], self.decoding)
            seconds = (time.perf_counter() - t0) / len(chunk)
            for (s, strategy, msgs, p), c in zip(chunk, results):
                if c.error is not None:
                    self._error(p, c.error)
                    self.failed.add((s.id, strategy))
                    continue
                self.record(s, strategy, turn, msgs, c.text, "model", finish_reason=c.finish_reason, n_tokens=c.n_tokens,
                            seconds=round(seconds, 4), metadata={"prompt_id": p.id})
                self.counts["generated"] += 1

    def _error(self, p: AttackPrompt, error: str) -> None:
        self.counts["errors"] += 1
        self.conv.error({"prompt_id": p.id, "model": self.model, **({"model_id": self.model_id} if self.model_id is not None else {}),
                         "decoding": self.dec, "error": error})


def run_multiturn(
    backend: Backend,
    suite: Suite,
    out_path: str | Path,
    protocol: Protocol | None = None,
    decoding: Decoding | None = None,
    model_name: str | None = None,
    batch_size: int | None = None,
    metadata: dict[str, Any] | None = None,
    model_id: str | None = None,
) -> list[TurnRecord]:
    """Run (or resume) every conversation of ``suite`` x ``protocol.strategies`` for one model.

    ``model_id`` (its identity hash, :func:`derta.backends.spec.model_identity`) is recorded in
    every turn and is part of the resume key: only turns of the same name and identity are reused.

    Returns this model's records (inserted and generated, every turn), in scenario, strategy,
    turn order. Requests that failed for good (API backends with ``on_error="record"``) go to
    ``out_path + ".errors.jsonl"``; their conversation stops there and a rerun continues it.
    """
    protocol = protocol or Protocol()
    decoding = decoding or Decoding()
    protocol.check(suite)
    batch_size = batch_size or getattr(backend, "call_size", None) or 64
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    out_path = Path(out_path)
    model = model_name or backend.name
    dec_id = decoding_id(decoding)

    def conflict(old: TurnRecord) -> ValueError:
        return ValueError(f"{out_path}: the logged conversation {old.scenario}/{old.strategy} turn {old.turn} of model "
                          f"{model!r} differs from the one built now (scenario text, template or protocol changed); "
                          "use a new output directory")

    with KeyedLog(out_path, key=_turn_key, read=read_turns,
                  keep=lambda r: r.model == model and r.model_id == model_id and r.decoding_id == dec_id, conflict=conflict) as conv:
        run = _Run(conv, suite, protocol, model, backend, decoding, model_id)
        conv.start(RECORD_FORMAT, {"model": model, **({"model_id": model_id} if model_id is not None else {}),
                                   "backend": getattr(backend, "name", ""), "decoding": decoding.to_dict(),
                                   "decoding_id": dec_id, "seed": decoding.seed, "batch_size": batch_size, "suite": suite.info(),
                                   "protocol": protocol.info()}, metadata, finish=lambda: {"counts": run.counts})
        for turn in range(1, protocol.turns + 2):
            run.step(turn, batch_size)
    if run.counts["errors"]:
        log.warning("%s: %d requests failed (see %s%s); rerun to continue those conversations", out_path, run.counts["errors"], out_path, ERRORS_SUFFIX)
    order = {(s.id, st): i for i, (s, st) in enumerate((s, st) for s in suite.scenarios for st in protocol.strategies)}
    mine = [r for (sid, st, _), r in run.done.items() if (sid, st) in order]
    return sorted(mine, key=lambda r: (order[(r.scenario, r.strategy)], r.turn))
