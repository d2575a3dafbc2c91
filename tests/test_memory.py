"""Long-term memory of what users say about themselves, and the token budget of the history the model is shown."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from conftest import railgraph
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.messages.utils import count_tokens_approximately

from agent import Settings, build_agent
from agent.graph import CompiledStateGraph
from agent.longterm import namespace
from agent.memory import SUMMARY_PROMPT, SUMMARY_TOKENS, open_memory_store
from agent.nodes import chat_prompt
from agent.services import services_for
from agent.turns import thread_config
from loaders.ingest import file_units, ingest

OSLO = "# Oslo office hours\n\nThe Oslo office is open from 08:00 to 16:00 on weekdays. In July it closes at 15:00.\n"
BERGEN = "# Bergen office hours\n\nThe Bergen office is open from 09:00 to 17:30 on weekdays, to 14:00 on Fridays.\n"


def office_hours(root: Path, db: str) -> Settings:
    """Settings of a database ``db`` holding two office-hours documents, one per office."""
    (root / "oslo.md").write_text(OSLO)
    (root / "bergen.md").write_text(BERGEN)
    settings = Settings(db=db, llm="extractive")
    report = ingest(file_units([root / "oslo.md", root / "bergen.md"]), services_for(settings).store)
    assert not report.failed and report.added == 2
    return settings


@pytest.fixture(scope="module")
def offices(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """The office-hours database on SQLite, for the tests of what the model is shown."""
    root = tmp_path_factory.mktemp("offices")
    return office_hours(root, f"sqlite:///{root / 'railgraph.db'}")


@pytest.fixture
def offices_db(db_url: str, tmp_path: Path) -> Settings:
    """The office-hours database on each backend: the memories live in its LangGraph store (SQLite or Postgres)."""
    return office_hours(tmp_path, db_url)


def turn(graph: CompiledStateGraph, question: str, thread: str, user: str) -> dict[str, Any]:
    config = {"configurable": {"thread_id": thread, "user_id": user}}
    return graph.invoke({"messages": [HumanMessage(question)]}, config)


def test_a_stated_fact_is_remembered_across_threads_for_that_user_only(offices_db: Settings) -> None:
    offices = offices_db
    graph = build_agent(offices)
    stated = turn(graph, "I work in the Oslo office.", "ana-1", "ana")
    # A statement is acknowledged, not searched for.
    assert "I work in the Oslo office" in stated["answer"] and stated["sources"] == []
    assert stated["search_query"] is None
    turn(graph, "i work in the oslo office", "ana-2", "ana")
    assert len(open_memory_store(offices).search(namespace("ana"))) == 1

    asked = turn(graph, "Which office hours apply to me?", "ana-3", "ana")
    assert asked["sources"][0]["source"].endswith("oslo.md")
    assert "08:00 to 16:00" in asked["answer"]
    assert asked["user_memories"] == ["I work in the Oslo office"]

    other = turn(graph, "Which office hours apply to me?", "bob-1", "bob")
    assert other["user_memories"] == [] and "Oslo" not in other["search_query"]

    # A newer fact about the same thing replaces the older one.
    turn(graph, "I now work in the Bergen office.", "ana-4", "ana")
    moved = turn(graph, "Which office hours apply to me?", "ana-5", "ana")
    assert moved["user_memories"] == ["I now work in the Bergen office"]
    assert moved["sources"][0]["source"].endswith("bergen.md")


def test_memory_list_and_forget_and_ask_as_a_user(offices_db: Settings) -> None:
    offices = offices_db
    env = os.environ | {"RAILGRAPH_DB": offices.db, "RAILGRAPH_LLM": "extractive", "COLUMNS": "200"}
    told = railgraph(
        "ask", "My manager is Kari. Please remember that I prefer short answers.", "--user", "kim", "--json", env=env
    )
    assert told.returncode == 0, told.stderr
    assert json.loads(told.stdout)["answer"].startswith("Noted")

    listed = json.loads(railgraph("memory", "list", "--user", "kim", "--json", env=env).stdout)
    assert sorted(memory["text"] for memory in listed) == ["I prefer short answers", "My manager is Kari"]
    assert all(memory["user"] == "kim" for memory in listed)
    assert json.loads(railgraph("memory", "list", "--user", "lee", "--json", env=env).stdout) == []

    manager = next(memory["id"] for memory in listed if "Kari" in memory["text"])
    forgot = railgraph("memory", "forget", manager, "--user", "kim", env=env)
    assert forgot.returncode == 0, forgot.stderr
    left = json.loads(railgraph("memory", "list", "--user", "kim", "--json", env=env).stdout)
    assert [memory["text"] for memory in left] == ["I prefer short answers"]
    graph = build_agent(offices)
    assert turn(graph, "Who is my manager?", "kim-2", "kim")["user_memories"] == ["I prefer short answers"]

    unknown = railgraph("memory", "forget", manager, "--user", "kim", env=env)
    assert unknown.returncode == 1 and "no memory" in unknown.stderr
    assert railgraph("memory", "forget", "--user", "kim", env=env).returncode != 0
    assert railgraph("memory", "forget", "--all", "--user", "kim", env=env).returncode == 0
    assert json.loads(railgraph("memory", "list", "--user", "kim", "--json", env=env).stdout) == []


def seed(graph: CompiledStateGraph, thread: str, pairs: int) -> None:
    """Earlier turns of a thread, written as state updates (as if answered)."""
    for n in range(pairs):
        update = [
            HumanMessage(f"Question {n}: what are the opening hours of the office on day {n}?"),
            AIMessage(f"Answer {n}: the office is open from 08:00 to 16:00 on day {n}, as the handbook says. " * 2),
        ]
        graph.update_state(thread_config(thread), {"messages": update}, as_node="respond")


def test_prompt_keeps_to_the_token_budget_while_the_thread_keeps_everything(offices: Settings) -> None:
    settings = offices.model_copy(update={"history_tokens": 300})
    graph = build_agent(settings)
    seed(graph, "budget", 30)
    turn(graph, "I work in the Oslo office. What are the office hours?", "budget", "ana")
    values = graph.get_state(thread_config("budget")).values
    assert len(values["messages"]) == 62

    prompt = chat_prompt(values, {"configurable": {"services": services_for(settings)}})
    earlier = prompt[1:-1]
    assert 0 < count_tokens_approximately(earlier) <= 300
    assert isinstance(earlier[0], HumanMessage)
    assert earlier == values["messages"][-1 - len(earlier) : -1]
    assert "What you know about the user:\n- I work in the Oslo office" in prompt[0].text
    # Extractive mode has no model to summarise with: nothing stands in for the left-out messages.
    assert "Summary" not in prompt[0].text and not values.get("summary")


class Prompts(BaseCallbackHandler):
    """Records every prompt sent to a chat model."""

    def __init__(self) -> None:
        self.prompts: list[list[BaseMessage]] = []

    def on_chat_model_start(self, serialized: Any, messages: list[list[BaseMessage]], **kwargs: Any) -> None:
        self.prompts.extend(messages)


def test_a_chat_model_summarises_what_no_longer_fits_once_per_turn(
    tmp_path: Path, documents_dir: Path, gguf_path: Path
) -> None:
    budget = SUMMARY_TOKENS + 150
    settings = Settings(
        db=f"sqlite:///{tmp_path / 'railgraph.db'}", llm=f"llamacpp:{gguf_path}", max_tokens=24, history_tokens=budget
    )
    ingest(file_units([documents_dir / "unstructured_example_docs" / "norwich-city.txt"]), services_for(settings).store)
    graph = build_agent(settings)
    seed(graph, "long", 8)
    recorder = Prompts()
    config = {"configurable": {"thread_id": "long", "user_id": "ana"}, "callbacks": [recorder]}
    graph.invoke({"messages": [HumanMessage("Where was Iwan Roberts born?")]}, config)

    summaries = [prompt for prompt in recorder.prompts if prompt[0].text == SUMMARY_PROMPT]
    assert len(summaries) == 1
    values = graph.get_state(thread_config("long")).values
    assert values["summary"] and len(values["messages"]) == 18
    # The summary call saw the left-out messages, the query rewriter only the ones within the budget.
    assert "Question 0" in summaries[0][-1].text
    rewrite = next(prompt for prompt in recorder.prompts if prompt[-1].text.endswith("Standalone query:"))
    assert "Question 0" not in rewrite[-1].text and "Question 7" in rewrite[-1].text

    # The prompt the answer was drafted from (generate's, rebuilt from the turn's state before its answer).
    before_answer = values | {"messages": values["messages"][:-1]}
    drafted = chat_prompt(before_answer, {"configurable": {"services": services_for(settings)}})
    assert f"Summary of the earlier conversation: {values['summary']}" in drafted[0].text
    earlier = drafted[1:-1]
    assert values["summarized"] == 16 - len(earlier)
    assert 0 < count_tokens_approximately(earlier) <= budget - SUMMARY_TOKENS
    assert values["messages"][0].text.startswith("Question 0")
