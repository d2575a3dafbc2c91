"""One user turn through the graph, and reviewer decisions that resume it: what the CLI and notebook call."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from langchain_core.messages import AIMessageChunk, HumanMessage
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Command

from agent.review import ReviewQueue

WAITING = "Your question is waiting for a human reviewer; the answer will appear in this thread once decided."


def thread_config(thread_id: str) -> dict[str, Any]:
    return {"configurable": {"thread_id": thread_id}}


def turn_result(graph: CompiledStateGraph, thread_id: str) -> dict[str, Any]:
    """The thread's latest turn in the ``ask --json`` shape of DESIGN.md."""
    snapshot = graph.get_state(thread_config(thread_id))
    values = snapshot.values
    pending = bool(snapshot.interrupts)
    return {
        "status": "pending_review" if pending else values.get("status", "answered"),
        "answer": WAITING if pending else values.get("answer", ""),
        "sources": [
            {key: source[key] for key in ("n", "doc_id", "source", "page", "quote")}
            for source in values.get("sources", [])
        ],
        "rails": values.get("rails", []),
        "thread_id": thread_id,
        "review_id": values["turn_id"][:12] if pending else values.get("review_id"),
    }


def ask(
    graph: CompiledStateGraph,
    question: str,
    *,
    thread_id: str | None = None,
    on_token: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run one turn; ``on_token`` receives the draft's tokens as the chat model produces them."""
    thread_id = thread_id or uuid.uuid4().hex
    for message, metadata in graph.stream(
        {"messages": [HumanMessage(question)]}, thread_config(thread_id), stream_mode="messages"
    ):
        if on_token and metadata.get("langgraph_node") == "generate" and isinstance(message, AIMessageChunk):
            on_token(message.text)
    return turn_result(graph, thread_id)


def decide(
    graph: CompiledStateGraph,
    reviews: ReviewQueue,
    review_id: str,
    decision: dict[str, Any],
    *,
    reviewer: str,
) -> dict[str, Any]:
    """Claim a pending review for ``reviewer`` and resume its thread with an Agent Inbox ``HumanResponse``.

    The claim is a conditional update, so of two reviewers deciding at once exactly one wins; the other gets
    ``AlreadyDecided`` and the graph is resumed once.
    """
    review = reviews.get(review_id)
    kind, args = decision["type"], decision.get("args")
    status, final_text, reason = {
        "accept": ("approved", review.draft, None),
        "edit": ("edited", args["args"]["draft"] if isinstance(args, dict) else None, None),
        "response": ("responded", args, None),
        "ignore": ("rejected", None, args),
    }[kind]
    reviews.decide(review_id, status, reviewer=reviewer, final_text=final_text, reason=reason)
    graph.invoke(Command(resume=decision), thread_config(review.thread_id))
    return turn_result(graph, review.thread_id)
