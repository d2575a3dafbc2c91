"""The state of one conversation thread, as LangGraph checkpoints it."""

from __future__ import annotations

from typing import Annotated, Literal

from langchain_core.messages import AnyMessage
from langgraph.graph.message import add_messages
from typing_extensions import TypedDict  # pydantic (used by .as_tool()) needs it before Python 3.12

from rails import RailVerdict

TurnStatus = Literal["answered", "blocked", "pending_review", "rejected"]


class Source(TypedDict):
    """One retrieved chunk, numbered as the model and the citations see it."""

    n: int
    chunk_id: str
    doc_id: str
    source: str
    page: int | None
    title: str | None
    text: str
    quote: str
    score: float


class InputState(TypedDict):
    """What a caller passes in: the conversation so far, ending with the user's question."""

    messages: Annotated[list[AnyMessage], add_messages]


class AgentState(InputState, total=False):
    """Everything one turn produces; each turn starts by resetting the per-turn fields."""

    turn_id: str
    question: str
    search_query: str | None
    """What retrieval searches for: the question, made standalone from the thread when it is a follow-up."""
    sources: list[Source]
    draft: str
    answer: str
    status: TurnStatus
    rails: list[RailVerdict]
    refusal_policy: str | None
    review_id: str | None
    user_memories: list[str]
    """What the long-term memory knows about the user, as read by ``remember`` for this turn."""
    summary: str
    """A running summary of the thread's oldest messages, shown to the chat model instead of them."""
    summarized: int
    """How many of the thread's first messages ``summary`` covers."""
