"""Generation inside the graph with real models: SmolLM2 in-process (llama.cpp) and through ChatOllama over HTTP.

SmolLM2-135M proves the wiring, not answer quality, so these tests assert what the graph must do with any
model: tokens stream out of the generate node, the draft is the model's text, the output rails judge it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from langchain_core.messages import HumanMessage
from ollama_server import OllamaServer

from agent import Settings, build_agent
from agent.llamacpp import ChatLlamaCpp
from agent.services import Services
from agent.turns import ask, thread_config
from loaders.ingest import file_units, ingest

QUESTION = "Where was Iwan Roberts born?"


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory, documents_dir: Path) -> Settings:
    settings = Settings(db=f"sqlite:///{tmp_path_factory.mktemp('gen') / 'railgraph.db'}", llm="extractive")
    services = Services.create(settings)
    ingest(
        file_units([documents_dir / "unstructured_example_docs" / "norwich-city.txt"]),
        services.store,
    )
    services.close()
    return settings


def assert_judged_by_output_rails(values: dict) -> None:
    rails = [verdict["rail"] for verdict in values["rails"]]
    assert "citations" in rails and "injection detection" in rails
    assert values["status"] in {"answered", "blocked"}
    assert values["messages"][-1].text == values["answer"] != ""


def test_llamacpp_tokens_stream_through_astream_events(database: Settings, gguf_path: Path) -> None:
    settings = database.model_copy(update={"llm": f"llamacpp:{gguf_path}", "max_tokens": 48})
    agent = build_agent(services=Services.create(settings))

    async def run() -> tuple[list[str], dict]:
        config = thread_config("llamacpp")
        tokens = [
            event["data"]["chunk"].text
            async for event in agent.astream_events({"messages": [HumanMessage(QUESTION)]}, config, version="v2")
            if event["event"] == "on_chat_model_stream" and event["metadata"].get("langgraph_node") == "generate"
        ]
        return tokens, (await agent.aget_state(config)).values

    tokens, values = asyncio.run(run())
    assert len(tokens) > 3, "the answer arrives token by token"
    assert values["draft"] == "".join(tokens).strip()
    assert_judged_by_output_rails(values)


def test_chat_ollama_over_http_is_detected_and_streams(database: Settings, gguf_path: Path) -> None:
    with OllamaServer(ChatLlamaCpp(model_path=gguf_path, max_tokens=48), models=("smollm2:latest",)) as server:
        settings = database.model_copy(update={"llm": "auto", "ollama_host": server.url, "ollama_model": "smollm2"})
        services = Services.create(settings)
        assert services.chat.name == "ollama:smollm2"
        agent = build_agent(services=services)
        tokens: list[str] = []
        result = ask(agent, QUESTION, on_token=tokens.append)
    values = agent.get_state(thread_config(result["thread_id"])).values
    assert len(tokens) > 3 and values["draft"] == "".join(tokens).strip()
    assert_judged_by_output_rails(values)
