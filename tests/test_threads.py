"""Threads: listed, shown, deleted and resumed through the ``railgraph`` command; pruned checkpoints stay bounded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import NORWICH, railgraph
from langchain_core.messages import AIMessage, HumanMessage

from agent import Settings, build_agent
from agent.memory import SqliteCheckpointer
from agent.services import Services, services_for
from agent.threads import thread_messages
from agent.turns import ask, decide, thread_config, waiting_review
from loaders.ingest import file_units, ingest
from rails import Guard


def test_chat_resumes_a_thread_in_a_new_process_and_threads_commands_manage_it(
    norwich_env: dict[str, str], guard: Guard
) -> None:
    env = norwich_env
    first = railgraph("chat", "--thread", "t-1", env=env, input_text="Where was Iwan Roberts born?\n")
    assert first.returncode == 0, first.stderr
    assert "Bangor" in first.stdout

    # A second process: "he" is resolved from the thread the first one left in the database.
    second = railgraph("chat", "--thread", "t-1", env=env, input_text="How many caps did he win for Wales?\n")
    assert second.returncode == 0, second.stderr
    assert "2 earlier messages" in second.stderr
    assert "fifteen caps" in second.stdout

    # The CLI's `ask` into review has its own tests (test_cli.py); here the pending thread is made in-process.
    reviewed = Services.create(Settings(db=env["RAILGRAPH_DB"], llm="extractive", approval="always"), guard=guard)
    pending = ask(build_agent(services=reviewed), "Which clubs did Iwan Roberts play for?", thread_id="t-2")
    reviewed.close()
    assert pending["status"] == "pending_review"

    listed = json.loads(railgraph("threads", "list", "--json", env=env).stdout)
    by_id = {thread["thread_id"]: thread for thread in listed}
    assert set(by_id) == {"t-1", "t-2"}
    assert by_id["t-1"]["turns"] == 2 and by_id["t-1"]["first_question"] == "Where was Iwan Roberts born?"
    assert by_id["t-1"]["pending_review"] is False and by_id["t-2"]["pending_review"] is True
    assert by_id["t-1"]["last_activity"].endswith("Z")

    shown = json.loads(railgraph("threads", "show", "t-1", "--json", env=env).stdout)
    assert [message["role"] for message in shown["messages"]] == ["human", "ai", "human", "ai"]
    assert shown["messages"][2]["content"] == "How many caps did he win for Wales?"

    deleted = railgraph("threads", "delete", "t-2", "--yes", env=env)
    assert deleted.returncode == 0, deleted.stderr
    assert "rejected its pending review" in deleted.stderr
    assert railgraph("review", "list", "--json", env=env).stdout.strip() == "[]"
    log = json.loads(railgraph("review", "log", "--json", env=env).stdout)
    assert any(entry["action"] == "rejected" and entry["reason"] == "thread deleted" for entry in log)
    remaining = [thread["thread_id"] for thread in json.loads(railgraph("threads", "list", "--json", env=env).stdout)]
    assert remaining == ["t-1"]

    for command in (["threads", "show", "nope"], ["threads", "delete", "nope", "--yes"]):
        unknown = railgraph(*command, env=env)
        assert unknown.returncode == 1
        assert "no thread with id 'nope'" in unknown.stderr and "threads list" in unknown.stderr


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, documents_dir: Path) -> Settings:
    root = tmp_path_factory.mktemp("growth")
    settings = Settings(db=f"sqlite:///{root / 'railgraph.db'}", llm="extractive")
    report = ingest(file_units([documents_dir / NORWICH]), services_for(settings).store)
    assert not report.failed
    return settings


def test_two_hundred_turns_stay_within_three_times_their_text_and_still_resume(corpus: Settings) -> None:
    graph = build_agent(corpus)
    saver = SqliteCheckpointer.open(corpus.sqlite_path)
    thread = "long"
    # Two real turns give real questions and answers; 197 more are replayed as state updates (one checkpoint
    # each, through the same pruning checkpointer), since 200 real turns take minutes (bench/thread_growth.py).
    pairs = []
    for question in ("Where was Iwan Roberts born?", "When was Norwich City founded?"):
        result = ask(graph, question, thread_id=thread)
        pairs.append((question, result["answer"]))
    for turn in range(197):
        question, answer = pairs[turn % 2]
        update = [HumanMessage(f"{question} ({turn})"), AIMessage(answer)]
        graph.update_state(thread_config(thread), {"messages": update}, as_node="respond")

    # The 200th turn waits for a reviewer: pruning must keep the interrupt it resumes from.
    settings = corpus.model_copy(update={"approval": "always"})
    reviewed = build_agent(services=Services.create(settings, guard=services_for(corpus).guard))
    result = ask(reviewed, "Which clubs did Iwan Roberts play for?", thread_id=thread)
    assert result["status"] == "pending_review"
    assert len(list(saver.list(thread_config(thread)))) == 1
    review_id = waiting_review(reviewed, thread)
    assert review_id == result["review_id"]
    reviews = services_for(settings).reviews
    decided = decide(reviewed, reviews, review_id, {"type": "accept", "args": None}, reviewer="ana")
    assert decided["status"] == "answered" and "Iwan Roberts" in decided["answer"]

    messages = thread_messages(saver, thread)
    assert len(messages) == 400
    assert messages[-1].text == decided["answer"]
    text_bytes = sum(len(message.text.encode()) for message in messages)
    assert saver.thread_bytes(thread) <= 3 * text_bytes
    assert len(list(saver.list(thread_config(thread)))) == 1

    # And the thread still answers, a follow-up resolved from its history.
    follow_up = ask(graph, "How many caps did he win for Wales?", thread_id=thread)
    assert "fifteen caps" in follow_up["answer"]


def test_keep_checkpoints_sets_the_time_travel_depth(corpus: Settings) -> None:
    graph = build_agent(corpus.model_copy(update={"keep_checkpoints": 3}))
    ask(graph, "Where was Iwan Roberts born?", thread_id="depth")
    ask(graph, "When was Norwich City founded?", thread_id="depth")
    history = list(graph.get_state_history(thread_config("depth")))
    assert len(history) == 3
    assert len(history[0].values["messages"]) == 4

    everything = build_agent(corpus.model_copy(update={"keep_checkpoints": 0}))
    ask(everything, "Where was Iwan Roberts born?", thread_id="all")
    # One checkpoint per step of the turn: input, each node, the end.
    assert len(list(everything.get_state_history(thread_config("all")))) > 5
