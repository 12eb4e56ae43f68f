"""Everything an evaluation sends to a model, as AttackPrompts tagged with their ``kind``.

- ``harmful``: the attacks over the harmful questions (registry attacks, the DeRTa sets' prebuilt
  prompts, the prefilling sweep, PAIR / AutoDAN searched against the model under test);
- ``helpfulness``: GSM8K / MMLU / AlpacaEval items, ``attack`` = the task name;
- ``over_refusal``: benign questions that sound harmful, ``attack`` = "over_refusal".

The kind and the gold answer travel in ``prompt.metadata`` and so reach the generation log.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Any

from ..attacks import PrefillAttack, load_prebuilt, load_questions, make_attack
from ..attacks.questions import HARMFUL_FIELDS
from ..io import DataError, iter_rows, require_str
from ..records import AttackPrompt, Message, Question
from .config import HELPFULNESS_SETS, MODEL_PARAMS, AttackSpec, HelpfulnessSpec, OverRefusalSpec, QuestionsSpec

HARMFUL, HELPFULNESS, OVER_REFUSAL = "harmful", "helpfulness", "over_refusal"
#: Appended to MMLU questions (the DeRTa files hold the question and its options only).
MMLU_INSTRUCTION = "\n\nAnswer with the letter of the correct option (A, B, C or D)."
SEARCH_CACHE = "attack_prompts.jsonl"


def over_refusal_file() -> Path:
    """derta's own set of benign questions that sound harmful (resources/over_refusal.jsonl)."""
    return Path(str(files("derta") / "resources" / "over_refusal.jsonl"))


def _tag(p: AttackPrompt, kind: str, **extra: Any) -> AttackPrompt:
    p.metadata = {**p.metadata, "kind": kind, **extra}
    return p


def load_harmful(q: QuestionsSpec) -> list[Question]:
    if q.file:
        out = load_questions(q.file, split=q.split, limit=q.limit)
    else:
        out = [x for s in q.sets for x in load_questions(q.dir, s, limit=q.limit)]  # type: ignore[arg-type]
    ids = [x.id for x in out]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise DataError(f"questions: id(s) {', '.join(dup[:5])} appear in more than one set")
    if q.harmful_responses:
        out = attach_harmful_responses(out, q.harmful_responses)
    return out


def attach_harmful_responses(questions: list[Question], path: str | Path) -> list[Question]:
    """Fill ``harmful_response`` from a file whose rows name the question by ``id`` or text."""
    by_id: dict[str, str] = {}
    by_text: dict[str, str] = {}
    for src, line, row in iter_rows(path):
        text = require_str(row, HARMFUL_FIELDS + ("response",), src, line)
        if row.get("id") is not None:
            by_id[str(row["id"])] = text
        q = row.get("question") or row.get("prompt")
        if isinstance(q, str):
            by_text[q.strip()] = text
        if row.get("id") is None and not isinstance(q, str):
            raise DataError(f"{src}:{line}: missing field 'id' or 'question' (which question this response belongs to)")
    for q in questions:
        if not q.harmful_response:
            q.harmful_response = by_id.get(q.id) or by_text.get(q.text.strip(), "")
    return questions


def attack_prompts(spec: AttackSpec, questions: list[Question], qspec: QuestionsSpec, backend: Any, model: str, seed: int,
                   run_dir: Path, model_id: str | None = None) -> list[AttackPrompt]:
    """The prompts of one attack for one model.

    Every prefill cut (the prefill attack, random insertion, any attack's ``prefill``) counts the
    model's own tokens. Prebuilt and searched prompts get their prefill once they are loaded or
    found (so one search serves every depth) from the question they belong to (by id, else by
    text), and then their ``samples`` copies."""
    from ..attacks import sample_copies, with_prefill

    def tokenizer() -> Any:  # read only when a cut needs it: it may load files
        return getattr(backend, "tokenizer", None)

    def question_of(p: AttackPrompt) -> Question:
        found = next((q for q in questions if q.id == p.question_id), None) or next((q for q in questions if q.text.strip() == p.question.strip()), None)
        if found is None:
            raise ValueError(f"prompt {p.id!r} matches no question by id or text, so it has no harmful_response to prefill from")
        return found

    try:
        if spec.prebuilt or spec.searched:
            if spec.prebuilt:
                prompts = load_prebuilt(qspec.dir, spec.base, limit=qspec.limit)  # type: ignore[arg-type]
            else:
                prompts = searched_prompts(spec.unprefilled, questions, backend, model, seed, run_dir / SEARCH_CACHE, model_id)
            if spec.prefill:
                tok = tokenizer()
                prompts = [with_prefill(p, question_of(p), spec.prefill, tok) for p in prompts]
            prompts = [s for p in prompts for s in sample_copies(p, spec.samples)]
        elif spec.base == "prefill":
            prompts = PrefillAttack(seed=seed, tokenizer=tokenizer(), **spec.params)(questions)
        elif spec.base == "random-insertion":
            prompts = make_attack(spec.base, **{"seed": seed, **spec.params, "tokenizer": tokenizer()})(questions)
        else:
            extra = {"prefill_tokenizer": tokenizer()} if spec.prefill else {}
            prompts = make_attack(spec.base, **{"seed": seed, **spec.params, **extra})(questions)
    except ValueError as e:
        if "harmful_response" not in str(e):
            raise
        raise ValueError(f"{spec.label}: {e}; or set questions.harmful_responses to a file of harmful responses") from None
    return [_tag(p, HARMFUL) for p in prompts]


def searched_prompts(spec: AttackSpec, questions: list[Question], backend: Any, model: str, seed: int, cache: Path,
                     model_id: str | None = None) -> list[AttackPrompt]:
    """PAIR / AutoDAN / GCG / Crescendo search one question at a time against ``backend`` (the
    model under evaluation, their ``target``); each result is logged, so a rerun resumes.

    A result is reused only for the same target (``model`` and ``model_id``: a model changed
    under the same name is searched again), attack settings and seed. Model parameters (attacker,
    mutator, scorer) are backend specs loaded here; a scorer becomes PAIR's 1-10 rating. AutoDAN
    with the white-box loss fitness (the default for an in-process HF target) scores with the
    target itself, so a scorer given for it is not loaded."""
    from ..attacks import llm_scorer
    from ..attacks.whitebox import white_box
    from ..backends import load_backend
    from ..judges.base import canonical_json
    from ..judges.llm import prompt_sha
    from ..logs import KeyedLog

    settings = prompt_sha(canonical_json({"params": spec.params, "seed": seed}))

    def key(row: dict[str, Any]) -> tuple[Any, ...]:
        return row["model"], row.get("model_id"), row["attack"], row.get("settings"), row["prompt"]["id"]

    with KeyedLog(cache, key=key) as log:
        wanted = [(model, model_id, spec.label, settings, f"{spec.label}:{q.id}") for q in questions]
        todo = [q for q, k in zip(questions, wanted) if log.logged(k) is None]
        if todo:
            params: dict[str, Any] = {"seed": seed, **spec.params, "target": backend}
            if spec.base == "autodan" and params.get("fitness", "loss" if white_box(backend) else "judge") == "loss":
                params.pop("scorer", None)
            for p in MODEL_PARAMS[spec.base]:
                if p in params:
                    model_backend = load_backend(params[p])
                    params[p] = llm_scorer(model_backend) if p == "scorer" else model_backend
            attack = make_attack(spec.base, **params)
            for q in todo:
                p = attack.attack_one(q)
                log.append({"model": model, "model_id": model_id, "attack": spec.label, "settings": settings, "prompt": p.to_dict()})
        return [AttackPrompt.from_dict(log.records[k]["prompt"]) for k in wanted]


def helpfulness_prompts(h: HelpfulnessSpec) -> list[AttackPrompt]:
    out = []
    for task in h.sets:
        source: Any = h.files.get(task)
        qs = load_questions(source, limit=h.limit) if source else load_questions(h.dir, HELPFULNESS_SETS[task], limit=h.limit)  # type: ignore[arg-type]
        for q in qs:
            text = q.text + (MMLU_INSTRUCTION if task == "mmlu" else "")
            p = AttackPrompt(id=f"{task}:{q.id}", question=q.text, attack=task, messages=[Message("user", text)], question_id=q.id)
            out.append(_tag(p, HELPFULNESS, task=task, answer=q.answer))
    return out


def over_refusal_prompts(o: OverRefusalSpec) -> list[AttackPrompt]:
    """The prompts of the configured over-refusal sets, in the order listed: ``own`` (derta's set or
    ``o.file``, attack "over_refusal") and ``xstest`` (:func:`xstest_prompts`)."""
    if not o.enabled:
        return []
    out: list[AttackPrompt] = []
    for name in o.sets:
        if name == "xstest":
            out += xstest_prompts(o)
            continue
        qs = load_questions(o.file or over_refusal_file(), limit=o.limit)
        out += [_tag(AttackPrompt(id=f"over_refusal:{q.id}", question=q.text, attack=OVER_REFUSAL, messages=[Message("user", q.text)],
                                  question_id=q.id), OVER_REFUSAL, category=q.category) for q in qs]
    return out


def load_references(path: str | Path) -> tuple[dict[str, str], dict[str, str]]:
    """AlpacaEval reference answers by id and by instruction text."""
    by_id: dict[str, str] = {}
    by_text: dict[str, str] = {}
    for src, line, row in iter_rows(path):
        answer = require_str(row, ("output", "response", "reference", "answer"), src, line)
        if row.get("id") is not None:
            by_id[str(row["id"])] = answer
        text = row.get("instruction") or row.get("question") or row.get("prompt")
        if isinstance(text, str):
            by_text[text.strip()] = answer
    if not by_id and not by_text:
        raise DataError(f"{path}: no reference answers found")
    return by_id, by_text


def xstest_prompts(o: OverRefusalSpec) -> list[AttackPrompt]:
    """XSTest's prompts (:func:`derta.eval.xstest.load_xstest`) as over-refusal prompts of attack
    "xstest": ``category`` is the XSTest type, ``label`` safe | unsafe; ``params`` name the file,
    its pinned commit and sha256, and the limit."""
    from ..data.sources import SOURCES, XSTEST_COMMIT
    from .xstest import XSTEST_ATTACK, XSTEST_FILE, load_xstest

    params = {"set": XSTEST_ATTACK, "file": XSTEST_FILE, "commit": XSTEST_COMMIT, "sha256": SOURCES[XSTEST_FILE].sha256, "limit": o.limit}
    return [_tag(AttackPrompt(id=f"{XSTEST_ATTACK}:{p.id}", question=p.prompt, attack=XSTEST_ATTACK, messages=[Message("user", p.prompt)],
                              params=dict(params), question_id=p.id), OVER_REFUSAL, category=p.type, label=p.label, focus=p.focus, note=p.note)
            for p in load_xstest(o.data_dir, limit=o.limit)]
