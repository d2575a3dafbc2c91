"""resolve_chat_model against real servers: the Ollama stand-in over HTTP, llama.cpp, closed ports."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from langchain_ollama import ChatOllama
from ollama_server import OllamaServer

from agent.llamacpp import ChatLlamaCpp
from agent.models import ModelUnavailable, ollama_base_url, resolve_chat_model


@pytest.fixture(scope="module")
def llama(gguf_path: Path) -> ChatLlamaCpp:
    # n_ctx 2048 like test_llamacpp's model, so both modules share one loaded copy.
    return ChatLlamaCpp(model_path=gguf_path, n_ctx=2048, max_tokens=32, seed=7)


@pytest.fixture(scope="module")
def ollama(llama: ChatLlamaCpp) -> Iterator[OllamaServer]:
    with OllamaServer(llama, models=["smollm2:latest"]) as server:
        yield server


@pytest.fixture
def closed_port() -> int:
    # A port that was free a moment ago: nothing listens there, so connecting is refused at once.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_auto_picks_ollama_when_it_has_the_model(ollama: OllamaServer) -> None:
    # Given without a scheme, as OLLAMA_HOST often is.
    host = ollama.url.removeprefix("http://")
    choice = resolve_chat_model("auto", ollama_host=host, ollama_model="smollm2", max_tokens=24)
    assert choice.name == "ollama:smollm2"
    assert ollama.url in choice.reason
    assert isinstance(choice.model, ChatOllama)
    assert choice.model.num_predict == 24

    reply = choice.model.invoke("What is the capital of France? Answer in one sentence.")
    assert str(reply.content).strip()
    assert reply.response_metadata["done_reason"] in ("stop", "length")
    assert reply.usage_metadata is not None
    assert 0 < reply.usage_metadata["output_tokens"] <= 24

    chunks = [chunk for chunk in choice.model.stream("Count from one to five.") if chunk.content]
    assert len(chunks) > 1


def test_auto_without_a_server_is_extractive_with_the_install_hint(closed_port: int) -> None:
    host = f"127.0.0.1:{closed_port}"
    choice = resolve_chat_model("auto", ollama_host=host, ollama_model="llama3.2")
    assert choice.model is None
    assert choice.name == "extractive"
    assert f"no Ollama server answered at http://{host}" in choice.reason
    assert "https://ollama.com" in choice.reason
    assert "`ollama pull llama3.2`" in choice.reason
    assert "RAILGRAPH_LLM=llamacpp:/path/model.gguf" in choice.reason


def test_auto_with_a_server_lacking_the_model_says_ollama_pull(llama: ChatLlamaCpp) -> None:
    with OllamaServer(llama, models=["qwen3:latest"]) as other:
        choice = resolve_chat_model("auto", ollama_host=other.url, ollama_model="llama3.2")
    assert choice.model is None
    assert choice.name == "extractive"
    assert "`ollama pull llama3.2`" in choice.reason
    assert "qwen3:latest" in choice.reason


def test_explicit_ollama_uses_the_server(ollama: OllamaServer) -> None:
    choice = resolve_chat_model("ollama:smollm2:latest", ollama_host=ollama.url, ollama_model="llama3.2")
    assert choice.name == "ollama:smollm2:latest"
    assert choice.model is not None
    assert str(choice.model.invoke("Say hello.").content).strip()


def test_explicit_ollama_unreachable_says_how_to_start_it(closed_port: int) -> None:
    host = f"127.0.0.1:{closed_port}"
    with pytest.raises(ModelUnavailable) as caught:
        resolve_chat_model("ollama:llama3.2", ollama_host=host, ollama_model="llama3.2")
    message = str(caught.value)
    assert "ollama:llama3.2" in message
    assert f"http://{host}" in message
    assert "`ollama serve`" in message


def test_explicit_ollama_missing_model_says_ollama_pull(ollama: OllamaServer) -> None:
    with pytest.raises(ModelUnavailable, match="`ollama pull mistral`"):
        resolve_chat_model("ollama:mistral", ollama_host=ollama.url, ollama_model="llama3.2")


def test_llamacpp_spec_gives_a_working_model(gguf_path: Path) -> None:
    choice = resolve_chat_model(f"llamacpp:{gguf_path}", ollama_host="", ollama_model="", max_tokens=16)
    assert isinstance(choice.model, ChatLlamaCpp)
    assert choice.name == f"llamacpp:{gguf_path.resolve()}"
    reply = choice.model.invoke("Say hello.")
    assert str(reply.content).strip()
    assert reply.usage_metadata is not None
    assert reply.usage_metadata["output_tokens"] <= 16


def test_llamacpp_spec_with_a_missing_file_is_unavailable() -> None:
    with pytest.raises(ModelUnavailable, match=r"llamacpp:/missing\.gguf.*not found: /missing\.gguf"):
        resolve_chat_model("llamacpp:/missing.gguf", ollama_host="", ollama_model="")


def test_extractive_has_no_model() -> None:
    choice = resolve_chat_model("extractive", ollama_host="", ollama_model="llama3.2")
    assert choice.model is None
    assert choice.name == "extractive"
    assert choice.reason


def test_unknown_provider_is_unavailable_with_what_to_do() -> None:
    with pytest.raises(ModelUnavailable, match="init_chat_model") as caught:
        resolve_chat_model("nosuchprovider:some-model", ollama_host="", ollama_model="")
    assert "pip install" in str(caught.value)


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("127.0.0.1:11434", "http://127.0.0.1:11434"),
        ("localhost", "http://localhost:11434"),
        ("", "http://127.0.0.1:11434"),
        ("http://example.com", "http://example.com"),
        ("https://example.com:8443/ollama/", "https://example.com:8443/ollama"),
        ("[::1]:9000", "http://[::1]:9000"),
    ],
)
def test_ollama_host_is_read_as_ollama_reads_it(host: str, url: str) -> None:
    assert ollama_base_url(host) == url
