"""OpenAI-compatible API backend (the official ``openai`` client; ``pip install derta[openai]``).

- ``messages`` prompts go to ``chat.completions``; a ``prefill`` is sent as a final assistant
  message with ``extra_body={"continue_final_message": True, "add_generation_prompt": False}``,
  which vLLM's and ``derta.serve``'s servers honour (the reply is the continuation only). Hosted
  APIs (api.openai.com and most others) do not support prefilling: they reject the extra fields or
  answer a new turn, so prefilling results from them are not comparable.
- ``text`` prompts go to the legacy ``completions`` endpoint, raw (no chat template on the server).

Requests run in a thread pool of ``max_concurrency`` and come back in input order. Retries are
ours, not the client's (it is built with ``max_retries=0``): up to ``max_retries`` more tries on
429, 408, 409, 5xx, timeouts and connection errors, waiting ``backoff * 2**attempt`` seconds
(capped at ``max_backoff``, at least the server's ``Retry-After``) times a random factor in
[0.5, 1] so that clients do not retry in lockstep. Other errors (400, 401, 404, ...) are final.
A request that finally fails raises :class:`BackendError`, or with ``on_error="record"`` comes back
as a Completion with ``finish_reason="error"`` and the reason in ``error``.
"""

from __future__ import annotations

import os
import random
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any, Literal

from ..records import AttackPrompt
from .base import BackendError, Completion, Decoding, check_prompt

RETRY_STATUSES = frozenset({408, 409, 429})


def _openai() -> Any:
    try:
        import openai
    except ImportError as e:
        raise ImportError("the OpenAI backend needs the openai client: pip install 'derta[openai]'") from e
    return openai


class OpenAIBackend:
    """Generate through an OpenAI-compatible HTTP API.

    ``api_key_env`` names the environment variable holding the key (never the key itself, so it
    is not written into configs or logs). A local server (``base_url`` given) needs none.
    ``timeout`` is per request (seconds). ``max_tokens_field``: newer hosted models want
    ``"max_completion_tokens"``. ``check_model``: list the served models once at start and refuse
    a model the server does not serve (default: with a ``base_url``, when the server is
    ``derta.serve``; ``true``: always, an unlistable server included; ``false``: never).
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        max_concurrency: int = 8,
        max_retries: int = 5,
        timeout: float = 120.0,
        backoff: float = 1.0,
        max_backoff: float = 60.0,
        on_error: Literal["raise", "record"] = "raise",
        max_tokens_field: str = "max_tokens",
        name: str | None = None,
        progress: bool = True,
        check_model: bool | None = None,
    ):
        openai = _openai()
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        if on_error not in ("raise", "record"):
            raise ValueError(f"on_error must be 'raise' or 'record', got {on_error!r}")
        key = os.environ.get(api_key_env)
        if not key:
            if base_url is None:
                raise ValueError(f"no API key: set the environment variable {api_key_env} (or pass api_key_env=NAME)")
            key = "EMPTY"  # local servers ignore it, but the client insists on one
        self.client = openai.OpenAI(api_key=key, base_url=base_url, timeout=timeout, max_retries=0)
        self.model, self.base_url, self.timeout = model, base_url, timeout
        self.max_concurrency, self.max_retries = max_concurrency, max_retries
        self.backoff, self.max_backoff = backoff, max_backoff
        self.on_error, self.max_tokens_field = on_error, max_tokens_field
        self.name = name or f"openai:{model}"
        self.progress = progress
        self.call_size = max_concurrency * 8  # prompts per call that keep the pool busy (run_generation)
        if check_model or (check_model is None and base_url is not None):
            self._check_served(required=bool(check_model))

    def _check_served(self, required: bool) -> None:
        """Ask the server which models it serves (GET /models, once) and refuse a model it does not.

        ``required``: the user asked for the check, so a server that cannot list its models is an
        error too. Otherwise (a local ``base_url``) the check is made only when the list can be read
        and comes from ``derta.serve`` (``owned_by: derta``) or names models at all; any failure
        to list is left to the first request, which reports it after its retries.
        """
        openai = _openai()
        try:
            served = [(m.id, getattr(m, "owned_by", None)) for m in self.client.with_options(timeout=min(self.timeout, 10.0)).models.list()]
        except (openai.APIError, OSError) as e:
            if required:
                raise ValueError(f"{self.name}: cannot list the models served at {self.base_url or 'the API'} "
                                 f"(check_model=true): {e}") from None
            return
        ids = [i for i, _ in served]
        if self.model in ids or not ids:
            return
        if required or any(owner == "derta" for _, owner in served):
            raise ValueError(f"{self.name}: the server at {self.base_url or 'the API'} does not serve model {self.model!r}; "
                             f"it serves {', '.join(map(repr, ids))} (use openai:{ids[0]})")

    def generate(self, prompts: list[AttackPrompt], decoding: Decoding | None = None) -> list[str]:
        return [c.text for c in self.complete(prompts, decoding)]

    def complete(self, prompts: list[AttackPrompt], decoding: Decoding | None = None) -> list[Completion]:
        from tqdm.auto import tqdm

        decoding = decoding or Decoding()
        for p in prompts:
            check_prompt(p)
        out: list[Completion | None] = [None] * len(prompts)
        with ThreadPoolExecutor(max_workers=self.max_concurrency) as pool:
            futures = {pool.submit(self._with_retries, p, decoding): i for i, p in enumerate(prompts)}
            try:
                for fut in tqdm(as_completed(futures), total=len(futures), disable=not self.progress, desc=self.name, unit="prompt"):
                    out[futures[fut]] = fut.result()
            except BaseException:
                for f in futures:
                    f.cancel()  # do not start requests whose results nobody will read
                raise
        return out  # type: ignore[return-value]

    def _with_retries(self, prompt: AttackPrompt, decoding: Decoding) -> Completion:
        openai = _openai()
        for attempt in range(self.max_retries + 1):
            try:
                return self._request(prompt, decoding)
            except (openai.APITimeoutError, openai.APIConnectionError, openai.APIStatusError) as e:
                status = getattr(e, "status_code", None)
                retryable = status is None or status in RETRY_STATUSES or status >= 500
                if retryable and attempt < self.max_retries:
                    time.sleep(self._wait(attempt, e))
                    continue
                what = f"HTTP {status}" if status is not None else ("timed out" if isinstance(e, openai.APITimeoutError) else "connection error")
                tries = f"after {attempt + 1} tries" if retryable else "(not retried)"
                msg = f"prompt {prompt.id!r}: {self.name} request failed {tries}: {what}: {e}"
                if self.on_error == "record":
                    return Completion(text="", finish_reason="error", error=msg)
                raise BackendError(msg) from e
        raise AssertionError("unreachable")

    def _wait(self, attempt: int, error: Exception) -> float:
        wait = min(self.max_backoff, self.backoff * 2**attempt)
        response = getattr(error, "response", None)
        retry_after = response.headers.get("retry-after") if response is not None else None
        try:
            wait = max(wait, min(self.max_backoff, float(retry_after))) if retry_after else wait
        except ValueError:  # an HTTP date; the exponential wait will do
            pass
        return wait * (0.5 + random.random() / 2)

    def _request(self, prompt: AttackPrompt, decoding: Decoding) -> Completion:
        common: dict[str, Any] = {
            "model": self.model, self.max_tokens_field: decoding.max_new_tokens,
            "temperature": decoding.temperature, "top_p": decoding.top_p,
        }
        if decoding.seed is not None:
            common["seed"] = decoding.for_sample(prompt.metadata).seed  # k samples of a prompt: k seeds
        if decoding.stop:
            common["stop"] = list(decoding.stop)
        if prompt.text is not None:
            resp = self.client.completions.create(prompt=prompt.text + prompt.prefill, **common)
            choice = resp.choices[0]
            text = choice.text or ""
        else:
            messages = [m.to_dict() for m in prompt.messages or []]
            extra = None
            if prompt.prefill:
                messages.append({"role": "assistant", "content": prompt.prefill})
                extra = {"continue_final_message": True, "add_generation_prompt": False}
            resp = self.client.chat.completions.create(messages=messages, extra_body=extra, **common)
            choice = resp.choices[0]
            text = choice.message.content or ""
        n = resp.usage.completion_tokens if resp.usage is not None else None
        return Completion(text=text, n_tokens=n, finish_reason=choice.finish_reason or "", metadata={"response_id": resp.id})
