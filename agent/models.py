"""The chat-model factory: turns the ``RAILGRAPH_LLM`` setting into a LangChain chat model, or none.

``auto`` uses a local Ollama server when one answers with the configured model and otherwise falls
back to extractive answers (no generative model); explicit choices fail loudly instead, with
``ModelUnavailable`` saying what to do, because a user who named a model expects that model.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
from langchain_core.language_models import BaseChatModel

from agent.llamacpp import ChatLlamaCpp, check_gguf

OLLAMA_DEFAULT_PORT = 11434
# Long enough for a local server on a busy machine, short enough that ``auto`` never feels slow.
PROBE_TIMEOUT_S = 0.5
INSTALL_HINT = (
    "install Ollama (https://ollama.com) and run `ollama pull llama3.2`, or set RAILGRAPH_LLM=llamacpp:/path/model.gguf"
)
SPEC_FORMS = "auto, extractive, ollama:<model>, llamacpp:<path.gguf> or provider:model"


@dataclass(frozen=True)
class ChatModelChoice:
    """The chat model railgraph will use, its name, and why it was chosen."""

    model: BaseChatModel | None
    """``None`` means extractive mode: answers are verbatim sentences from the retrieved sources."""
    name: str
    """Short name for logs and ``doctor``: ``ollama:llama3.2``, ``llamacpp:/m/x.gguf``, ``extractive``."""
    reason: str
    """One line for the user; for extractive mode it includes the command that gets a real model."""


class ModelUnavailable(RuntimeError):
    """An explicitly requested chat model cannot be used; the message says what was asked, what failed
    and what to do."""


def ollama_base_url(host: str) -> str:
    """``OLLAMA_HOST`` as a URL, read the way Ollama reads it.

    ``127.0.0.1:11434`` and ``localhost`` get ``http://``; a host without a port gets 11434 unless a
    scheme was given (then the scheme's default port, as in the ``ollama`` client).
    """
    given = host.strip() or f"127.0.0.1:{OLLAMA_DEFAULT_PORT}"
    has_scheme = "://" in given
    parts = urlsplit(given if has_scheme else f"http://{given}")
    hostname = parts.hostname or "127.0.0.1"
    if ":" in hostname:  # IPv6: urlsplit drops the brackets
        hostname = f"[{hostname}]"
    port = parts.port or (None if has_scheme else OLLAMA_DEFAULT_PORT)
    netloc = f"{hostname}:{port}" if port else hostname
    return f"{parts.scheme}://{netloc}{parts.path.rstrip('/')}"


@dataclass(frozen=True)
class _OllamaProbe:
    models: list[str] | None
    """Names the server lists, or ``None`` when no Ollama server answered."""
    problem: str
    """Why ``models`` is ``None`` (empty when the server answered)."""


def _probe_ollama(base_url: str) -> _OllamaProbe:
    """Ask ``GET /api/tags`` which models the server has."""
    try:
        response = httpx.get(f"{base_url}/api/tags", timeout=PROBE_TIMEOUT_S)
    except httpx.HTTPError as exc:
        return _OllamaProbe(None, f"no Ollama server answered at {base_url} ({type(exc).__name__})")
    try:
        response.raise_for_status()
        listed = response.json()["models"]
        names = [entry.get("name") or entry.get("model") for entry in listed]
    except (httpx.HTTPError, ValueError, KeyError, TypeError, AttributeError):
        return _OllamaProbe(
            None,
            f"the server at {base_url} does not answer like Ollama (GET /api/tags gave HTTP {response.status_code})",
        )
    return _OllamaProbe([name for name in names if name], "")


def _without_latest(name: str) -> str:
    # Ollama treats ``llama3.2`` and ``llama3.2:latest`` as one model.
    return name.removesuffix(":latest")


def _has_model(listed: list[str], wanted: str) -> bool:
    return _without_latest(wanted) in {_without_latest(name) for name in listed}


def _ollama_model(base_url: str, model: str, max_tokens: int) -> BaseChatModel:
    from langchain_ollama import ChatOllama  # imported here: the other choices do not need it

    return ChatOllama(model=model, base_url=base_url, num_predict=max_tokens)


def _auto(ollama_host: str, ollama_model: str, max_tokens: int) -> ChatModelChoice:
    base_url = ollama_base_url(ollama_host)
    probe = _probe_ollama(base_url)
    if probe.models is None:
        return ChatModelChoice(None, "extractive", f"{probe.problem}; {INSTALL_HINT}")
    if not _has_model(probe.models, ollama_model):
        have = ", ".join(probe.models) or "none"
        return ChatModelChoice(
            None,
            "extractive",
            f"the Ollama server at {base_url} does not have {ollama_model} (it has: {have}); "
            f"run `ollama pull {ollama_model}` or set RAILGRAPH_OLLAMA_MODEL to one it has",
        )
    return ChatModelChoice(
        _ollama_model(base_url, ollama_model, max_tokens),
        f"ollama:{ollama_model}",
        f"an Ollama server answered at {base_url} with {ollama_model}",
    )


def _explicit_ollama(spec: str, model: str, ollama_host: str, max_tokens: int) -> ChatModelChoice:
    base_url = ollama_base_url(ollama_host)
    probe = _probe_ollama(base_url)
    if probe.models is None:
        raise ModelUnavailable(
            f"RAILGRAPH_LLM={spec} needs an Ollama server, but {probe.problem}; start one with "
            f"`ollama serve` (install: https://ollama.com) or point OLLAMA_HOST at yours"
        )
    if not _has_model(probe.models, model):
        have = ", ".join(probe.models) or "none"
        raise ModelUnavailable(
            f"RAILGRAPH_LLM={spec}: the Ollama server at {base_url} does not have {model} "
            f"(it has: {have}); run `ollama pull {model}`"
        )
    return ChatModelChoice(
        _ollama_model(base_url, model, max_tokens), spec, f"asked for {spec}; Ollama answered at {base_url}"
    )


def _llamacpp(spec: str, path: str, max_tokens: int) -> ChatModelChoice:
    try:
        model = ChatLlamaCpp(model_path=check_gguf(path), max_tokens=max_tokens)
        # Load now: a broken file should fail when the model is chosen, not in the middle of a turn.
        model.load()
    except ValueError as exc:
        raise ModelUnavailable(f"RAILGRAPH_LLM={spec}: {exc}") from exc
    return ChatModelChoice(model, f"llamacpp:{model.model_path}", f"asked for {spec}; runs in-process with llama.cpp")


def _init_chat_model(spec: str, max_tokens: int) -> ChatModelChoice:
    try:
        from langchain.chat_models import init_chat_model

        model = init_chat_model(spec, max_tokens=max_tokens)
    except Exception as exc:  # missing provider package, unknown provider, missing API key, ...
        raise ModelUnavailable(
            f"RAILGRAPH_LLM={spec}: LangChain's init_chat_model could not make this model: {exc}. "
            "Install the provider's package (e.g. `pip install langchain-openai`) and set its API key, "
            f"or choose another model ({SPEC_FORMS})"
        ) from exc
    return ChatModelChoice(model, spec, f"asked for {spec}; made by LangChain's init_chat_model")


def resolve_chat_model(spec: str, *, ollama_host: str, ollama_model: str, max_tokens: int = 512) -> ChatModelChoice:
    """The chat model named by ``spec`` (the ``RAILGRAPH_LLM`` setting), with a reason for the user.

    ``auto``: Ollama at ``ollama_host`` if it answers and has ``ollama_model``, else extractive mode
    (never an error). ``extractive``: no model. ``ollama:<model>``, ``llamacpp:<path.gguf>`` and any
    other ``provider:model`` (LangChain's ``init_chat_model``): that model, or ``ModelUnavailable``.
    ``max_tokens`` caps each answer.
    """
    spec = spec.strip()
    if spec == "auto":
        return _auto(ollama_host, ollama_model, max_tokens)
    if spec == "extractive":
        return ChatModelChoice(
            None,
            "extractive",
            "asked for extractive mode: answers are verbatim sentences from the sources; "
            f"for generated answers {INSTALL_HINT}",
        )
    provider, _, rest = spec.partition(":")
    if provider in ("ollama", "llamacpp") and not rest:
        raise ModelUnavailable(f"RAILGRAPH_LLM={spec!r} names no model; use {SPEC_FORMS}")
    if provider == "ollama":
        return _explicit_ollama(spec, rest, ollama_host, max_tokens)
    if provider == "llamacpp":
        return _llamacpp(spec, rest, max_tokens)
    return _init_chat_model(spec, max_tokens)
