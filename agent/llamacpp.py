"""``ChatLlamaCpp``: a LangChain chat model that runs a GGUF file in-process through ``xllamacpp``.

xllamacpp embeds llama.cpp's own server code, so the request and response shapes are OpenAI's
chat-completions format and llama.cpp applies the chat template stored in the GGUF. Loading a model
costs memory and time, so one ``xllamacpp.Server`` is kept per (file, context size) per process and
shared by every ``ChatLlamaCpp`` that names it; the server has one slot, so calls take turns on a lock.
"""

from __future__ import annotations

import asyncio
import os
import queue
import secrets
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import xllamacpp
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LangSmithParams
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, convert_to_openai_messages
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import Field, field_validator

GGUF_MAGIC = b"GGUF"

# Per-call keyword arguments that are forwarded into the llama.cpp request as they are; these are the
# sampling knobs llama.cpp's chat endpoint understands, so ``model.invoke(x, max_tokens=20)`` and
# ``model.bind(temperature=0)`` work as they do for other LangChain chat models.
REQUEST_KEYS = frozenset(
    {
        "max_tokens",
        "temperature",
        "seed",
        "top_p",
        "top_k",
        "min_p",
        "repeat_penalty",
        "presence_penalty",
        "frequency_penalty",
        "response_format",
        "json_schema",
        "grammar",
    }
)


class LlamaCppError(RuntimeError):
    """llama.cpp refused or failed a request (for example a prompt longer than the context)."""


def check_gguf(path: str | Path) -> Path:
    """Return ``path`` made absolute if it is a readable GGUF file, else raise ``ValueError``.

    Only the 4-byte magic is checked: it catches the usual mistakes (a wrong path, an HTML error page
    saved as ``.gguf``, a safetensors or PyTorch checkpoint) before llama.cpp prints a bare failure.
    """
    resolved = Path(path).expanduser().resolve()
    hint = "give the path of a .gguf model file, e.g. RAILGRAPH_LLM=llamacpp:/models/llama-3.2-1b.Q4_K_M.gguf"
    if not resolved.exists():
        raise ValueError(f"GGUF model file not found: {resolved}; {hint}")
    if not resolved.is_file():
        raise ValueError(f"{resolved} is not a file; {hint}")
    try:
        with resolved.open("rb") as handle:
            magic = handle.read(len(GGUF_MAGIC))
    except OSError as exc:
        raise ValueError(f"cannot read the model file {resolved}: {exc}") from exc
    if magic != GGUF_MAGIC:
        raise ValueError(
            f"{resolved} is not a GGUF file (it starts with {magic!r}, not b'GGUF'); "
            "llama.cpp needs a .gguf file: download a GGUF build of the model "
            "or convert it with llama.cpp's convert_hf_to_gguf.py"
        )
    return resolved


def default_threads() -> int:
    """Threads for generation: one fewer than the CPUs this process may use, between 1 and 4.

    llama.cpp's threads meet at a barrier after every step, so one of them losing its core to another
    thread stalls them all: on 2 cores with one busy, 2 threads answered 8-16 times slower than 1
    (measured here). One core is left for the rest of the agent (HTTP, embeddings, rails); past about
    4 threads a small model is limited by memory bandwidth, not compute.
    """
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows have no sched_getaffinity
        available = os.cpu_count() or 1
    return max(1, min(4, available - 1))


@dataclass
class _LoadedModel:
    server: xllamacpp.Server
    # The server is started with one slot; concurrent requests would queue inside llama.cpp anyway,
    # and a Python lock lets a cancelled stream give its turn back as soon as it stops.
    lock: threading.Lock


_LOADED: dict[tuple[Path, int], _LoadedModel] = {}
_LOADING = threading.Lock()


def _load(path: Path, n_ctx: int, n_threads: int) -> _LoadedModel:
    """The process-wide server for ``(path, n_ctx)``, started on first use."""
    key = (path, n_ctx)
    with _LOADING:  # held while loading, so two threads never load the same file twice
        if key not in _LOADED:
            params = xllamacpp.CommonParams()
            params.model.path = str(path)
            params.n_ctx = n_ctx
            params.n_parallel = 1
            params.cpuparams.n_threads = n_threads
            params.cpuparams_batch.n_threads = n_threads
            # A warm-up decode only moves the first call's cost to load time.
            params.warmup = False
            # llama.cpp logs every load step and request to stderr; 0 keeps railgraph's output readable.
            params.verbosity = 0
            # xllamacpp also serves the model over HTTP on a random 127.0.0.1 port, with a web UI and
            # /slots. railgraph calls it in-process only, so that listener is locked with a key nobody
            # is told: other local users must not be able to use the model or see its prompts.
            params.api_keys = [secrets.token_urlsafe(32)]
            params.endpoint_slots = False
            params.ui = False
            params.n_threads_http = 1
            try:
                server = xllamacpp.Server(params)
            except RuntimeError as exc:
                raise ValueError(
                    f"llama.cpp could not load {path} ({exc}); the file starts like a GGUF, so it is "
                    "probably truncated (download it again) or made for a newer llama.cpp "
                    "(upgrade xllamacpp)"
                ) from exc
            _LOADED[key] = _LoadedModel(server=server, lock=threading.Lock())
        return _LOADED[key]


# Marks the end of a stream in the queue between llama.cpp's thread and the consumer.
_END = object()


class ChatLlamaCpp(BaseChatModel):
    """A GGUF chat model run in this process by llama.cpp (``xllamacpp``), with no server to install.

    Example:
        ``ChatLlamaCpp(model_path="models/SmolLM2-135M-Instruct.Q4_1.gguf").invoke("Hello")``

    The file is checked when the object is made (missing or not GGUF: ``ValueError``); it is loaded
    on the first call or on ``load()``. Models sharing a file and ``n_ctx`` share one loaded copy,
    whose thread count is that of the first to load it.
    """

    model_path: Path
    """The .gguf file."""
    n_ctx: int = Field(4096, ge=256)
    """Context window in tokens: prompt plus answer must fit."""
    n_threads: int = Field(default_factory=default_threads, ge=1)
    """CPU threads for llama.cpp; see ``default_threads`` for the default."""
    max_tokens: int = Field(512, ge=1)
    """Most tokens generated per answer."""
    temperature: float = Field(0.2, ge=0.0)
    """Sampling temperature; low by default because answers should stick to the sources."""
    seed: int | None = None
    """Sampling seed for repeatable answers; ``None`` draws a fresh one per call."""

    @field_validator("model_path", mode="before")
    @classmethod
    def _valid_gguf(cls, value: str | Path) -> Path:
        return check_gguf(value)

    @property
    def _llm_type(self) -> str:
        return "llamacpp"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "model_path": str(self.model_path),
            "n_ctx": self.n_ctx,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "seed": self.seed,
        }

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = super()._get_ls_params(stop=stop, **kwargs)
        params["ls_provider"] = "llamacpp"
        params["ls_model_name"] = self.model_path.name
        return params

    def load(self) -> None:
        """Load the model now rather than on the first call (``ValueError`` if llama.cpp cannot)."""
        self._loaded()

    def _loaded(self) -> _LoadedModel:
        return _load(self.model_path, self.n_ctx, self.n_threads)

    def _payload(self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]) -> dict:
        payload: dict[str, Any] = {
            "messages": convert_to_openai_messages(messages),
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
        }
        if self.seed is not None:
            payload["seed"] = self.seed
        if stop:
            payload["stop"] = list(stop)
        payload.update({key: value for key, value in kwargs.items() if key in REQUEST_KEYS})
        return payload

    def _error(self, error: dict[str, Any]) -> LlamaCppError:
        message = error.get("message", error)
        if error.get("type") == "exceed_context_size_error":
            message = f"{message}; raise n_ctx (now {self.n_ctx}) or send fewer or shorter messages"
        return LlamaCppError(f"llama.cpp ({self.model_path.name}): {message}")

    def _usage(self, usage: dict[str, Any] | None) -> UsageMetadata | None:
        if not usage:
            return None
        return UsageMetadata(
            input_tokens=usage.get("prompt_tokens", 0),
            output_tokens=usage.get("completion_tokens", 0),
            total_tokens=usage.get("total_tokens", 0),
        )

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        payload = self._payload(messages, stop, kwargs)
        loaded = self._loaded()
        with loaded.lock:
            response = loaded.server.handle_chat_completions(payload)
        if "error" in response:
            raise self._error(response["error"])
        choice = response["choices"][0]
        reply = choice["message"]
        additional = {"reasoning_content": reply["reasoning_content"]} if reply.get("reasoning_content") else {}
        message = AIMessage(
            content=reply.get("content") or "",
            additional_kwargs=additional,
            usage_metadata=self._usage(response.get("usage")),
            response_metadata={
                "model_name": self.model_path.name,
                "finish_reason": choice.get("finish_reason"),
            },
        )
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _start_stream(
        self,
        loaded: _LoadedModel,
        payload: dict[str, Any],
        emit: Callable[[object], object],
    ) -> tuple[threading.Thread, threading.Event]:
        """Run a streaming request on a worker thread; every chunk, error and the end go to ``emit``.

        The xllamacpp call blocks until generation ends (it releases the GIL meanwhile), so it cannot
        run on the consumer's thread. Setting the returned event makes the chunk callback return
        true, which tells llama.cpp to stop: an abandoned stream frees the model at the next token.
        """
        payload = {**payload, "stream": True, "stream_options": {"include_usage": True}}
        cancel = threading.Event()

        def on_chunk(chunk: dict[str, Any]) -> bool:
            emit(chunk)
            return cancel.is_set()

        def work() -> None:
            try:
                with loaded.lock:
                    if not cancel.is_set():
                        loaded.server.handle_chat_completions(payload, on_chunk)
            except BaseException as exc:  # handed to the consumer, who re-raises it
                emit(exc)
            finally:
                emit(_END)

        thread = threading.Thread(target=work, name=f"llamacpp-{self.model_path.name}", daemon=True)
        thread.start()
        return thread, cancel

    def _chunk(self, item: object) -> ChatGenerationChunk | None:
        """Turn one item from the worker into a LangChain chunk (``None`` for the empty role chunk)."""
        if isinstance(item, BaseException):
            raise item
        assert isinstance(item, dict)
        if "error" in item:
            raise self._error(item["error"])
        if not item.get("choices"):
            # The last chunk has no choices and carries the token counts.
            usage = self._usage(item.get("usage"))
            if usage is None:
                return None
            return ChatGenerationChunk(message=AIMessageChunk(content="", usage_metadata=usage, chunk_position="last"))
        choice = item["choices"][0]
        delta = choice.get("delta", {})
        content = delta.get("content") or ""
        reasoning = delta.get("reasoning_content") or ""
        finish = choice.get("finish_reason")
        if not (content or reasoning or finish):
            return None
        metadata = {"model_name": self.model_path.name, "finish_reason": finish} if finish else {}
        return ChatGenerationChunk(
            message=AIMessageChunk(
                content=content,
                additional_kwargs={"reasoning_content": reasoning} if reasoning else {},
                response_metadata=metadata,
            )
        )

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        items: queue.Queue[object] = queue.Queue()
        payload = self._payload(messages, stop, kwargs)
        thread, cancel = self._start_stream(self._loaded(), payload, items.put)
        try:
            while (item := items.get()) is not _END:
                chunk = self._chunk(item)
                if chunk is None:
                    continue
                if run_manager:
                    run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                yield chunk
        finally:
            cancel.set()
            thread.join()

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        # Not the default (``_stream`` driven from an executor): that leaves an abandoned stream's
        # generator to the garbage collector, holding the model until it happens to run.
        loop = asyncio.get_running_loop()
        items: asyncio.Queue[object] = asyncio.Queue()
        payload = self._payload(messages, stop, kwargs)
        loaded = await asyncio.to_thread(self._loaded)  # the first call loads the file: keep it off the loop
        thread, cancel = self._start_stream(
            loaded, payload, lambda item: loop.call_soon_threadsafe(items.put_nowait, item)
        )
        try:
            while (item := await items.get()) is not _END:
                chunk = self._chunk(item)
                if chunk is None:
                    continue
                if run_manager:
                    await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                yield chunk
        finally:
            cancel.set()
            # Wait off the loop: the worker may need one more token before llama.cpp checks ``cancel``.
            await asyncio.to_thread(thread.join)
