"""Generation backends: one protocol (:class:`Backend`), heavy implementations imported lazily."""

from .base import (
    BACKENDS,
    Backend,
    BackendError,
    Completion,
    Decoding,
    ScriptedBackend,
    complete,
    load_backend,
    register_backend,
)

#: One line per built-in backend kind (``derta list backends``), written here so that listing them
#: imports no heavy module.
DESCRIPTIONS = {
    "hf": "hf:PATH_OR_NAME: Hugging Face transformers in this process, batched, the chat template or a plain one",
    "vllm": "vllm:PATH_OR_NAME: vLLM in this process (pip install derta[vllm]), same prompts as hf",
    "openai": "openai:MODEL: an OpenAI-compatible API (hosted, vllm serve, derta serve); base_url, api_key_env",
    "scripted": "scripted or scripted:FILE.jsonl: fixed answers (per prompt id, or a default), for tests and dry runs",
}

__all__ = [
    "BACKENDS", "DESCRIPTIONS", "Backend", "BackendError", "Completion", "Decoding", "ScriptedBackend",
    "complete", "load_backend", "register_backend",
]
