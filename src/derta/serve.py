"""A small OpenAI-compatible HTTP server over a local Hugging Face model (standard library only).

For tests and local use, not production: one generation at a time, bound to 127.0.0.1 by default.

    python -m derta.serve --model PATH --port 8000
    # then: load_backend("openai:PATH", base_url="http://127.0.0.1:8000/v1")

Endpoints: ``GET /v1/models``, ``POST /v1/chat/completions`` (``messages``, ``max_tokens``,
``temperature``, ``top_p``, ``seed``, ``stop``, ``continue_final_message``) and
``POST /v1/completions`` (``prompt``, raw, no chat template). With ``continue_final_message`` the
last assistant message is a prefill and the reply holds the continuation only (as vLLM does).
Prompts are rendered by :class:`derta.backends.hf.HFBackend`, so a served model answers exactly as
the in-process backend does. A request whose ``model`` is not the served one is answered 404
(``model_not_found``, as OpenAI does); one without ``model`` is served. ``fail=[429, 500]`` makes the first POST requests fail with those
statuses and ``delay`` holds every POST for that many seconds: ways to test client retries,
timeouts and concurrency against a real server.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .backends.base import Decoding
from .records import AttackPrompt, Message

log = logging.getLogger(__name__)


class RequestError(ValueError):
    """A bad request: answered with HTTP 400 and this message."""


def _content(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):  # [{"type": "text", "text": ...}, ...]
        return "".join(part.get("text", "") for part in value if isinstance(part, dict))
    raise RequestError(f"message content must be a string or a list of text parts, got {type(value).__name__}")


def _decoding(body: dict[str, Any], default_max: int) -> Decoding:
    if body.get("n", 1) != 1:
        raise RequestError("only n=1 is supported")
    stop = body.get("stop") or ()
    temperature, top_p, seed = body.get("temperature"), body.get("top_p"), body.get("seed")
    try:
        return Decoding(  # OpenAI's defaults: temperature 1, top_p 1
            max_new_tokens=int(body.get("max_completion_tokens") or body.get("max_tokens") or default_max),
            temperature=1.0 if temperature is None else float(temperature),
            top_p=1.0 if top_p is None else float(top_p),
            seed=None if seed is None else int(seed),
            stop=(stop,) if isinstance(stop, str) else tuple(stop),
        )
    except (TypeError, ValueError) as e:
        raise RequestError(f"bad decoding parameters: {e}") from None


def chat_request_prompt(body: dict[str, Any]) -> AttackPrompt:
    """An OpenAI chat request as an AttackPrompt (a final assistant message to continue = prefill)."""
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise RequestError("'messages' must be a non-empty list")
    try:
        messages = [Message(role=m["role"], content=_content(m.get("content") or "")) for m in msgs]
    except (KeyError, TypeError):
        raise RequestError("each message needs a 'role' and a 'content'") from None
    prefill = ""
    if body.get("continue_final_message"):
        if body.get("add_generation_prompt") is True:
            raise RequestError("continue_final_message and add_generation_prompt cannot both be true")
        if messages[-1].role != "assistant":
            raise RequestError("continue_final_message needs a final assistant message")
        prefill, messages = messages[-1].content, messages[:-1]
    return AttackPrompt(id="request", question="", attack="served", messages=messages, prefill=prefill)


class ModelServer(ThreadingHTTPServer):
    """The HTTP server; ``start()`` runs it in a daemon thread, ``close()`` stops it.

    ``close()`` also ends open keep-alive connections, wakes requests held by ``delay`` and waits
    for the handler threads, so no generation is left running when the interpreter exits.
    """

    daemon_threads = False
    block_on_close = True  # server_close() joins the handler threads

    def __init__(self, backend: Any, host: str = "127.0.0.1", port: int = 8000, *, model_name: str | None = None,
                 api_key: str | None = None, fail: Sequence[int] = (), delay: float = 0.0):
        super().__init__((host, port), _Handler)
        self.backend = backend
        self.model_name = model_name or backend.name
        self.api_key = api_key
        self.fail = list(fail)
        self.delay = delay
        self.generate_lock = threading.Lock()  # one model, one generation at a time
        self._stats_lock = threading.Lock()
        self.stats = {"requests": 0, "failures_injected": 0, "completed": 0, "in_flight": 0, "max_in_flight": 0}
        self._thread: threading.Thread | None = None
        self.closing = threading.Event()
        self._connections: set[socket.socket] = set()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> "ModelServer":
        # A short poll interval: close() (shutdown) waits up to one interval.
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, name="derta-serve", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self.closing.set()
        if self._thread is not None:
            self.shutdown()
            self._thread.join()
            self._thread = None
        with self._stats_lock:
            connections = list(self._connections)
        for conn in connections:  # a handler waiting for the next keep-alive request sees EOF
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.server_close()

    def track(self, conn: socket.socket, open_: bool) -> None:
        with self._stats_lock:
            (self._connections.add if open_ else self._connections.discard)(conn)

    def __enter__(self) -> "ModelServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def count(self, key: str, delta: int = 1) -> int:
        with self._stats_lock:
            self.stats[key] += delta
            if key == "in_flight":
                self.stats["max_in_flight"] = max(self.stats["max_in_flight"], self.stats["in_flight"])
            return self.stats[key]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: every reply carries a Content-Length
    server: ModelServer

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, True)

    def finish(self) -> None:
        self.server.track(self.connection, False)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (e.g. its timeout)
            pass

    def _error(self, status: int, message: str, kind: str = "invalid_request_error", code: Any = None) -> None:
        self._send(status, {"error": {"message": message, "type": kind, "code": status if code is None else code}})

    def _check_model(self, body: dict[str, Any]) -> bool:
        """A request for another model than the one served: 404 "model_not_found", as OpenAI answers."""
        asked = body.get("model")
        if asked is None or asked == self.server.model_name:
            return True
        self._error(404, f"The model `{asked}` does not exist; this server serves `{self.server.model_name}`",
                    "invalid_request_error", "model_not_found")
        return False

    def _authorized(self) -> bool:
        if self.server.api_key is None:
            return True
        if self.headers.get("Authorization") == f"Bearer {self.server.api_key}":
            return True
        self._error(401, "invalid or missing API key", "authentication_error")
        return False

    def do_GET(self) -> None:
        if not self._authorized():
            return
        if self.path.rstrip("/") == "/v1/models":
            self._send(200, {"object": "list", "data": [{"id": self.server.model_name, "object": "model", "owned_by": "derta"}]})
        else:
            self._error(404, f"no route {self.path}")

    def do_POST(self) -> None:
        srv = self.server
        body_bytes = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if not self._authorized():
            return
        n = srv.count("requests")
        srv.count("in_flight")
        try:
            if n <= len(srv.fail):
                srv.count("failures_injected")
                self._error(srv.fail[n - 1], f"injected failure {n} of {len(srv.fail)}", "injected")
                return
            if srv.delay and srv.closing.wait(srv.delay):
                self._error(503, "the server is shutting down", "server_error")
                return
            try:
                body = json.loads(body_bytes or b"{}")
                if not isinstance(body, dict):
                    raise RequestError("the request body must be a JSON object")
                if not self._check_model(body):
                    return
                route = self.path.rstrip("/")
                if route == "/v1/chat/completions":
                    reply = self._chat(body)
                elif route == "/v1/completions":
                    reply = self._completion(body)
                else:
                    self._error(404, f"no route {self.path}")
                    return
            except (RequestError, json.JSONDecodeError) as e:
                self._error(400, str(e))
                return
            except Exception as e:  # a bug or a model error: say so instead of dropping the connection
                log.exception("generation failed")
                self._error(500, f"{type(e).__name__}: {e}", "server_error")
                return
            srv.count("completed")
            self._send(200, reply)
        finally:
            srv.count("in_flight", -1)

    def _run(self, prompt: AttackPrompt, body: dict[str, Any], default_max: int) -> tuple[Any, int]:
        decoding = _decoding(body, default_max)
        backend = self.server.backend
        with self.server.generate_lock:
            n_prompt = len(backend.render(prompt).ids)
            return backend.complete([prompt], decoding)[0], n_prompt

    def _meta(self, kind: str, result: Any, n_prompt: int) -> dict[str, Any]:
        n_out = result.n_tokens or 0
        return {
            "id": f"{kind}-{uuid.uuid4().hex[:16]}", "created": int(time.time()), "model": self.server.model_name,
            "usage": {"prompt_tokens": n_prompt, "completion_tokens": n_out, "total_tokens": n_prompt + n_out},
        }

    def _chat(self, body: dict[str, Any]) -> dict[str, Any]:
        result, n_prompt = self._run(chat_request_prompt(body), body, Decoding().max_new_tokens)
        choice = {"index": 0, "message": {"role": "assistant", "content": result.text}, "finish_reason": result.finish_reason}
        return {**self._meta("chatcmpl", result, n_prompt), "object": "chat.completion", "choices": [choice]}

    def _completion(self, body: dict[str, Any]) -> dict[str, Any]:
        text = body.get("prompt")
        if isinstance(text, list) and len(text) == 1:
            text = text[0]
        if not isinstance(text, str):
            raise RequestError("'prompt' must be a string (one prompt per request)")
        prompt = AttackPrompt(id="request", question="", attack="served", text=text)
        result, n_prompt = self._run(prompt, body, 16)  # 16: the OpenAI default for completions
        choice = {"index": 0, "text": result.text, "finish_reason": result.finish_reason, "logprobs": None}
        return {**self._meta("cmpl", result, n_prompt), "object": "text_completion", "choices": [choice]}


def make_server(model: Any, tokenizer: Any = None, host: str = "127.0.0.1", port: int = 8000, *,
                model_name: str | None = None, api_key: str | None = None, fail: Sequence[int] = (),
                delay: float = 0.0, **backend_kw: Any) -> ModelServer:
    """A ModelServer for a model path/name or an in-memory (model, tokenizer); port 0 picks a free one."""
    from .backends.hf import HFBackend

    backend = HFBackend(model, tokenizer, progress=False, **backend_kw)
    return ModelServer(backend, host, port, model_name=model_name, api_key=api_key, fail=fail, delay=delay)


def serve(model: Any, tokenizer: Any = None, host: str = "127.0.0.1", port: int = 8000, **kw: Any) -> None:
    """Serve until interrupted (blocking; use ``make_server(...).start()`` for a background thread)."""
    with make_server(model, tokenizer, host, port, **kw) as server:
        print(f"serving {server.model_name} at {server.url}", file=sys.stderr, flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m derta.serve", description="Serve a local Hugging Face model over an OpenAI-compatible API.")
    p.add_argument("--model", required=True, help="model path or name")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--name", help="model id the API reports and accepts (default: hf:MODEL)")
    p.add_argument("--template", help="'chat' (the tokenizer's), 'reference' or 'plain'")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--api-key-env", help="require clients to send the key held in this environment variable")
    p.add_argument("--fail", default="", help="comma-separated HTTP statuses for the first POST requests (testing retries)")
    p.add_argument("--delay", type=float, default=0.0, help="seconds to hold every POST request (testing timeouts)")
    args = p.parse_args(argv)
    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            p.error(f"environment variable {args.api_key_env} is not set")
    fail = [int(s) for s in args.fail.split(",") if s.strip()]
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    serve(args.model, None, args.host, args.port, model_name=args.name, api_key=api_key, fail=fail, delay=args.delay,
          template=args.template, device=args.device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
