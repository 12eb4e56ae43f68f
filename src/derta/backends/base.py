"""One backend protocol for generation: a batch of AttackPrompts in, the new text of each out.

A backend returns only the text the model generated, never the prompt or the ``prefill``. How a
prompt is rendered:

- ``prompt.messages``: the model's chat template with the generation prompt, then ``prefill`` as
  the start of the assistant turn (the prefilling attack);
- ``prompt.text``: a raw prompt fed as-is (BOS + text), no chat template (CompletingAttack).

Backends are registered by name and imported only when used, so ``vllm`` and ``openai`` stay
optional: ``load_backend("hf:PATH")``, ``load_backend("vllm:PATH")``,
``load_backend("openai:MODEL", base_url=...)``, ``load_backend("scripted", outputs={...})``.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from ..records import AttackPrompt


class BackendError(RuntimeError):
    """A generation request failed for good (after any retries); the message names the prompt."""


@dataclass(frozen=True)
class Decoding:
    """How to decode. Greedy by default (``temperature`` 0); ``seed`` makes sampling repeatable."""

    max_new_tokens: int = 512
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = 0
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "stop", tuple(self.stop))
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "stop": list(self.stop)}

    def for_sample(self, metadata: dict[str, Any]) -> "Decoding":
        """This decoding for one of k samples of a prompt (``metadata["sample"]`` = i, set by an
        attack's ``samples``): the seed moves by i, so seeded backends draw k different answers."""
        i = metadata.get("sample")
        if self.greedy or self.seed is None or not isinstance(i, int) or i == 0:
            return self
        return dataclasses.replace(self, seed=self.seed + i)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Decoding":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class Completion:
    """One backend result, richer than the text alone.

    ``token_ids`` are the generated ids (no prompt, no prefill, no end-of-turn token) where the
    backend knows them, so analyses can find the first refusal *token*; ``n_tokens`` is their count
    (from ``usage`` for API backends). ``finish_reason``: "stop" (end of turn or a stop string),
    "length" (hit ``max_new_tokens``) or "error" (then ``error`` says why and ``text`` is empty).
    """

    text: str
    token_ids: list[int] | None = None
    n_tokens: int | None = None
    finish_reason: str = ""
    error: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Backend(Protocol):
    """What every generation backend provides: batch in, batch out, in input order.

    Optional extras that the rest of derta uses when present: ``complete(prompts, decoding) ->
    list[Completion]`` (token ids, counts, finish reasons, errors; see :func:`complete`) and
    ``call_size`` (how many prompts per call suit the backend).
    """

    name: str

    def generate(self, prompts: list[AttackPrompt], decoding: Decoding | None = None) -> list[str]: ...


def complete(backend: Backend, prompts: list[AttackPrompt], decoding: Decoding | None = None) -> list[Completion]:
    """``backend.complete`` when the backend has it, else its plain texts wrapped as Completions."""
    if hasattr(backend, "complete"):
        out = backend.complete(prompts, decoding)  # type: ignore[attr-defined]
    else:
        out = [Completion(text=t) for t in backend.generate(prompts, decoding)]
    if len(out) != len(prompts):
        raise BackendError(f"backend {backend.name!r} returned {len(out)} results for {len(prompts)} prompts")
    return out


def cut_at_stop(text: str, stop: tuple[str, ...] | list[str]) -> tuple[str, bool]:
    """``text`` up to (not including) the earliest stop string, and whether one was found."""
    cuts = [i for i in (text.find(s) for s in stop if s) if i >= 0]
    return (text[: min(cuts)], True) if cuts else (text, False)


def check_prompt(prompt: AttackPrompt) -> None:
    if (prompt.messages is None) == (prompt.text is None):
        raise ValueError(f"prompt {prompt.id!r}: set exactly one of 'messages' or 'text'")


class ScriptedBackend:
    """Canned outputs, for tests and demos.

    ``outputs`` maps a prompt id (or, failing that, the question text) to the response, or is a
    callable ``prompt -> str | Completion`` (it may raise, e.g. to simulate a crash). ``default``
    answers prompts that are not in the map; without it an unknown prompt is an error. Every call
    is recorded in ``calls`` (the prompt ids of each batch).
    """

    def __init__(
        self,
        outputs: dict[str, str] | Callable[[AttackPrompt], str | Completion] | None = None,
        default: str | None = None,
        name: str = "scripted",
    ):
        self.outputs = outputs if outputs is not None else {}
        self.default = default
        self.name = name
        self.calls: list[list[str]] = []

    def _one(self, prompt: AttackPrompt, decoding: Decoding) -> Completion:
        if callable(self.outputs):
            out = self.outputs(prompt)
        elif prompt.id in self.outputs:
            out = self.outputs[prompt.id]
        elif prompt.question in self.outputs:
            out = self.outputs[prompt.question]
        elif self.default is not None:
            out = self.default
        else:
            raise KeyError(f"scripted backend has no output for prompt {prompt.id!r} and no default")
        if isinstance(out, Completion):
            return out
        text, _ = cut_at_stop(out, decoding.stop)
        return Completion(text=text, finish_reason="stop")

    def complete(self, prompts: list[AttackPrompt], decoding: Decoding | None = None) -> list[Completion]:
        decoding = decoding or Decoding()
        self.calls.append([p.id for p in prompts])
        return [self._one(p, decoding) for p in prompts]

    def generate(self, prompts: list[AttackPrompt], decoding: Decoding | None = None) -> list[str]:
        return [c.text for c in self.complete(prompts, decoding)]


def _scripted(arg: str = "", **kw: Any) -> ScriptedBackend:
    """``scripted`` or ``scripted:FILE.jsonl`` (rows with ``prompt_id``/``id`` and ``response``)."""
    if arg:
        from ..io import read_jsonl

        rows = read_jsonl(arg)
        kw.setdefault("outputs", {str(r.get("prompt_id", r.get("id"))): str(r["response"]) for r in rows})
    return ScriptedBackend(**kw)


# kind -> "module:callable"; the callable is called as factory(ARG, **kwargs) for spec "kind:ARG".
BACKENDS: dict[str, str | Callable[..., Any]] = {
    "hf": "derta.backends.hf:HFBackend",
    "vllm": "derta.backends.vllm:VLLMBackend",
    "openai": "derta.backends.openai_api:OpenAIBackend",
    "scripted": "derta.backends.base:_scripted",
}


def register_backend(kind: str, factory: str | Callable[..., Any]) -> None:
    """Add a backend kind: a factory or a lazy ``"module:callable"`` taking ``(arg, **kwargs)``."""
    BACKENDS[kind] = factory


def load_backend(spec: str, **kwargs: Any) -> Backend:
    """Build a backend from ``KIND:ARG`` (e.g. ``hf:./out/model``, ``openai:gpt-4o-mini``)."""
    kind, _, arg = spec.partition(":")
    if kind not in BACKENDS:
        raise ValueError(f"unknown backend {spec!r}: expected KIND:MODEL with KIND one of {', '.join(sorted(BACKENDS))}")
    if not arg and kind not in ("scripted",):
        raise ValueError(f"backend spec {spec!r} names no model: use {kind}:PATH_OR_NAME")
    factory = BACKENDS[kind]
    if isinstance(factory, str):
        module, _, attr = factory.partition(":")
        factory = getattr(importlib.import_module(module), attr)
    return factory(arg, **kwargs) if arg else factory(**kwargs)


def free_memory() -> None:
    """Give back what a dropped model held: Python garbage, and the CUDA cache when torch is in use
    (torch is not imported for this: a run that never loaded it has nothing to free)."""
    import gc
    import sys

    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
