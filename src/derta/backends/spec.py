"""The ``models:`` list of a config file, the same for ``derta eval`` and ``derta deception run``.

Each entry is one of::

    hf:./out/derta                      # a backend spec; the model is named after it
    derta=hf:./out/derta                # NAME=SPEC
    {name: derta, spec: hf:./out/derta, template: chat, options: {batch_size: 16}}

In a mapping, ``args`` is another name for ``options`` (the backend's keyword arguments), and the
common options (``base_url``, ``batch_size``, ...) may also sit beside ``spec``.

:func:`model_identity` says what would generate (backend kind and spec, template, the options that
change outputs and, for a local checkpoint, a fingerprint of its files); :func:`identity_id` is its
short hash, which the generation logs record and resume by (a model changed under the same name
generates anew).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from ..io import is_secret_key

#: Backend options that may be written beside ``spec`` instead of under ``options``.
SHORT_OPTIONS = ("base_url", "api_key_env", "batch_size", "max_concurrency", "dtype", "device", "tensor_parallel_size")
MODEL_KEYS = ("name", "spec", "template", "options", "args")
#: Options that change how fast, where or how robustly a model answers, not what it answers: left
#: out of a model's identity (a larger batch reuses a run's generations).
RUNTIME_OPTIONS = frozenset({
    "progress", "batch_size", "max_concurrency", "max_retries", "timeout", "backoff", "max_backoff", "on_error",
    "gpu_memory_utilization", "tensor_parallel_size", "device", "name", "max_tokens_field", "api_key_env", "check_model", "token_budget",
})
#: Backend kinds whose argument may be a local checkpoint (or answer file) to fingerprint.
LOCAL_KINDS = ("hf", "vllm", "scripted")
#: Files of a checkpoint folder that make up the model: weights, adapters, configs, tokenizers.
MODEL_FILE_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf", ".json", ".jsonl", ".model", ".txt", ".jinja",
                       ".tiktoken", ".py")
#: Files under this size are hashed whole; larger ones by their size and their first and last MiB.
SMALL_FILE = 8 << 20
_EDGE = 1 << 20


class ModelListError(ValueError):
    """A bad ``models:`` entry; ``key`` says which (``models[1].spec``)."""

    def __init__(self, key: str, msg: str):
        super().__init__(f"{key}: {msg}")
        self.key, self.msg = key, msg


@dataclass
class ModelSpec:
    """A model to run: ``spec`` is a backend spec (``hf:PATH``, ``vllm:NAME``, ``openai:NAME``)."""

    name: str
    spec: str
    template: str | None = None
    options: dict[str, Any] = field(default_factory=dict)  # backend keyword arguments (base_url, api_key_env, batch_size, ...)

    def backend_kwargs(self) -> dict[str, Any]:
        """What ``load_backend(spec, **kwargs)`` takes: the options, and the template when set."""
        return {**self.options, **({"template": self.template} if self.template is not None else {})}

    def identity(self) -> dict[str, Any]:
        """What this entry would generate with (:func:`model_identity`)."""
        return model_identity(self.spec, self.options, self.template)


def _file_entry(path: Path, name: str) -> dict[str, Any]:
    """A file's name, size and sha256: of all of it when small, else of its first and last MiB
    (cheap on multi-GB weights, and a retrained checkpoint differs there too)."""
    size = path.stat().st_size
    h = hashlib.sha256()
    with path.open("rb") as f:
        if size < SMALL_FILE:
            h.update(f.read())
        else:
            h.update(f.read(_EDGE))
            f.seek(size - _EDGE)
            h.update(f.read(_EDGE))
    return {"name": name, "size": size, ("sha256" if size < SMALL_FILE else "edges_sha256"): h.hexdigest()}


def content_fingerprint(path: str | Path) -> dict[str, Any]:
    """What a local checkpoint is made of, whatever its folder or modification times.

    A folder: its top-level weight / adapter / config / tokenizer files (:data:`MODEL_FILE_SUFFIXES`;
    ``from_pretrained`` reads no others), each by :func:`_file_entry`; a file: that file alone.
    ``sha256`` hashes the list.
    """
    path = Path(path)
    if path.is_dir():
        files = [_file_entry(f, f.name) for f in sorted(path.iterdir(), key=lambda f: f.name)
                 if f.is_file() and f.suffix in MODEL_FILE_SUFFIXES and not f.name.startswith(".")]
    else:
        files = [_file_entry(path, path.name)]
    return {"sha256": hashlib.sha256(_canonical(files).encode()).hexdigest(), "files": files}


def output_options(options: dict[str, Any] | None) -> dict[str, Any]:
    """The backend options that change what a model answers: no runtime settings, no secrets."""
    return {k: v for k, v in sorted((options or {}).items()) if k not in RUNTIME_OPTIONS and not is_secret_key(k)}


def local_path(spec: str) -> Path | None:
    """The local file or folder a ``hf:`` / ``vllm:`` (or ``scripted:FILE``) spec loads, if it exists."""
    kind, _, arg = spec.partition(":")
    if kind not in LOCAL_KINDS or not arg:
        return None
    path = Path(arg).expanduser()
    return path if path.exists() else None


def model_identity(spec: str, options: dict[str, Any] | None = None, template: str | None = None) -> dict[str, Any]:
    """What would generate: the backend kind and spec, the template, the options that change
    outputs (:func:`output_options`) and, for a local checkpoint, its ``content``
    (:func:`content_fingerprint`). A hub name is identified by its name (and a ``revision`` option
    when one is given)."""
    ident: dict[str, Any] = {"kind": spec.partition(":")[0], "spec": spec, "template": template, "options": output_options(options)}
    path = local_path(spec)
    if path is not None:
        ident["content"] = content_fingerprint(path)
    return ident


def identity_id(identity: dict[str, Any]) -> str:
    """The short hash of an identity (16 hex digits). A local checkpoint is its content, not its
    path: a moved folder is the same model, a folder overwritten with other weights is another."""
    keyed = {k: v for k, v in identity.items() if not (k == "spec" and "content" in identity)}
    return hashlib.sha256(_canonical(keyed).encode()).hexdigest()[:16]


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def _text(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ModelListError(key, f"expected a non-empty string, got {value!r}")
    return value


def _options(value: Any, key: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ModelListError(key, f"expected a mapping, got {type(value).__name__}")
    return dict(value)


def split_name(text: str) -> tuple[str, str]:
    """``"NAME=SPEC"`` -> (NAME, SPEC); a plain spec is its own name. A NAME holds no ":", so a
    spec whose path holds "=" (``hf:/runs/lr=1e-4``) stays whole."""
    name, sep, spec = text.partition("=")
    if sep and name.strip() and ":" not in name and spec.strip():
        return name.strip(), spec.strip()
    return text, text


def parse_model(item: Any, i: int, kinds: Iterable[str] | None = None) -> ModelSpec:
    """One entry of ``models:``; with ``kinds``, the spec's backend kind must be one of them."""
    key = f"models[{i}]"
    if isinstance(item, str):
        name, spec = split_name(_text(item, key))
        out = ModelSpec(name=name, spec=spec)
    elif isinstance(item, dict):
        data = dict(item)
        extra = sorted(set(data) - set(MODEL_KEYS + SHORT_OPTIONS))
        if extra:
            raise ModelListError(key, f"unknown key(s) {', '.join(map(repr, extra))}; allowed: {', '.join(MODEL_KEYS + SHORT_OPTIONS)}")
        if "spec" not in data:
            raise ModelListError(key, "missing 'spec' (a backend spec such as hf:PATH, vllm:NAME or openai:NAME)")
        if "options" in data and "args" in data:
            raise ModelListError(key, "give 'options' or 'args' (the same thing), not both")
        opts = _options(data.get("options", data.get("args")), f"{key}.{'args' if 'args' in data else 'options'}")
        opts.update({k: v for k, v in data.items() if k in SHORT_OPTIONS})
        spec = _text(data["spec"], f"{key}.spec")
        template = data.get("template")
        name = data.get("name")
        out = ModelSpec(name=spec if name is None else _text(name, f"{key}.name"), spec=spec,
                        template=None if template is None else _text(template, f"{key}.template"), options=opts)
    else:
        raise ModelListError(key, f"expected a backend spec string (SPEC or NAME=SPEC) or a mapping with 'spec', got {item!r}")
    if kinds is not None:
        kind, known = out.spec.partition(":")[0], sorted(kinds)
        if kind not in known:
            raise ModelListError(f"{key}.spec", f"unknown backend {kind!r} in {out.spec!r}; expected one of {', '.join(known)}")
    return out


def parse_models(items: Any, kinds: Iterable[str] | None = None) -> list[ModelSpec]:
    """The whole ``models:`` list: at least one entry, each name used once."""
    if not isinstance(items, list) or not items:
        raise ModelListError("models", "list at least one model: a backend spec (hf:PATH, openai:NAME), NAME=SPEC or {name, spec}")
    out = [parse_model(m, i, kinds) for i, m in enumerate(items)]
    names = [m.name for m in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ModelListError("models", f"model name(s) used twice: {', '.join(dup)}; give each a distinct name (NAME=SPEC or name:)")
    return out
