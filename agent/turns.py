"""One user turn through the graph, and reviewer decisions that resume it: what the CLI and notebook call.

A decision reaches its thread exactly once. ``decide`` records it and takes the resume lease in one transaction,
then resumes the graph and marks the review resumed. If the process dies in between, ``resume_decided`` (run by
every later ``review`` command and by ``chat``) finds the decided, unresumed review once its lease has expired and
resumes the thread with the recorded decision, unless the thread already has it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from langchain_core.messages import HumanMessage
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Command, StateSnapshot

from agent.nodes import ANSWER_CHUNK
from agent.review import RESUME_LEASE, Review, ReviewQueue, decision_of

# How long a decider waits for a thread still on its way to the review's interrupt.
ARRIVAL_SECONDS = 60.0
WAITING = "Your question is waiting for a human reviewer; the answer will appear in this thread once decided."


class ReviewPending(RuntimeError):
    """The thread's last question still waits for a reviewer; a new question would abandon it."""

    @classmethod
    def on(cls, thread_id: str, review_id: str | None) -> ReviewPending:
        """The error for ``thread_id`` waiting on ``review_id``, saying what to do."""
        return cls(
            f"thread {thread_id} is waiting for a reviewer's decision on its last question (review {review_id});"
            " wait for it (`railgraph chat --thread ID` shows it when it lands) or ask in a new thread"
        )


def thread_config(thread_id: str) -> dict[str, Any]:
    """The run config of one conversation thread."""
    return {"configurable": {"thread_id": thread_id}}


def waiting_review(graph: CompiledStateGraph, thread_id: str) -> str | None:
    """The id of the review the thread's graph is interrupted on, or None when it waits for nothing."""
    snapshot = graph.get_state(thread_config(thread_id))
    return snapshot.values.get("review_id") if snapshot.interrupts else None


def run_in_progress(graph: CompiledStateGraph, thread_id: str) -> bool:
    """Whether a run is under way on the thread: it has tasks left and is not paused on an interrupt.

    A reviewer's resume is such a run: the interrupt is gone as soon as the decision is written, but the answer
    lands only when the resumed nodes finish. ``tasks``, not ``next``: a step whose tasks finished but whose
    checkpoint is not saved yet has an empty ``next`` (finished tasks leave it) and its tasks still listed. A run
    that failed (a task holding an error, e.g. an unreachable model) is over.
    """
    return _running(graph.get_state(thread_config(thread_id)))


def _running(snapshot: StateSnapshot) -> bool:
    return bool(snapshot.tasks) and not snapshot.interrupts and not any(task.error for task in snapshot.tasks)


def _after_run(graph: CompiledStateGraph, thread_id: str) -> StateSnapshot:
    """The thread's state once a run under way on it, such as a reviewer's resume, has ended (waiting at most
    ``ARRIVAL_SECONDS``).

    A new run started beside it would interleave its checkpoints with the other's. A thread still busy after the
    wait holds the leftovers of a run whose process died, and the new question goes ahead.
    """
    deadline = time.monotonic() + ARRIVAL_SECONDS
    while _running(snapshot := graph.get_state(thread_config(thread_id))) and time.monotonic() < deadline:
        time.sleep(0.05)
    return snapshot


def turn_result(graph: CompiledStateGraph, thread_id: str) -> dict[str, Any]:
    """The thread's latest turn in the ``ask --json`` shape of DESIGN.md."""
    snapshot = graph.get_state(thread_config(thread_id))
    values = snapshot.values
    pending = bool(snapshot.interrupts)
    return {
        "status": "pending_review" if pending else values.get("status", "answered"),
        # A hand-off has its own message for the wait (the rail's reply); other reviews say WAITING.
        "answer": (values.get("answer") or WAITING) if pending else values.get("answer", ""),
        "sources": [
            {key: source[key] for key in ("n", "doc_id", "source", "page", "quote")}
            for source in values.get("sources", [])
        ],
        "rails": values.get("rails", []),
        "thread_id": thread_id,
        "review_id": values.get("review_id"),
    }


def ask(
    graph: CompiledStateGraph,
    question: str,
    *,
    thread_id: str | None = None,
    on_chunk: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run one turn; ``on_chunk`` receives the answer as the model writes it, in the chunks the streaming output
    rails passed (none when the draft may go to a reviewer, or streaming is off in the rails config).

    A thread whose last question waits for a reviewer takes no new one (``ReviewPending``): starting a new run
    would drop the interrupt, and the reviewer's answer would then never reach the user.
    """
    thread_id = thread_id or uuid.uuid4().hex
    snapshot = _after_run(graph, thread_id)
    if snapshot.interrupts:
        raise ReviewPending.on(thread_id, snapshot.values.get("review_id"))
    for part in graph.stream({"messages": [HumanMessage(question)]}, thread_config(thread_id), stream_mode="custom"):
        if on_chunk and isinstance(part, dict) and ANSWER_CHUNK in part:
            on_chunk(part[ANSWER_CHUNK])
    return turn_result(graph, thread_id)


def _in_turn_of(snapshot: StateSnapshot, review: Review) -> bool:
    """Whether the thread's latest checkpoint belongs to the turn that queued the review (its id is the turn's)."""
    return str(snapshot.values.get("turn_id", "")).startswith(review.id)


def _answered(snapshot: StateSnapshot, review: Review) -> bool:
    """Whether the thread holds the answer of the review's turn (its id starts with the turn's, see ``answer_id``)."""
    return any(str(message.id).startswith(review.id) for message in snapshot.values.get("messages", []))


def _resume(graph: CompiledStateGraph, reviews: ReviewQueue, review: Review, *, recovering: bool = False) -> None:
    """Bring the review's recorded decision to its thread, then mark it resumed (the caller holds the resume lease).

    Marked resumed means the thread has taken the decision and finished the turn. A live decider can find the thread
    short of its interrupt: the review's row commits before the checkpoint that names it, and checkpoints are saved
    in the background, so the latest one may even be a step old. It waits for the interrupt and resumes it, or for
    the turn to end when the thread read the decision itself (``approval`` takes a decision recorded before it
    runs), or finds the turn answered and the thread already on its next question. ``recovering`` (the lease of a
    decider that died has expired): a turn left half-run is finished, and a thread already past the turn is only
    marked.
    """
    config = thread_config(review.thread_id)
    deadline = time.monotonic() + ARRIVAL_SECONDS
    while True:
        snapshot = graph.get_state(config)
        in_turn = _in_turn_of(snapshot, review)
        if in_turn and snapshot.interrupts:
            graph.invoke(Command(resume=review.response()), config)
            break
        if in_turn and not snapshot.tasks:
            break
        if not in_turn and _answered(snapshot, review):
            break  # it read the decision itself, ended the turn and took its next question before we looked
        if recovering:
            if in_turn:
                graph.invoke(None, config)
            break
        if time.monotonic() > deadline:
            return  # not marked resumed: once the lease expires, resume_decided tries again
        time.sleep(0.02)
    reviews.mark_resumed(review.id)


def decide(
    graph: CompiledStateGraph,
    reviews: ReviewQueue,
    review_id: str,
    decision: dict[str, Any],
    *,
    reviewer: str,
) -> dict[str, Any]:
    """Decide a pending review as ``reviewer`` with an Agent Inbox ``HumanResponse`` and resume its thread.

    The decision, its audit row and the resume lease are one transaction on a row still pending, so of two
    reviewers deciding at once exactly one wins; the other gets ``AlreadyDecided`` and the graph is resumed once.
    """
    review = reviews.get(review_id)
    decided = reviews.decide(review_id, decision_of(decision, review.draft), reviewer=reviewer)
    _resume(graph, reviews, decided)
    return turn_result(graph, review.thread_id)


def resume_decided(
    graph: CompiledStateGraph,
    reviews: ReviewQueue,
    *,
    thread_id: str | None = None,
    stale_after: timedelta = RESUME_LEASE,
) -> list[str]:
    """Resume the threads of decided reviews whose decider died before resuming them; return their review ids.

    Only reviews whose resume lease is older than ``stale_after`` are taken (a live decider holds a fresh one),
    each by one process only; a thread that already holds the decision is just marked resumed.
    """
    resumed = []
    for review in reviews.unresumed(thread_id=thread_id, stale_after=stale_after):
        if reviews.claim_resume(review.id, stale_after=stale_after):
            _resume(graph, reviews, review, recovering=True)
            resumed.append(review.id)
    return resumed


def poll_review(graph: CompiledStateGraph, reviews: ReviewQueue, thread_id: str) -> dict[str, Any] | None:
    """The thread's turn once its review's decision has landed (resuming it if its decider died), else None.

    A decided review has landed only once its decider marked it resumed: until then the resumed run may still be
    writing the answer.
    """
    resume_decided(graph, reviews, thread_id=thread_id)
    snapshot = graph.get_state(thread_config(thread_id))
    if snapshot.interrupts:
        return None
    review_id = snapshot.values.get("review_id")
    if snapshot.tasks and review_id is not None and reviews.get(review_id).resumed_at is None:
        return None  # the decider's resumed run is under way
    return turn_result(graph, thread_id)
