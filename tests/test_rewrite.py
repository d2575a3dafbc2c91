"""Follow-up questions are made standalone before retrieval: by rule in extractive mode, by the model otherwise."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage

from agent import Settings, build_agent
from agent.graph import CompiledStateGraph
from agent.llamacpp import ChatLlamaCpp
from agent.models import ChatModelChoice
from agent.rewrite import llm_rewrite, rule_rewrite
from agent.services import Services, services_for
from agent.turns import thread_config
from loaders.ingest import file_units, ingest

FIRST = "Where was Iwan Roberts born?"
FOLLOW_UP = "And how many caps did he win?"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, documents_dir: Path) -> Settings:
    root = tmp_path_factory.mktemp("rewrite")
    settings = Settings(db=f"sqlite:///{root / 'railgraph.db'}", llm="extractive", max_tokens=32)
    services = services_for(settings)
    docs = documents_dir / "unstructured_example_docs"
    report = ingest(file_units([docs / "norwich-city.txt", docs / "fake-text.txt"]), services.store)
    assert not report.failed and report.added > 5
    return settings


def _turn(graph: CompiledStateGraph, question: str, thread_id: str) -> dict[str, Any]:
    return graph.invoke({"messages": [HumanMessage(question)]}, thread_config(thread_id))


def test_follow_up_is_searched_with_the_earlier_subject(corpus: Settings) -> None:
    graph = build_agent(corpus)
    first = _turn(graph, FIRST, "rule-thread")
    assert first["search_query"] == FIRST, "the first turn of a thread is searched as asked"
    second = _turn(graph, FOLLOW_UP, "rule-thread")
    assert second["question"] == FOLLOW_UP
    assert FOLLOW_UP in second["search_query"] and "Iwan Roberts" in second["search_query"]
    assert second["sources"] and all(s["source"].endswith("norwich-city.txt") for s in second["sources"])
    # The biography says it twice: "fifteen caps" in one paragraph, "a total of 15 caps" in another.
    assert re.search(r"\b(15|fifteen) caps\b", second["answer"]), second["answer"]


def test_rule_keeps_standalone_questions_and_first_turns() -> None:
    assert rule_rewrite(FOLLOW_UP, []) == FOLLOW_UP
    assert rule_rewrite("When was Norwich City founded?", [FIRST]) == "When was Norwich City founded?"
    assert rule_rewrite("What about its population?", ["What is the capital of France?"]) == (
        "What about its population? France"
    )
    # A chain of follow-ups still reaches the subject named two questions back.
    assert rule_rewrite("When did he retire?", [FIRST, FOLLOW_UP]).endswith("Iwan Roberts")


def test_chat_model_writes_the_standalone_query(corpus: Settings, gguf_path: Path) -> None:
    model = ChatLlamaCpp(model_path=gguf_path, max_tokens=32, seed=7)
    chat = ChatModelChoice(model=model, name="llamacpp:test", reason="test")
    # One source keeps the answer's prompt short: the model's time on two shared cores is most of this test.
    settings = corpus.model_copy(update={"top_k": 1})
    graph = build_agent(services=Services.create(settings, chat=chat, guard=services_for(corpus).guard))
    earlier = [HumanMessage(FIRST), AIMessage("Iwan Roberts was born in Bangor [1].")]
    state = graph.invoke({"messages": [*earlier, HumanMessage(FOLLOW_UP)]}, thread_config("llm-thread"))
    # SmolLM2-135M proves the wiring, not the quality: the model's query (greedy, so repeatable) is the one used.
    expected = llm_rewrite(model, FOLLOW_UP, earlier)
    assert expected and state["search_query"] == expected
