"""A small stand-in for an Ollama server, for tests: real HTTP, real model, Ollama's wire format.

No Ollama binary can be installed here, so ``OllamaServer`` speaks the part of Ollama's REST API
that ``langchain_ollama.ChatOllama`` (through the ``ollama`` client) and railgraph's model probe use:

- ``GET /api/version`` and ``GET /api/tags`` (the models it "has");
- ``POST /api/chat``, streamed as NDJSON with chunked transfer encoding (one JSON object per line,
  ``message.content`` deltas, then a ``done: true`` object with ``done_reason`` and token counts),
  or as one JSON object when ``"stream": false``.

Each chat request is answered by the LangChain chat model it was given (a ``ChatLlamaCpp`` on the
test GGUF), so ``ChatOllama`` runs its real client code over real HTTP against a real model.
``ChatOllama`` does not call ``/api/show`` or ``/api/ps``, so they are not served (404).

    with OllamaServer(ChatLlamaCpp(model_path=gguf), models=["smollm2:latest"]) as server:
        ChatOllama(model="smollm2", base_url=server.url).invoke("hi")
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessageChunk, BaseMessage, convert_to_messages

OLLAMA_VERSION = "0.12.6"

# Ollama request options and the LangChain keyword arguments that mean the same thing.
OPTION_NAMES = {
    "num_predict": "max_tokens",
    "temperature": "temperature",
    "seed": "seed",
    "top_p": "top_p",
    "top_k": "top_k",
    "repeat_penalty": "repeat_penalty",
}


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _without_latest(name: str) -> str:
    return name.removesuffix(":latest")


class _Handler(BaseHTTPRequestHandler):
    """One request; ``self.server`` is the ``_Server`` below, which holds the model and names."""

    server: _Server
    protocol_version = "HTTP/1.1"  # chunked transfer encoding, as Ollama streams
    # A stuck client must not keep a handler thread (and ``OllamaServer.__exit__``) waiting forever.
    timeout = 60

    def log_message(self, format: str, *args: Any) -> None:
        # http.server logs every request to stderr; pytest output is more useful without them.
        pass

    def do_GET(self) -> None:
        if self.path == "/api/version":
            self._send_json({"version": OLLAMA_VERSION})
        elif self.path == "/api/tags":
            self._send_json({"models": [self._tag(name) for name in self.server.model_names]})
        else:
            self._send_json({"error": f"unknown path {self.path}"}, HTTPStatus.NOT_FOUND)

    def do_POST(self) -> None:
        if self.path != "/api/chat":
            self._send_json({"error": f"unknown path {self.path}"}, HTTPStatus.NOT_FOUND)
            return
        try:
            length = int(self.headers.get("Content-Length", 0))
            request = json.loads(self.rfile.read(length) or b"{}")
            messages = convert_to_messages(
                [{"role": m["role"], "content": m.get("content") or ""} for m in request["messages"]]
            )
        except (ValueError, KeyError, TypeError) as exc:
            self._send_json({"error": f"invalid chat request: {exc}"}, HTTPStatus.BAD_REQUEST)
            return
        model = request.get("model", "")
        if _without_latest(model) not in {_without_latest(n) for n in self.server.model_names}:
            # Ollama's own answer for a model that was never pulled.
            self._send_json({"error": f"model '{model}' not found, try pulling it first"}, HTTPStatus.NOT_FOUND)
            return
        options = request.get("options") or {}
        kwargs = {OPTION_NAMES[k]: v for k, v in options.items() if k in OPTION_NAMES}
        stop = options.get("stop") or None
        # Ollama streams unless told not to.
        if request.get("stream", True):
            self._stream_chat(model, messages, stop, kwargs)
        else:
            self._chat(model, messages, stop, kwargs)

    def _tag(self, name: str) -> dict[str, Any]:
        return {
            "name": name,
            "model": name,
            "modified_at": _now(),
            "size": 0,
            "digest": "0" * 64,
            "details": {"format": "gguf", "family": "llama", "parameter_size": "", "quantization_level": ""},
        }

    def _final(self, model: str, reply: AIMessageChunk, started: float) -> dict[str, Any]:
        """The closing object of a chat answer: Ollama's done fields, durations in nanoseconds."""
        usage = reply.usage_metadata or {"input_tokens": 0, "output_tokens": 0}
        finish = reply.response_metadata.get("finish_reason")
        total_ns = int((time.perf_counter() - started) * 1e9)
        return {
            "model": model,
            "created_at": _now(),
            "message": {"role": "assistant", "content": ""},
            "done": True,
            "done_reason": "length" if finish == "length" else "stop",
            "total_duration": total_ns,
            "load_duration": 0,
            "prompt_eval_count": usage["input_tokens"],
            "prompt_eval_duration": 0,
            "eval_count": usage["output_tokens"],
            "eval_duration": total_ns,
        }

    def _chat(self, model: str, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]) -> None:
        started = time.perf_counter()
        try:
            reply = sum(self.server.chat_model.stream(messages, stop=stop, **kwargs), AIMessageChunk(content=""))
        except Exception as exc:  # the model's error goes to the client, as Ollama reports its own
            self._send_json({"error": str(exc)}, HTTPStatus.INTERNAL_SERVER_ERROR)
            return
        final = self._final(model, reply, started)
        final["message"]["content"] = reply.text
        self._send_json(final)

    def _stream_chat(
        self, model: str, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]
    ) -> None:
        started = time.perf_counter()
        self._start(HTTPStatus.OK, "application/x-ndjson", {"Transfer-Encoding": "chunked"})
        reply = AIMessageChunk(content="")
        try:
            for chunk in self.server.chat_model.stream(messages, stop=stop, **kwargs):
                reply += chunk
                if chunk.text:
                    self._write_line(
                        {
                            "model": model,
                            "created_at": _now(),
                            "message": {"role": "assistant", "content": chunk.text},
                            "done": False,
                        }
                    )
            self._write_line(self._final(model, reply, started))
        except (BrokenPipeError, ConnectionResetError):
            return  # the client went away; nothing left to tell it
        except Exception as exc:
            # Once streaming has begun the status is sent; Ollama then reports errors in-band.
            self._write_line({"error": str(exc)})
        self.wfile.write(b"0\r\n\r\n")

    def _write_line(self, obj: dict[str, Any]) -> None:
        data = json.dumps(obj).encode() + b"\n"
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _send_json(self, obj: dict[str, Any], status: HTTPStatus = HTTPStatus.OK) -> None:
        data = json.dumps(obj).encode()
        self._start(status, "application/json", {"Content-Length": str(len(data))})
        self.wfile.write(data)

    def _start(self, status: HTTPStatus, content_type: str, headers: dict[str, str]) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        for name, value in headers.items():
            self.send_header(name, value)
        # One request per connection: a kept-alive idle connection would hold its handler thread,
        # and with it ``OllamaServer.__exit__``, until the client closed it or the timeout ran out.
        self.send_header("Connection", "close")
        self.close_connection = True
        self.end_headers()


class _Server(ThreadingHTTPServer):
    # Handler threads are joined by server_close (block_on_close), so shutting down leaves none behind.
    daemon_threads = False

    def __init__(self, chat_model: BaseChatModel, model_names: list[str]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.chat_model = chat_model
        self.model_names = model_names


class OllamaServer:
    """An Ollama-compatible HTTP server on 127.0.0.1 (a free port), answering with ``chat_model``.

    ``models`` are the names ``/api/tags`` lists and ``/api/chat`` accepts (``x`` and ``x:latest``
    are the same model, as in Ollama); pass other names to play a server that lacks a model.
    Use it as a context manager; ``url`` is the base URL to give ``ChatOllama`` or ``OLLAMA_HOST``.
    """

    def __init__(self, chat_model: BaseChatModel, models: Iterable[str] = ("smollm2:latest",)) -> None:
        self._httpd = _Server(chat_model, list(models))
        host, port = self._httpd.server_address[:2]
        self.url = f"http://{host}:{port}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            # shutdown() waits up to one poll interval; the default 0.5 s would add that to every test.
            kwargs={"poll_interval": 0.05},
            name=f"ollama-fixture-{port}",
            daemon=True,
        )

    def __enter__(self) -> OllamaServer:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._httpd.shutdown()  # stops serve_forever, then waits for it to return
        self._httpd.server_close()  # closes the socket and joins the handler threads
        self._thread.join()
