"""Topical rails and the dialog path through the real rails and graph: off-limits topics added in config.yml, canned
responses (a greeting) answered without a search, and "talk to a human" handed to the review queue."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import NORWICH, copy_rails_config
from langchain_core.messages import AIMessage, HumanMessage

from agent import Settings, build_agent
from agent.graph import CompiledStateGraph
from agent.services import Services
from agent.turns import decide, thread_config
from loaders.ingest import file_units, ingest
from rails import DEFAULT_CONFIG_DIR, Guard

CONFIG = yaml.safe_load((DEFAULT_CONFIG_DIR / "config.yml").read_text(encoding="utf-8"))["custom_data"]


@pytest.fixture(scope="module")
def agent(
    tmp_path_factory: pytest.TempPathFactory, documents_dir: Path, guard: Guard
) -> tuple[CompiledStateGraph, Services]:
    """The extractive agent over the Norwich City article, approval policy `never`."""
    settings = Settings(db=f"sqlite:///{tmp_path_factory.mktemp('topics') / 'railgraph.db'}", llm="extractive")
    services = Services.create(settings, guard=guard)
    assert not ingest(file_units([documents_dir / NORWICH]), services.store).failed
    return build_agent(services=services), services


def test_a_greeting_gets_the_canned_response_and_no_search(agent: tuple[CompiledStateGraph, Services]) -> None:
    graph, _ = agent
    greeting = CONFIG["canned_responses"]["responses"]["greeting"]["response"].strip()
    result = graph.invoke({"messages": [HumanMessage("Hello there!")]}, thread_config("greeting"))
    assert result["answer"] == greeting and result["sources"] == []
    assert ("dialog", "respond") in [(v["rail"], v["verdict"]) for v in result["rails"]]
    assert [type(m) for m in result["messages"]] == [HumanMessage, AIMessage]

    # A greeting that carries a question is a question.
    asked = graph.invoke({"messages": [HumanMessage("Hello, where was Iwan Roberts born?")]}, thread_config("hi-q"))
    assert asked["answer"] != greeting and "Bangor" in asked["answer"] and asked["sources"]


def test_asking_for_a_person_goes_to_the_review_queue_and_the_reviewer_answers(
    agent: tuple[CompiledStateGraph, Services],
) -> None:
    graph, services = agent
    config = thread_config("handoff")
    asked = "Can I talk to a real person, please? Write to me at ana.lopez@example.com"
    graph.invoke({"messages": [HumanMessage(asked)]}, config)
    snapshot = graph.get_state(config)
    assert snapshot.interrupts, "the hand-off waits for a reviewer even under RAILGRAPH_APPROVAL=never"
    review = services.reviews.get(snapshot.values["review_id"])
    assert review.flags == ["handoff"] and review.draft == ""
    # Personal data is masked in what the reviewer and the thread keep, as for any question.
    assert "ana.lopez" not in review.question and "<EMAIL_ADDRESS>" in review.question
    assert "ana.lopez" not in snapshot.values["messages"][0].text
    assert snapshot.values["answer"] == CONFIG["human_handoff"]["reply"].strip()

    answer = "Hello, this is Ana from the club office. How can I help?"
    landed = decide(graph, services.reviews, review.id, {"type": "response", "args": answer}, reviewer="ana")
    assert (landed["status"], landed["answer"]) == ("answered", answer)
    messages = graph.get_state(config).values["messages"]
    assert [(type(m), m.text) for m in messages][1:] == [(AIMessage, answer)]

    # Questions that merely mention people are answered as usual.
    graph.invoke({"messages": [HumanMessage("Who is the head of human resources?")]}, thread_config("hr"))
    assert not graph.get_state(thread_config("hr")).interrupts


def test_an_off_limits_topic_added_in_config_is_refused_by_name(tmp_path: Path) -> None:
    folder = copy_rails_config(tmp_path)
    config_file = folder / "config.yml"
    config = yaml.safe_load(config_file.read_text(encoding="utf-8"))
    config["custom_data"]["off_limits_topics"]["topics"] = {
        "medical diagnosis": ["Do I have cancer?", "What illness do my symptoms mean?", "Diagnose my rash."],
    }
    config["custom_data"]["off_limits_topics"]["allowed"] = ["What does the report say about cancer research?"]
    config["rails"]["input"]["flows"].insert(3, "off limits topics")
    config_file.write_text(yaml.safe_dump(config), encoding="utf-8")
    custom = Guard(folder)
    try:
        refused = custom.check_input("I have a fever and a headache, what disease do I have?")
        allowed = custom.check_input("How much did the charity spend on cancer research?")
    finally:
        custom.close()
    assert refused.blocked and refused.policy == "off-limits topics"
    assert "can't help" in refused.message and "medical diagnosis" in refused.verdicts[-1]["detail"]
    assert not allowed.blocked
