"""Generation inside the graph with real models: SmolLM2 in-process (llama.cpp) and through ChatOllama over HTTP.

SmolLM2-135M proves the wiring, not answer quality, so these tests assert what the graph must do with any
model: the answer streams out of the generate node in chunks the output rails passed, the draft is the model's
text, the output rails judge it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from langchain_core.messages import HumanMessage
from ollama_server import OllamaServer

from agent import Settings, build_agent
from agent.extractive import NOT_FOUND
from agent.llamacpp import ChatLlamaCpp
from agent.nodes import ANSWER_CHUNK
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


def test_llamacpp_answer_streams_through_astream_events_in_checked_chunks(database: Settings, gguf_path: Path) -> None:
    settings = database.model_copy(update={"llm": f"llamacpp:{gguf_path}", "max_tokens": 48})
    agent = build_agent(services=Services.create(settings))

    async def run() -> tuple[list[dict], dict]:
        config = thread_config("llamacpp")
        inputs = {"messages": [HumanMessage(QUESTION)]}
        events = [event async for event in agent.astream_events(inputs, config, version="v2")]
        return events, (await agent.aget_state(config)).values

    events, values = asyncio.run(run())
    raw = [
        e for e in events if e["event"] == "on_chat_model_stream" and e["metadata"].get("langgraph_node") == "generate"
    ]
    chunks = [e["data"]["text"] for e in events if e["event"] == "on_custom_event" and e["name"] == ANSWER_CHUNK]
    assert len(raw) > 3, "the model writes token by token"
    # The raw tokens are tagged for LangGraph's messages mode to leave out; the user gets the checked chunks.
    assert all("nostream" in e["tags"] for e in raw)
    assert values["draft"] == "".join(e["data"]["chunk"].text for e in raw).strip()
    if values["status"] == "answered" and values["answer"] != NOT_FOUND:
        # Sentences the whole-draft check kept passed the chunk checks too: the user saw them stream.
        assert chunks
    assert_judged_by_output_rails(values)


def test_chat_ollama_over_http_is_detected_and_streams(database: Settings, gguf_path: Path) -> None:
    with OllamaServer(ChatLlamaCpp(model_path=gguf_path, max_tokens=48), models=("smollm2:latest",)) as server:
        settings = database.model_copy(update={"llm": "auto", "ollama_host": server.url, "ollama_model": "smollm2"})
        services = Services.create(settings)
        assert services.chat.name == "ollama:smollm2"
        agent = build_agent(services=services)
        chunks: list[str] = []
        result = ask(agent, QUESTION, on_chunk=chunks.append)
    values = agent.get_state(thread_config(result["thread_id"])).values
    assert values["draft"] and (chunks or values["status"] == "blocked")
    assert_judged_by_output_rails(values)
