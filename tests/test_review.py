"""The reviewer's approval flow on the real store, rails, checkpointer and SQLite file, in extractive mode:
the flagged policy, the Agent Inbox interrupt, exactly-once resume (two processes racing, a decider that
died), the append-only audit log, the fine-tuning export, and ``chat`` waiting for a decision."""

from __future__ import annotations

import io
import json
import multiprocessing
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlean
from conftest import NORWICH, railgraph
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.types import Command

from agent import Settings, build_agent, turns
from agent.graph import CompiledStateGraph
from agent.nodes import request_review
from agent.review import Decision, review_flags
from agent.services import Services
from agent.turns import ReviewPending, ask, decide, poll_review, resume_decided, run_in_progress, thread_config
from loaders.ingest import file_units, ingest
from rails import Guard

BORN = "Where was Iwan Roberts born?"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, documents_dir: Path, guard: Guard) -> Settings:
    """A database holding the Norwich City article."""
    settings = Settings(db=f"sqlite:///{tmp_path_factory.mktemp('review') / 'railgraph.db'}", llm="extractive")
    services = Services.create(settings, guard=guard)
    assert not ingest(file_units([documents_dir / NORWICH]), services.store).failed
    services.close()
    return settings


def agent_for(corpus: Settings, guard: Guard, **changes: Any) -> tuple[CompiledStateGraph, Services]:
    services = Services.create(corpus.model_copy(update=changes), guard=guard)
    return build_agent(services=services), services


@pytest.fixture(scope="module")
def reviewed(corpus: Settings, guard: Guard) -> tuple[CompiledStateGraph, Services]:
    return agent_for(corpus, guard, approval="always")


def test_flagged_policy_reviews_only_flagged_drafts_and_names_why(corpus: Settings, guard: Guard) -> None:
    graph, services = agent_for(corpus, guard, approval="flagged", review_topics=["salary", "transfer fee"])
    confident = ask(graph, BORN)
    assert confident["status"] == "answered" and "Bangor" in confident["answer"]

    topic = ask(graph, "What was Iwan Roberts's TRANSFER   fee to Norwich?")
    assert topic["status"] == "pending_review"
    assert "topic:transfer fee" in services.reviews.get(topic["review_id"]).flags

    unsure = ask(graph, "What is the capital of Mongolia?")
    assert unsure["status"] == "pending_review"
    assert "low_confidence" in services.reviews.get(unsure["review_id"]).flags
    assert unsure["review_id"] in [review.id for review in services.reviews.pending(flag="low_confidence")]
    assert topic["review_id"] in [review.id for review in services.reviews.pending(flag="topic:transfer fee")]


def test_flags_count_flag_verdicts_not_masked_personal_data() -> None:
    sources = [{"score": 0.9}]
    masked = [{"rail": "pii input", "verdict": "modify", "detail": "masked 1 email", "score": None}]
    assert review_flags("Is it salaried?", sources, masked, min_score=0.65, topics=["salary"]) == []
    unsupported = [{"rail": "citations", "verdict": "flag", "detail": "1 unsupported", "score": None}]
    flags = review_flags("Her Salary?", [{"score": 0.3}], unsupported, min_score=0.65, topics=["salary"])
    assert flags == ["rail:citations", "low_confidence", "topic:salary"]
    assert review_flags("anything", [], [], min_score=0.0, topics=[]) == ["low_confidence"]


def test_interrupt_is_an_agent_inbox_human_interrupt_and_resume_reruns_no_side_effect(
    reviewed: tuple[CompiledStateGraph, Services],
) -> None:
    graph, services = reviewed
    pending = ask(graph, BORN, thread_id="inbox-thread")
    config = thread_config("inbox-thread")
    (interrupt,) = graph.get_state(config).interrupts
    (request,) = interrupt.value
    assert set(request) == {"action_request", "config", "description"}, "extra keys break the Agent Inbox UI"
    assert set(request["action_request"]) == {"action", "args"}
    args = request["action_request"]["args"]
    assert "Bangor" in args["draft"] and args["sources"] and args["rails"] and args["flags"] == []
    assert request["config"] == {"allow_ignore": True, "allow_respond": True, "allow_edit": True, "allow_accept": True}

    # What Agent Inbox sends through LangGraph's server: a list of one HumanResponse. Only the interrupted node
    # and the ones after it run: the review is not queued (or logged) a second time.
    answer = "He was born in Bangor, Wales."
    resumed = graph.stream(
        Command(resume=[{"type": "response", "args": answer}]),
        config | {"configurable": {"thread_id": "inbox-thread", "reviewer": "inbox-user"}},
        stream_mode="updates",
    )
    assert [name for update in resumed for name in update] == ["approval", "respond"]
    values = graph.get_state(config).values
    assert values["answer"] == answer and [type(m) for m in values["messages"]] == [HumanMessage, AIMessage]
    review = services.reviews.get(pending["review_id"])
    assert (review.status, review.reviewer, review.final_text) == ("responded", "inbox-user", answer)
    log = services.reviews.log(review_id=review.id)
    assert [(entry.actor, entry.action) for entry in log] == [("agent", "submitted"), ("inbox-user", "responded")]
    assert log[1].before_text == review.draft and log[1].after_text == answer


def test_a_new_question_never_abandons_a_pending_review(reviewed: tuple[CompiledStateGraph, Services]) -> None:
    graph, services = reviewed
    pending = ask(graph, BORN, thread_id="busy-thread")
    with pytest.raises(ReviewPending, match=pending["review_id"]):
        ask(graph, "How many caps did Iwan Roberts win?", thread_id="busy-thread")
    assert services.reviews.pending_for_thread("busy-thread").id == pending["review_id"]


def test_a_decision_whose_decider_died_is_resumed_once(reviewed: tuple[CompiledStateGraph, Services]) -> None:
    graph, services = reviewed
    pending = ask(graph, BORN, thread_id="crash-thread")
    review = services.reviews.get(pending["review_id"])
    # The reviewer's claim commits, then the process dies before resuming the graph.
    services.reviews.decide(review.id, Decision("edited", "Bangor [1].", None), reviewer="ana")
    assert graph.get_state(thread_config("crash-thread")).interrupts

    assert resume_decided(graph, services.reviews) == [], "a fresh lease may belong to a decider still resuming"
    assert resume_decided(graph, services.reviews, stale_after=timedelta(0)) == [review.id]
    assert resume_decided(graph, services.reviews, stale_after=timedelta(0)) == []
    values = graph.get_state(thread_config("crash-thread")).values
    assert values["answer"] == "Bangor [1]." and [m.text for m in values["messages"][1:]] == ["Bangor [1]."]
    assert [entry.action for entry in services.reviews.log(review_id=review.id)] == ["submitted", "edited"]


def test_a_reviewed_answer_lands_before_the_thread_takes_a_new_question(
    reviewed: tuple[CompiledStateGraph, Services],
) -> None:
    graph, services = reviewed
    thread, config = "resuming-thread", thread_config("resuming-thread")
    review = services.reviews.get(ask(graph, BORN, thread_id="resuming-thread")["review_id"])
    decided = services.reviews.decide(review.id, Decision("edited", "Bangor [1].", None), reviewer="ana")
    # The decider's resumed run, caught between two nodes: the interrupt is gone, the answer is not written yet.
    graph.invoke(Command(resume=decided.response()), config, interrupt_after=["approval"])
    assert not graph.get_state(config).interrupts and run_in_progress(graph, thread)
    assert poll_review(graph, services.reviews, thread) is None, "the answer has not landed yet"

    def finish_resume() -> None:
        time.sleep(0.5)
        graph.invoke(None, config)
        services.reviews.mark_resumed(review.id)

    decider = threading.Thread(target=finish_resume)
    decider.start()
    # A question asked meanwhile waits for the resumed run instead of running beside it.
    follow_up = ask(graph, "How many caps did Iwan Roberts win?", thread_id=thread)
    decider.join()
    assert follow_up["status"] == "pending_review"
    messages = graph.get_state(config).values["messages"]
    assert [type(m) for m in messages] == [HumanMessage, AIMessage, HumanMessage]
    assert messages[1].text == "Bangor [1]."
    assert poll_review(graph, services.reviews, thread) is None, "the follow-up waits for its own review"


def queue_review_before_its_checkpoint(graph: CompiledStateGraph, services: Services, thread: str) -> str:
    """Run a turn on ``thread`` up to ``request_review`` and queue its review without saving that step's checkpoint.

    request_review commits the queue's row before its checkpoint is saved (in the background): a reviewer can
    decide while the thread's latest checkpoint still says nothing of the review.
    """
    config = thread_config(thread)
    graph.invoke({"messages": [HumanMessage(BORN)]}, config, interrupt_before=["request_review"])
    state = graph.get_state(config).values
    return request_review(state, {"configurable": {"thread_id": thread, "services": services}})["review_id"]


def test_a_decider_ahead_of_the_threads_checkpoint_waits_for_the_thread(
    reviewed: tuple[CompiledStateGraph, Services],
) -> None:
    graph, services = reviewed
    thread, config = "lagging-thread", thread_config("lagging-thread")
    review_id = queue_review_before_its_checkpoint(graph, services, thread)

    def approve() -> None:
        decide(graph, services.reviews, review_id, {"type": "accept", "args": None}, reviewer="ana")

    decider = threading.Thread(target=approve)
    decider.start()
    time.sleep(0.5)
    assert services.reviews.get(review_id).status == "approved"
    assert services.reviews.get(review_id).resumed_at is None, "marked resumed before the thread took the decision"

    graph.invoke(None, config)  # the thread's run goes on: approval reads the recorded decision, no interrupt
    decider.join()
    assert services.reviews.get(review_id).resumed_at is not None
    snapshot = graph.get_state(config)
    assert not snapshot.interrupts and not snapshot.tasks
    assert [type(m) for m in snapshot.values["messages"]] == [HumanMessage, AIMessage]
    assert "Bangor" in snapshot.values["answer"]


def test_a_decider_behind_a_thread_that_moved_on_marks_the_review_and_leaves_the_next_one(
    reviewed: tuple[CompiledStateGraph, Services], monkeypatch: pytest.MonkeyPatch
) -> None:
    graph, services = reviewed
    thread, config = "moved-on-thread", thread_config("moved-on-thread")
    review_id = queue_review_before_its_checkpoint(graph, services, thread)
    record = services.reviews.decide
    follow_ups: list[dict[str, Any]] = []

    def record_then_fall_behind(*args: Any, **kwargs: Any) -> Any:
        decided = record(*args, **kwargs)
        if kwargs.get("claim", True):  # the reviewer's recording, not the graph's own (claim=False) in approval
            # The decider is descheduled here; meanwhile the thread reads the recorded decision itself, ends the
            # turn, and its user asks the next question, which waits for a review of its own.
            graph.invoke(None, config)
            follow_ups.append(ask(graph, "How many caps did Iwan Roberts win?", thread_id=thread))
        return decided

    monkeypatch.setattr(services.reviews, "decide", record_then_fall_behind)
    # A decider that keeps waiting for the past turn gives up after this, leaving the review unmarked.
    monkeypatch.setattr(turns, "ARRIVAL_SECONDS", 3.0)
    decide(graph, services.reviews, review_id, {"type": "accept", "args": None}, reviewer="ana")

    assert services.reviews.get(review_id).resumed_at is not None, "the thread took the decision; nobody must redo it"
    (follow_up,) = follow_ups
    assert follow_up["status"] == "pending_review" and follow_up["review_id"] != review_id
    assert services.reviews.get(follow_up["review_id"]).status == "pending", "the past decision decided the next draft"
    snapshot = graph.get_state(config)
    assert snapshot.interrupts, "the next question must still wait for its own reviewer"
    assert [type(m) for m in snapshot.values["messages"]] == [HumanMessage, AIMessage, HumanMessage]


def test_audit_log_is_append_only(reviewed: tuple[CompiledStateGraph, Services]) -> None:
    graph, services = reviewed
    ask(graph, BORN, thread_id="audit-thread")
    before = services.reviews.log()
    for statement in ("UPDATE review_audit SET actor = 'mallory'", "DELETE FROM review_audit"):
        with (
            pytest.raises(sqlean.IntegrityError, match="review_audit is append-only"),
            services.db.transaction() as conn,
        ):
            conn.execute(statement)
    assert services.reviews.log() == before and before


def _approve_at_barrier(db_url: str, review_id: str, name: str, barrier: Any, results: Any) -> None:
    """One reviewer's process: load everything, wait for the other, then run `railgraph review approve`."""
    from agent import cli

    settings = cli._settings(db_url)
    cli._agent(settings)
    captured = io.StringIO()
    sys.stderr = captured
    barrier.wait(timeout=240)
    try:
        code = cli.app(["review", "approve", review_id, "--as", name, "--db", db_url], standalone_mode=False) or 0
    except SystemExit as exit_:
        code = exit_.code
    results.put((name, code, captured.getvalue()))


def test_two_reviewers_deciding_at_once_give_one_decision(
    reviewed: tuple[CompiledStateGraph, Services], monkeypatch: pytest.MonkeyPatch
) -> None:
    graph, services = reviewed
    pending = ask(graph, BORN, thread_id="race-thread")
    monkeypatch.setenv("RAILGRAPH_LLM", "extractive")
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(2), context.Queue()
    processes = [
        context.Process(
            target=_approve_at_barrier, args=(services.settings.db, pending["review_id"], name, barrier, results)
        )
        for name in ("ana", "bo")
    ]
    for process in processes:
        process.start()
    outcomes = sorted((results.get(timeout=300) for _ in processes), key=lambda outcome: outcome[1])
    for process in processes:
        process.join(timeout=60)
    (winner, won, _), (_, lost, message) = outcomes
    assert (won, lost) == (0, 2), outcomes
    assert f"already approved by {winner}" in " ".join(message.split()), message

    review = services.reviews.get(pending["review_id"])
    assert (review.status, review.reviewer) == ("approved", winner) and review.resumed_at
    messages = graph.get_state(thread_config("race-thread")).values["messages"]
    assert [type(message) for message in messages] == [HumanMessage, AIMessage]
    decisions = [entry for entry in services.reviews.log(review_id=review.id) if entry.action != "submitted"]
    assert [(entry.actor, entry.action) for entry in decisions] == [(winner, "approved")]


def test_review_commands_decide_log_and_export(norwich_env: dict[str, str], guard: Guard, tmp_path: Path) -> None:
    env = norwich_env
    # The drafts are queued in-process (`railgraph ask` into review is tested in test_cli.py); the commands under
    # test run as processes.
    settings = Settings(db=env["RAILGRAPH_DB"], llm="extractive")
    graph, services = agent_for(settings, guard)
    assert ask(graph, "How many caps did Iwan Roberts win for Wales?", thread_id="t-0")["status"] == "answered"
    graph, reviewed = agent_for(settings, guard, approval="always")
    approved, edited, responded, rejected = (ask(graph, BORN, thread_id=f"t-{n}")["review_id"] for n in range(4))
    services.close()
    reviewed.close()

    listed = json.loads(railgraph("review", "list", "--json", env=env).stdout)
    assert [review["id"] for review in listed] == [approved, edited, responded, rejected], "oldest first"
    assert set(listed[0]) == {"id", "thread_id", "question", "draft", "created_at", "flags"}
    assert json.loads(railgraph("review", "list", "--older-than", "1h", "--json", env=env).stdout) == []
    bad = railgraph("review", "list", "--older-than", "soon", env=env)
    assert bad.returncode == 2 and "30m, 2h or 1d" in bad.stderr

    asked_again = railgraph("ask", "How many caps?", "--thread", "t-0", env=env)
    assert asked_again.returncode == 2 and f"review {approved}" in asked_again.stderr

    shown = json.loads(railgraph("review", "show", approved, "--json", env=env).stdout)
    assert shown["sources"][0]["quote"] and shown["rails"] and shown["flags"] == []
    assert [message["role"] for message in shown["thread"]] == ["user", "assistant"], "the thread before the question"
    assert "fifteen caps" in shown["thread"][1]["content"]
    text = railgraph("review", "show", approved, env=env).stdout
    assert all(part in text for part in ("Bangor", "norwich-city.txt", "prompt attack: pass", "thread so far"))

    assert railgraph("review", "approve", approved, "--as", "ana", env=env).returncode == 0
    unchanged = railgraph("review", "edit", edited, env=env | {"EDITOR": "true"})
    assert unchanged.returncode == 2 and "unchanged" in unchanged.stderr
    assert json.loads(railgraph("review", "list", "--json", env=env).stdout)[0]["id"] == edited, "nothing decided"
    by_editor = railgraph(
        "review", "edit", edited, env=env | {"EDITOR": "sed -i s/Bangor/BANGOR/", "LOGNAME": "cy", "USER": "cy"}
    )
    assert by_editor.returncode == 0, by_editor.stderr
    reply = railgraph(
        "review", "respond", responded, "--text", "Bangor, in Wales.", env=env | {"RAILGRAPH_REVIEWER": "di"}
    )
    assert reply.returncode == 0 and "Bangor, in Wales." in reply.stdout
    refused = railgraph("review", "reject", rejected, "--reason", "off topic", "--as", "ana", "--json", env=env)
    assert json.loads(refused.stdout)["status"] == "rejected"

    log = json.loads(railgraph("review", "log", "--by", "ana", "--json", env=env).stdout)
    assert [(entry["review_id"], entry["action"]) for entry in log] == [(approved, "approved"), (rejected, "rejected")]
    assert log[1]["reason"] == "off topic" and log[1]["before_text"] and log[1]["after_text"] is None
    edit_log = json.loads(railgraph("review", "log", "--review", edited, "--json", env=env).stdout)
    assert [entry["action"] for entry in edit_log] == ["submitted", "edited"]
    assert "BANGOR" in edit_log[1]["after_text"] and "Bangor" in edit_log[1]["before_text"]
    assert edit_log[1]["actor"] == "cy"
    assert json.loads(railgraph("review", "log", "--by", "di", "--json", env=env).stdout)[0]["action"] == "responded"

    dataset = tmp_path / "reviewed.jsonl"
    exported = railgraph("review", "export", "--format", "chat-jsonl", "--output", str(dataset), env=env)
    assert exported.returncode == 0, exported.stderr
    samples = [json.loads(line) for line in dataset.read_text().splitlines()]
    assert len(samples) == 3, "approved, edited and responded; never the rejected one"
    assert [[m["role"] for m in sample["messages"]] for sample in samples] == [["system", "user", "assistant"]] * 3
    assert {sample["messages"][1]["content"] for sample in samples} == {BORN}
    answers = [sample["messages"][2]["content"] for sample in samples]
    assert "Bangor" in answers[0] and "BANGOR" in answers[1] and answers[2] == "Bangor, in Wales."


def _lines(stream: Any, into: queue.Queue) -> None:
    for line in stream:
        into.put(line)


@dataclass
class ChatRun:
    """A ``railgraph chat`` process waiting for a review, and its stderr as read so far and still being read."""

    process: subprocess.Popen
    review_id: str
    seen: str
    stderr: queue.Queue
    stderr_reader: threading.Thread

    def rest_of_stderr(self) -> str:
        """Everything the process wrote to stderr (call once it has exited)."""
        self.stderr_reader.join(timeout=10)
        return self.seen + "".join(self.stderr.queue)


def _chat_until_review(thread: str, questions: list[str], env: dict[str, str]) -> ChatRun:
    """Start ``railgraph chat`` on ``thread`` (every draft reviewed), type ``questions`` then ``exit``, and read its
    stderr until it says it waits for a review."""
    # Started with SIGINT ignored, as a background job is (CI may run the tests so): Ctrl-C must stop the wait anyway.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        chat = subprocess.Popen(
            [sys.executable, "-m", "agent.cli", "chat", "--thread", thread],
            env=env | {"RAILGRAPH_APPROVAL": "always"},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    finally:
        signal.signal(signal.SIGINT, previous)
    lines: queue.Queue = queue.Queue()
    reader = threading.Thread(target=_lines, args=(chat.stderr, lines), daemon=True)
    reader.start()
    assert chat.stdin is not None
    chat.stdin.write("".join(f"{question}\n" for question in [*questions, "exit"]))
    chat.stdin.close()
    seen = ""
    try:
        while not (waiting := re.search(r"waiting for review \(id (\w+)\)", seen)):
            seen += lines.get(timeout=240)
    except BaseException:
        chat.kill()
        raise
    return ChatRun(chat, waiting.group(1), seen, lines, reader)


def test_chat_waits_for_the_review_and_shows_the_decision(norwich_env: dict[str, str]) -> None:
    env = norwich_env
    chat = _chat_until_review("chat-thread", [BORN], env)
    stdout: list[str] = []
    reader = threading.Thread(target=lambda: stdout.extend(chat.process.stdout or []), daemon=True)
    reader.start()
    try:
        approved = railgraph("review", "approve", chat.review_id, "--as", "ana", env=env)
        assert approved.returncode == 0, approved.stderr
        assert chat.process.wait(timeout=120) == 0
    finally:
        chat.process.kill()
    reader.join(timeout=10)
    assert f"review {chat.review_id} decided" in chat.rest_of_stderr()
    answer = "".join(stdout).split("waiting for a human reviewer")[-1]
    assert "Bangor" in answer and "norwich-city.txt" in answer, "the approved answer and its sources"


def test_ctrl_c_stops_waiting_and_the_next_chat_shows_the_decision(norwich_env: dict[str, str]) -> None:
    env = norwich_env
    chat = _chat_until_review("later-thread", [BORN, "How many caps did he win?"], env)
    review_id = chat.review_id
    try:
        chat.process.send_signal(signal.SIGINT)
        assert chat.process.wait(timeout=120) == 0, "Ctrl-C returns to the prompt, and 'exit' leaves"
    finally:
        chat.process.kill()
    seen = chat.rest_of_stderr()
    assert "stopped waiting" in seen
    assert "is waiting for a reviewer's decision" in " ".join(seen.split()), "the second question is not run"
    assert [review["id"] for review in json.loads(railgraph("review", "list", "--json", env=env).stdout)] == [review_id]

    assert railgraph("review", "reject", review_id, "--reason", "ask HR", env=env).returncode == 0
    later = railgraph("chat", "--thread", "later-thread", env=env, input_text="exit\n")
    assert later.returncode == 0 and f"went to review {review_id}" in later.stderr
    assert "A reviewer declined to answer this question: ask HR" in " ".join(later.stdout.split())
