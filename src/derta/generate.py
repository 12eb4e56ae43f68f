"""The generation stage: run a backend over attack prompts into an append-only, resumable log.

Every finished generation is one :class:`~derta.records.Generation` line in ``out_path`` (JSONL,
fsynced), so a long run can be analysed while it runs and resumed after a crash.

Resume key: ``(model, model_id, attack, prompt_id, decoding_id)``, where ``decoding_id`` hashes the
full decoding config (max_new_tokens, temperature, top_p, seed, stop) and ``model_id`` says which
model wrote the record (:func:`derta.backends.spec.model_identity`'s hash, or the caller's own
identity of a model in memory; recorded in each Generation's ``metadata``). A rerun skips prompts
whose key is already in the log, so one log can hold several models, attacks and decoding configs
side by side; changing any of them generates anew. A model whose weights or spec changed under the
same name gets new records appended (the log is never rewritten) and its predecessor's records are
not returned. Records without a ``model_id`` are reused only by callers that give none. A logged
prompt whose content (messages / text / prefill) differs from the prompt now given under the same
key is an error, not a silent reuse.

Alongside the log:

- ``out_path + ".meta.json"``: one entry per run (model, backend, decoding, seed, batch size,
  environment versions, start/finish times, counts, status "complete"/"incomplete"/"interrupted");
- ``out_path + ".errors.jsonl"``: requests that failed for good (API backends with
  ``on_error="record"``). They are NOT in the log, so no failure is ever judged as a response;
  a rerun retries them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .backends.base import Backend, Completion, Decoding, complete
from .io import read_log
from .logs import ERRORS_SUFFIX, META_SUFFIX, KeyedLog
from .records import AttackPrompt, Generation

__all__ = ["ERRORS_SUFFIX", "META_FORMAT", "META_SUFFIX", "decoding_id", "read_generations", "run_generation", "written_by"]

log = logging.getLogger(__name__)

META_FORMAT = "derta.generations/1"


def decoding_id(decoding: Decoding | dict[str, Any]) -> str:
    """A short stable hash of a decoding config (part of the resume key)."""
    d = decoding.to_dict() if isinstance(decoding, Decoding) else Decoding.from_dict(decoding).to_dict()
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


def read_generations(path: str | Path) -> list[Generation]:
    """All records of a generation log, in file order (see :func:`derta.io.read_log`)."""
    return read_log(path, Generation.from_dict, "generation record")


def written_by(g: Generation, model: str, dec_id: str, model_id: str | None) -> bool:
    """Whether a logged record is this model's (its name and identity) under this decoding: the
    records a run resumes from."""
    return g.model == model and g.metadata.get("model_id") == model_id and decoding_id(g.decoding) == dec_id


def _content(prompt: dict[str, Any]) -> dict[str, Any]:
    return {k: prompt.get(k) for k in ("messages", "text", "prefill")}


def _same_prompt(p: AttackPrompt) -> Callable[[Generation], bool]:
    """Whether a logged generation was made from ``p``'s content (messages / text / prefill)."""
    return lambda g: _content(g.prompt) == _content(p.to_dict())


def run_generation(
    backend: Backend,
    prompts: list[AttackPrompt],
    out_path: str | Path,
    model_name: str | None = None,
    decoding: Decoding | None = None,
    batch_size: int | None = None,
    metadata: dict[str, Any] | None = None,
    model_id: str | None = None,
) -> list[Generation]:
    """Generate a response to every prompt not yet in ``out_path``; return all records, in prompt order.

    ``batch_size`` prompts go to the backend per call (it batches further inside) and their records
    are written when the call returns, so at most one call's work is lost to a crash. By default,
    the backend's ``call_size`` if it has one (vLLM wants many prompts at once), else 64.
    ``model_name`` (default ``backend.name``) is the model recorded and used in the resume key, and
    ``model_id`` which model that name stands for now (its identity hash): only records of the
    same name and identity are reused.
    Prompts that failed for good are left out of the result (see the errors sidecar).
    """
    decoding = decoding or Decoding()
    model = model_name or backend.name
    dec, dec_id = decoding.to_dict(), decoding_id(decoding)
    batch_size = batch_size or getattr(backend, "call_size", None) or 64
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    keys = [(p.attack, p.id) for p in prompts]
    if len(set(keys)) != len(keys):
        dup = next(k for k in keys if keys.count(k) > 1)
        raise ValueError(f"prompt id {dup[1]!r} appears twice for attack {dup[0]!r}")

    out_path = Path(out_path)

    def conflict(g: Generation) -> ValueError:
        return ValueError(f"{out_path}: prompt {g.prompt_id!r} ({g.attack}) differs from the one logged under the same id "
                          f"for model {model!r}; use a new output file or new prompt ids")

    # the log's records of this model (name and identity) and decoding, by (attack, prompt id)
    with KeyedLog(out_path, key=lambda g: (g.attack, g.prompt_id), read=read_generations,
                  keep=lambda g: written_by(g, model, dec_id, model_id), conflict=conflict) as done:
        todo = [p for p in prompts if done.logged((p.attack, p.id), same=_same_prompt(p)) is None]
        run = done.start(META_FORMAT, {
            "model": model, **({"model_id": model_id} if model_id is not None else {}), "backend": backend.name,
            "decoding": dec, "decoding_id": dec_id, "seed": decoding.seed,
            "batch_size": batch_size, "n_prompts": len(prompts), "n_reused": len(prompts) - len(todo), "n_generated": 0,
            "n_errors": 0,
        }, metadata)
        if run["n_reused"]:
            log.info("%s: %d of %d prompts already generated; %d to go", out_path, run["n_reused"], len(prompts), len(todo))
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            t0 = time.perf_counter()
            results = complete(backend, batch, decoding)
            seconds = time.perf_counter() - t0
            for p, c in zip(batch, results):
                if c.error is not None:
                    done.error({"prompt_id": p.id, "attack": p.attack, "model": model, **({"model_id": model_id} if model_id is not None else {}),
                                "decoding": dec, "error": c.error})
                    run["n_errors"] += 1
                    continue
                done.append(_record(p, c, model, decoding, backend.name, seconds, len(batch), model_id))
                run["n_generated"] += 1
    if run["n_errors"]:
        log.warning("%s: %d prompts failed (see %s%s); rerun to retry them", out_path, run["n_errors"], out_path, ERRORS_SUFFIX)
    return [done.records[key] for key in keys if key in done]


def _record(p: AttackPrompt, c: Completion, model: str, decoding: Decoding, backend: str, seconds: float, n: int,
            model_id: str | None = None) -> Generation:
    """One Generation; ``seconds`` (the backend call's wall time) is shared among its ``n`` prompts."""
    meta: dict[str, Any] = {"n_generated_tokens": c.n_tokens, "finish_reason": c.finish_reason, "backend": backend,
                            "decoding_id": decoding_id(decoding), "batch_seconds": round(seconds, 4), "batch_size": n}
    if model_id is not None:
        meta["model_id"] = model_id
    if c.token_ids is not None:
        meta["token_ids"] = c.token_ids  # so analyses can find the first refusal token without regenerating
    return Generation(prompt_id=p.id, attack=p.attack, model=model, question=p.question, response=c.text,
                      prompt=p.to_dict(), decoding=decoding.to_dict(), seconds=round(seconds / n, 4),
                      metadata={**c.metadata, **meta})
