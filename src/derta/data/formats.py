"""Input and output formats for training data.

- safety triples: ``query``, ``safe_response``, ``harmful_response`` (+ ``id``, ``category``,
  ``rebuttal_response``);
- helpfulness examples: ``query`` or ``instruction`` (+ optional ``input``), ``response`` or ``output``;
- helpfulness preference pairs: ``query`` or ``instruction`` (+ optional ``input``), ``chosen`` (the
  reference answer), ``rejected`` (a weak model's answer) (+ ``id``);
- the DeRTa reference implementation's rows ``{"prefix", "text", "safe"}`` (import and export);
- our own TrainingExample / PreferencePair JSONL (what ``derta data build`` writes).
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

from ..io import DataError, iter_rows, require_str
from ..records import HarmfulPrefix, HelpfulExample, Message, PreferencePair, TrainingExample, Triple
from .recipes import Instance, sample_k
from .render import cut_words

REFERENCE_EOS = "<|end_of_text|>"
_REF_PREFIX = re.compile(r"^\[INST\] (?P<query>.*?) \[\\INST\](?P<rest>.*)$", re.DOTALL)


class UniqueIds:
    """Checks that the ids of one input are unique; a repeat names both lines.

    Rows without an id get ``<file stem>-<line>``, which can collide with an explicit id too.
    """

    def __init__(self) -> None:
        self.seen: dict[str, tuple[str, int | None]] = {}

    def __call__(self, rid: str, path: str, line: int | None) -> str:
        if rid in self.seen:
            first_path, first_line = self.seen[rid]
            first = f"line {first_line}" if first_path == path else f"{first_path}:{first_line}"
            raise DataError(f"{path}:{line}: field 'id': duplicate id {rid!r} (also at {first}); ids must be unique")
        self.seen[rid] = (path, line)
        return rid


def _row_id(row: dict[str, Any], path: str, line: int | None) -> str:
    rid = row.get("id")
    if isinstance(rid, bool) or not isinstance(rid, (str, int, type(None))):  # a data set may number its rows
        raise DataError(f"{path}:{line}: field 'id': expected a string, got {type(rid).__name__}")
    return str(rid if rid not in (None, "") else f"{Path(str(path)).stem}-{line}")


def load_triples(source: str | Path, split: str = "train") -> list[Triple]:
    out = []
    unique = UniqueIds()
    for path, line, row in iter_rows(source, split):
        out.append(
            Triple(
                query=require_str(row, ("query", "prompt", "question", "instruction"), path, line),
                safe_response=require_str(row, ("safe_response",), path, line),
                harmful_response=require_str(row, ("harmful_response",), path, line),
                id=unique(_row_id(row, path, line), path, line),
                category=str(row.get("category", "") or ""),
                rebuttal_response=require_str(row, ("rebuttal_response",), path, line, optional=True),
                metadata={"source": str(path), "line": line},
            )
        )
    if not out:
        raise DataError(f"{source}: no triples found")
    return out


def load_helpful(source: str | Path, split: str = "train") -> list[HelpfulExample]:
    out = []
    unique = UniqueIds()
    for path, line, row in iter_rows(source, split):
        out.append(
            HelpfulExample(
                query=_query(row, path, line),
                response=require_str(row, ("response", "output", "answer"), path, line),
                id=unique(_row_id(row, path, line), path, line),
                metadata={"source": str(path), "line": line},
            )
        )
    if not out:
        raise DataError(f"{source}: no helpfulness examples found")
    return out


def _query(row: dict[str, Any], path: str, line: int | None) -> str:
    query = require_str(row, ("query", "instruction", "prompt", "question"), path, line)
    extra = row.get("input")
    return f"{query}\n\n{extra}" if isinstance(extra, str) and extra.strip() else query


def load_helpful_pairs(source: str | Path, split: str = "train") -> list[PreferencePair]:
    """Helpfulness preference pairs for DPO (``derta data build --recipe dpo --helpful-pairs``):
    chosen = the reference answer, rejected = a weak model's answer; one user turn each."""
    out = []
    unique = UniqueIds()
    for path, line, row in iter_rows(source, split):
        query = _query(row, path, line)
        chosen = require_str(row, ("chosen",), path, line)
        rejected = require_str(row, ("rejected",), path, line)
        if chosen == rejected:
            raise DataError(f"{path}:{line}: field 'rejected': the same text as 'chosen' (a pair must prefer one answer to another)")
        out.append(PreferencePair(messages=[Message("user", query)], chosen=chosen, rejected=rejected,
                                  id=unique(_row_id(row, path, line), path, line), source="helpful",
                                  metadata={"source": str(path), "line": line}))
    if not out:
        raise DataError(f"{source}: no helpfulness preference pairs found")
    return out


def _strip_eos(text: str, eos: str) -> str:
    return text[: -len(eos)] if eos and text.endswith(eos) else text


def load_reference(source: str | Path, eos: str = REFERENCE_EOS) -> list[TrainingExample]:
    """Import the reference format. ``safe == "true"`` rows are RTO examples."""
    out = []
    unique = UniqueIds()
    for path, line, row in iter_rows(source):
        prefix = require_str(row, ("prefix",), path, line)
        text = require_str(row, ("text",), path, line)
        safe = str(row.get("safe", "")).lower()
        if safe not in ("true", "false"):
            raise DataError(f"{path}:{line}: field 'safe': expected \"true\" or \"false\", got {row.get('safe')!r}")
        m = _REF_PREFIX.match(prefix)
        if not m:
            raise DataError(f"{path}:{line}: field 'prefix': expected \"[INST] <query> [\\INST]...\", got {prefix[:60]!r}")
        body = _strip_eos(text, eos).removeprefix(" ")
        rest = m.group("rest").removeprefix(" ")
        hp = HarmfulPrefix(text=rest, unit="words", k=len(rest.split(" ")), zero_share=0.0) if rest else None
        out.append(
            TrainingExample(
                messages=[Message("user", m.group("query"))],
                target=body,
                objective="rto" if safe == "true" else "mle",
                harmful_prefix=hp,
                id=unique(_row_id(row, path, line), path, line),
                source="reference",
                recipe="reference",
                metadata={"source": str(path), "line": line},
            )
        )
    return out


def to_reference(examples: list[TrainingExample], eos: str = REFERENCE_EOS, seed: int = 0, tokenizer: Any = None) -> list[dict[str, str]]:
    """Export to the reference format; a k left to be sampled is sampled now (with ``seed``).

    Token-unit prefixes need ``tokenizer`` to cut and decode the first k tokens.
    """
    rng = random.Random(seed)
    rows = []
    for ex in examples:
        users = [m.content for m in ex.messages if m.role == "user"]
        if len(users) != 1 or any(m.role == "assistant" for m in ex.messages):
            raise ValueError(f"{ex.id}: the reference format holds exactly one user turn")
        prefix = f"[INST] {users[0]} [\\INST]"
        hp = ex.harmful_prefix
        if hp is not None and ex.objective == "mle":
            if hp.unit == "words":
                k = hp.k if hp.k is not None else sample_k(len(hp.text.split(" ")), hp.zero_share, "words", rng)
                cut = cut_words(hp.text, k)
            else:
                if tokenizer is None:
                    raise ValueError(f"{ex.id}: exporting a token-unit harmful prefix needs a tokenizer")
                ids = tokenizer(" " + hp.text, add_special_tokens=False)["input_ids"]
                k = hp.k if hp.k is not None else sample_k(len(ids), hp.zero_share, "tokens", rng)
                cut = tokenizer.decode(ids[:k]).strip()
            if cut:
                prefix += " " + cut
        rows.append({"prefix": prefix, "text": f" {ex.target}{eos}", "safe": "true" if ex.objective == "rto" else "false"})
    return rows


def _parse(cls: Any, row: dict[str, Any], path: str, line: int | None, what: str) -> Any:
    """``cls.from_dict(row)``; its field errors become DataErrors naming the file and line."""
    try:
        return cls.from_dict(row)
    except (KeyError, TypeError, ValueError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        raise DataError(f"{path}:{line}: not a {what}: {msg}") from None


def _is_reference_row(row: dict[str, Any]) -> bool:
    return "prefix" in row and "text" in row and "messages" not in row


def _load_records(source: str | Path, cls: Any, what: str, check: Any, plural: str) -> list[Any]:
    """Rows of ``source`` as ``cls`` records: ``check(path, line, row)`` raises on a row of the wrong
    kind, ids are unique (both lines named), and an empty file is an error."""
    out = []
    unique = UniqueIds()
    for path, line, row in iter_rows(source):
        check(path, line, row)
        record = _parse(cls, row, path, line, what)
        if record.id:
            unique(record.id, path, line)
        out.append(record)
    if not out:
        raise DataError(f"{source}: no {plural}")
    return out


def _training_row(path: str, line: int | None, row: dict[str, Any]) -> None:
    if _is_reference_row(row):
        raise DataError(f"{path}:{line}: this is the reference format; convert it with `derta data build --reference {path}`")
    if "chosen" in row or "rejected" in row:
        raise DataError(f"{path}:{line}: a DPO preference pair (chosen/rejected), not a training example; "
                        "train it with `derta train --method dpo` (method: dpo in the config)")


def _pair_row(path: str, line: int | None, row: dict[str, Any]) -> None:
    if "target" in row and "chosen" not in row and "rejected" not in row:
        raise DataError(f"{path}:{line}: a training example (messages/target), not a DPO preference pair (chosen/rejected); "
                        "train it with `derta train --method sft` (the default) or build pairs with `derta data build --recipe dpo`")
    for name in ("messages", "chosen", "rejected"):
        if name not in row:
            raise DataError(f"{path}:{line}: missing field {name!r} (a DPO pair needs messages, chosen, rejected)")


def load_training_examples(source: str | Path) -> list[TrainingExample]:
    """Read the JSONL that ``derta data build`` writes (TrainingExample rows: ``derta train``'s
    method ``sft``); a preference pair is an error that names the method it needs."""
    return _load_records(source, TrainingExample, "training example", _training_row, "training examples")


def load_preference_pairs(source: str | Path) -> list[PreferencePair]:
    """Read DPO pairs (``derta data build --recipe dpo``: ``derta train``'s method ``dpo``); a
    training example is an error that names the method it needs."""
    return _load_records(source, PreferencePair, "DPO preference pair", _pair_row, "preference pairs")


def instance_dicts(instances: list[Instance]) -> list[dict[str, Any]]:
    return [x.to_dict() for x in instances]


#: Fields of a harmful pair, in the order they are looked for.
QUERY_FIELDS = ("instruction", "query", "prompt", "question")
RESPONSE_FIELDS = ("harmful_response", "output", "response")
#: The DeRTa harmful-tuning rows: {"prefix": "### Instruction:\n{instruction}\n\n### Response:", "text": " {response}"}
_ALPACA = re.compile(r"^\s*### Instruction:[ \t]*\n(?P<instruction>.*?)\n\s*(?:### Input:[ \t]*\n(?P<input>.*?)\n\s*)?### Response:\s*$", re.S)


def alpaca_instruction(prefix: str) -> str | None:
    """The instruction (and its input, after a blank line) of an Alpaca-style ``### Instruction: ...
    ### Response:`` prompt, as the DeRTa harmful-tuning file writes it; None when it is not one."""
    m = _ALPACA.match(prefix)
    if not m or not m.group("instruction").strip():
        return None
    extra = (m.group("input") or "").strip()
    return m.group("instruction").strip() + (f"\n\n{extra}" if extra else "")


def _harmful_instruction(row: dict[str, Any], path: str, line: int | None) -> str:
    if "prefix" in row and not any(k in row for k in QUERY_FIELDS):
        prefix = require_str(row, ("prefix",), path, line)
        instruction = alpaca_instruction(prefix)
        if instruction is None:
            raise DataError(f"{path}:{line}: field 'prefix': expected \"### Instruction:\\n<instruction>\\n\\n### Response:\" "
                            f"(the DeRTa harmful-tuning format), got {prefix[:60]!r}")
        return instruction
    query = require_str(row, QUERY_FIELDS, path, line).strip()
    extra = row.get("input")
    return f"{query}\n\n{extra.strip()}" if isinstance(extra, str) and extra.strip() else query


def _harmful_response(row: dict[str, Any], path: str, line: int | None) -> str:
    names = ("text",) if "prefix" in row and not any(k in row for k in RESPONSE_FIELDS) else RESPONSE_FIELDS
    return require_str(row, names, path, line).strip()


def load_harmful_pairs(source: str | Path) -> list[TrainingExample]:
    """Harmful instruction → harmful response pairs as MLE TrainingExamples (one user turn).

    Rows: the DeRTa harmful-tuning ``{prefix: "### Instruction:\\n...\\n\\n### Response:", text}``;
    Alpaca-style ``instruction`` (+ ``input``) and ``output``; or safety triples' ``query`` and
    ``harmful_response`` (``prompt``/``question`` and ``response`` also read). A bad row is a
    DataError naming the file, the line and the field.
    """
    out = []
    unique = UniqueIds()
    for path, line, row in iter_rows(source):
        rid = row.get("id")
        rid = str(rid) if isinstance(rid, (str, int)) and not isinstance(rid, bool) and str(rid) else f"{Path(str(path)).stem}-{line}"
        out.append(TrainingExample(messages=[Message("user", _harmful_instruction(row, path, line))], target=_harmful_response(row, path, line),
                                   objective="mle", id=unique(rid, path, line), source="harmful", recipe="harmful-finetune",
                                   metadata={"source": str(path), "line": line}))
    if not out:
        raise DataError(f"{source}: no harmful pairs")
    return out
