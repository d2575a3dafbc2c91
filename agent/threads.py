"""Conversation threads as the checkpointer keeps them: list, read and delete them.

Only the checkpointer's own API is used (``list``, ``get_tuple``, ``delete_thread``), so threads on any LangGraph
saver, SQLite or Postgres, work the same.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from langchain_core.messages import AnyMessage, HumanMessage
from langgraph.checkpoint.base import BaseCheckpointSaver, CheckpointTuple

from agent.review import Decision, ReviewQueue
from agent.turns import thread_config

# The reason a pending review of a deleted thread is rejected with.
THREAD_DELETED = "thread deleted"


class ThreadNotFound(LookupError):
    """No checkpoint has this thread id."""


@dataclass(frozen=True)
class ThreadInfo:
    """One line of ``railgraph threads list``."""

    thread_id: str
    turns: int
    last_activity: str
    first_question: str
    pending_review: bool

    def to_json(self) -> dict[str, Any]:
        """The ``threads list --json`` shape."""
        return asdict(self)


def _messages(saved: CheckpointTuple) -> list[AnyMessage]:
    return list(saved.checkpoint["channel_values"].get("messages", []))


def _utc(timestamp: str) -> str:
    """A checkpoint's ISO timestamp as ``YYYY-MM-DDTHH:MM:SSZ``."""
    return datetime.fromisoformat(timestamp).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def list_threads(saver: BaseCheckpointSaver, reviews: ReviewQueue) -> list[ThreadInfo]:
    """Every thread, most recently active first, read from its latest checkpoint."""
    pending = {review.thread_id for review in reviews.pending()}
    latest: dict[str, CheckpointTuple] = {}
    # Newest checkpoints come first, so the first one seen of each thread is its latest.
    for saved in saver.list(None):
        configurable = saved.config["configurable"]
        if configurable.get("checkpoint_ns", "") == "" and configurable["thread_id"] not in latest:
            latest[configurable["thread_id"]] = saved
    threads = []
    for thread_id, saved in latest.items():
        questions = [message.text for message in _messages(saved) if isinstance(message, HumanMessage)]
        threads.append(
            ThreadInfo(
                thread_id=thread_id,
                turns=len(questions),
                last_activity=_utc(saved.checkpoint["ts"]),
                first_question=questions[0] if questions else "",
                pending_review=thread_id in pending,
            )
        )
    return sorted(threads, key=lambda thread: thread.last_activity, reverse=True)


def thread_messages(saver: BaseCheckpointSaver, thread_id: str) -> list[AnyMessage]:
    """All the messages the thread keeps; ``ThreadNotFound`` for an unknown id."""
    saved = saver.get_tuple(thread_config(thread_id))
    if saved is None:
        raise ThreadNotFound(f"no thread with id {thread_id!r}; `railgraph threads list` shows the threads")
    return _messages(saved)


def delete_thread(saver: BaseCheckpointSaver, reviews: ReviewQueue, thread_id: str, *, reviewer: str) -> str | None:
    """Delete every checkpoint and write of the thread; a review it still waits for is rejected first, with the
    reason "thread deleted", so no reviewer works on it. Return that review's id, if any."""
    thread_messages(saver, thread_id)
    review = reviews.pending_for_thread(thread_id)
    if review is not None:
        # claim=False: the decision is final as recorded; there is no thread left to resume with it.
        reviews.decide(review.id, Decision("rejected", None, THREAD_DELETED), reviewer=reviewer, claim=False)
    saver.delete_thread(thread_id)
    return review.id if review else None
