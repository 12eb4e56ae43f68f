"""What model judges share: their model, their identity, their options, and defanged input.

- :class:`ModelRef` is a judge's model named by its backend spec (``hf:PATH``, ``vllm:NAME``,
  ``openai:NAME``) and loaded on first use, so a judge can be built, named and keyed (see
  :func:`derta.judges.base.judge_key`) without loading weights, and a resumed run whose verdicts
  are all logged never loads its judge.
- :class:`ModelJudge` is the base of every model judge: backend, greedy decoding, name, identity.
- :func:`split_options` splits a judge's ``options`` into the judge's own parameters, its decoding
  (``max_new_tokens``) and the backend's keyword arguments.
- :func:`defang` breaks chat-template and special-token markers inside judged text. Classifier
  formats are kept verbatim (the weights were trained on them), so the judged text cannot be fenced;
  but "<|eot_id|>" or "[/INST]" written by an attack output would otherwise be read as the format's
  own structure (tokenizers parse special-token strings inside text).
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import re
from pathlib import Path
from typing import Any, Callable

from ..backends.base import Decoding, free_memory
from ..backends.spec import RUNTIME_OPTIONS, content_fingerprint  # runtime options: left out of a judge's identity
from ..records import AttackPrompt



def prompt_sha(prompt: str) -> str:
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:16]


def _revision(spec: str) -> str | None:
    """What the weights behind a local ``hf:``/``vllm:`` spec are, where that is known without loading.

    A directory: the hash of its content (:func:`derta.backends.spec.content_fingerprint`: a
    retrained checkpoint saved to the same path changes it; touching or moving the files does not).
    A hub id: the commit the local cache resolves ``main`` to.
    """
    kind, _, arg = spec.partition(":")
    if kind not in ("hf", "vllm") or not arg:
        return None
    path = Path(arg).expanduser()
    if path.is_dir():
        return "files:" + content_fingerprint(path)["sha256"][:16]
    try:
        from huggingface_hub.constants import HF_HUB_CACHE
    except ImportError:
        return None
    ref = Path(HF_HUB_CACHE) / f"models--{arg.replace('/', '--')}" / "refs" / "main"
    return ref.read_text(encoding="utf-8").strip() if ref.is_file() else None


def _load(spec: str, options: dict[str, Any]) -> Any:
    from .. import backends  # looked up at call time: tests and tools may swap load_backend

    return backends.load_backend(spec, **options)


class ModelRef:
    """A judge's model: a backend spec and its options, loaded on the first request."""

    def __init__(self, spec: str, options: dict[str, Any] | None = None, loader: Callable[[str, dict[str, Any]], Any] | None = None):
        self.spec, self.options = spec, dict(options or {})
        self._loader = loader or _load
        self._backend: Any = None

    @property
    def loaded(self) -> Any:
        if self._backend is None:
            self._backend = self._loader(self.spec, self.options)
        return self._backend

    @property
    def name(self) -> str:
        if self._backend is not None:
            return str(getattr(self._backend, "name", self.spec))
        return str(self.options.get("name") or self.spec)

    @property
    def identity(self) -> dict[str, Any]:
        opts = {k: v for k, v in sorted(self.options.items()) if k not in RUNTIME_OPTIONS}
        return {"spec": self.spec, "revision": _revision(self.spec), "options": opts}

    def generate(self, prompts: list[AttackPrompt], decoding: Decoding | None = None) -> list[str]:
        return self.loaded.generate(prompts, decoding)

    def free(self) -> None:
        """Drop the loaded model (the next request loads it again)."""
        backend, self._backend = self._backend, None
        if backend is None:
            return
        del backend
        free_memory()


def model_identity(backend: Any) -> dict[str, Any]:
    """A backend's identity: its own (a ModelRef's), else what its attributes tell."""
    ident = getattr(backend, "identity", None)
    if isinstance(ident, dict):
        return ident
    out: dict[str, Any] = {"name": str(getattr(backend, "name", type(backend).__name__))}
    for attr in ("base_url", "template"):
        value = getattr(backend, attr, None)
        if isinstance(value, str):
            out[attr] = value
    model = getattr(backend, "model", None)
    cfg = getattr(model, "config", None)
    if isinstance(model, str):
        out["model"] = model
    elif cfg is not None:  # an in-memory transformers model
        out["path"] = str(getattr(cfg, "_name_or_path", "") or "")
        out["revision"] = getattr(cfg, "_commit_hash", None)
    return out


class ModelJudge:
    """Base of the model judges: ``backend`` + greedy ``decoding``; ``name`` is ``KIND:MODEL``.

    Subclasses set ``kind`` (the registry name), ``version`` (bumped whenever rendering or parsing
    changes, so old verdicts are not reused), ``default_decoding`` and ``templates`` (every prompt
    text the judge may render; their hash is part of the identity).
    """

    kind = "model"
    version = "1"
    default_decoding = Decoding(max_new_tokens=512, temperature=0.0)
    templates: tuple[str, ...] = ()

    def __init__(self, backend: Any, decoding: Decoding | None = None):
        self.backend = backend
        self.decoding = decoding or self.default_decoding
        self.name = f"{self.kind}:{getattr(backend, 'name', 'model')}"
        self.prompt_sha = prompt_sha(self.templates[0]) if self.templates else ""

    def options(self) -> dict[str, Any]:
        """The judge's own settings that change its verdicts (recorded in its identity)."""
        return {}

    @property
    def identity(self) -> dict[str, Any]:
        return {
            "name": self.name, "kind": self.kind, "version": self.version, "model": model_identity(self.backend),
            "prompt_sha256": self.prompt_sha, "templates_sha256": prompt_sha("\x00".join(self.templates)),
            "options": {"decoding": self.decoding.to_dict(), **self.options()},
        }

    def ask(self, asks: list[AttackPrompt]) -> list[str]:
        outs = self.backend.generate(asks, self.decoding)
        if len(outs) != len(asks):
            raise RuntimeError(f"judge backend returned {len(outs)} outputs for {len(asks)} prompts")
        return [o or "" for o in outs]

    def free(self) -> None:
        free = getattr(self.backend, "free", None)
        if callable(free):
            free()


def judge_params(factory: Any) -> set[str]:
    """The keyword parameters a judge factory takes, besides ``backend`` and ``decoding``."""
    sig = inspect.signature(factory)
    return {n for n, p in sig.parameters.items() if n not in ("self", "backend", "decoding")
            and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def split_options(factory: Any, options: dict[str, Any]) -> tuple[dict[str, Any], Decoding | None, dict[str, Any]]:
    """(judge keyword arguments, decoding or None for the judge's default, backend keyword arguments)."""
    params = judge_params(factory)
    judge_kw = {k: v for k, v in options.items() if k in params}
    backend_kw = {k: v for k, v in options.items() if k not in params and k != "max_new_tokens"}
    decoding = None
    if "max_new_tokens" in options:
        base = getattr(factory, "default_decoding", None) or Decoding(temperature=0.0)
        decoding = dataclasses.replace(base, max_new_tokens=int(options["max_new_tokens"]))
    return judge_kw, decoding, backend_kw


_MARKER = re.compile(
    r"<\|[^|<>\n]{1,64}\|>"  # <|eot_id|>, <|im_start|>, <|user|>, <|assistant|>
    r"|</?s>|\[/?INST\]|<</?SYS>>|<(?:start|end)_of_turn>"  # Llama-2 / Mistral / Gemma
    r"|<(?:BEGIN|END) [A-Z ]{3,40}>"  # Llama Guard's <END CONVERSATION> and its category block
    r"|^\s*#\s*(?:scores|overall_reasoning)\b",  # StrongREJECT's answer sections
    re.M,
)


def defang(text: str) -> str:
    """``text`` with chat-format markers broken ("<|eot_id|>" -> "‹|eot_id|›", "[/INST]" -> "(/INST)")."""
    table = str.maketrans({"<": "‹", ">": "›", "[": "(", "]": ")", "#": "-"})
    return _MARKER.sub(lambda m: m.group(0).translate(table), text or "")
