"""One function per node of the graph in DESIGN.md, and the routers between them.

Nodes are plain synchronous functions ``(state, config) -> dict``: LangGraph runs them directly under
``invoke``/``stream`` and in a worker thread under ``ainvoke``/``astream_events``, so one implementation
serves both and chat-model tokens still reach ``stream_mode="messages"`` and ``astream_events``.
"""

from __future__ import annotations

import uuid
from collections.abc import Generator, Iterator
from contextlib import closing
from typing import Any, Literal

from langchain_core.callbacks import dispatch_custom_event
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, SystemMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import merge_configs
from langgraph.config import get_store, get_stream_writer
from langgraph.constants import TAG_NOSTREAM
from langgraph.types import interrupt

from agent import longterm
from agent.extractive import NOT_FOUND, best_sentences, compose_answer
from agent.memory import SUMMARY_TOKENS, history_window, summarize, token_counter
from agent.review import decision_of, review_flags
from agent.rewrite import llm_rewrite, rule_rewrite
from agent.services import Services, get_services
from agent.state import AgentState, Source
from agent.streaming import CheckedStream, ChunkCheck, without_spans
from rails import RailVerdict

SYSTEM_PROMPT = (
    "You answer questions using only the numbered sources the user gives you. "
    "After every claim, cite the source it comes from as [n]. "
    "If the sources do not contain the answer, say that you do not know. Be brief."
)
QUOTE_CHARS = 300
# The custom event (and ``stream_mode="custom"`` key) that carries each piece of the answer the output rails passed.
ANSWER_CHUNK = "answer_chunk"
# The policy named to the user when RAILGRAPH_UNSUPPORTED_POLICY=refuse turns an answer down.
UNSUPPORTED_CLAIMS = "unsupported claims"


def _question(state: AgentState) -> HumanMessage:
    for message in reversed(state["messages"]):
        if isinstance(message, HumanMessage):
            return message
    raise ValueError("the input has no user message: pass {'messages': [('user', 'your question')]}")


def input_rails(state: AgentState, config: RunnableConfig) -> dict[str, Any]:
    """Start a turn and screen the question: prompt attacks, injection rules, off-limits topics, personal data.

    Personal data the rails mask is masked in the turn's question (what retrieval and the model see) and in the
    thread's copy of the message, which later turns show the model and the query rewriter as history.
    """
    services = get_services(config)
    message = _question(state)
    question = message.text
    turn: dict[str, Any] = {
        "turn_id": uuid.uuid4().hex,
        "question": question,
        "search_query": None,
        "sources": [],
        "draft": "",
        "answer": "",
        "status": "answered",
        "refusal_policy": None,
        "review_id": None,
    }
    limit = services.settings.max_question_chars
    if len(question) > limit:
        verdict = RailVerdict(
            rail="input length",
            verdict="block",
            detail=f"{len(question)} characters > {limit} (RAILGRAPH_MAX_QUESTION_CHARS)",
            score=None,
        )
        return turn | {"rails": [verdict], "status": "blocked", "refusal_policy": "overlong messages"}
    outcome = services.guard.check_input(question)
    turn["rails"] = list(outcome.verdicts)
    if outcome.blocked:
        return turn | {"status": "blocked", "refusal_policy": outcome.policy or "acceptable use"}
    if outcome.text != question:
        # Same id: add_messages replaces the user's message instead of appending a second one.
        turn["messages"] = [HumanMessage(outcome.text, id=message.id)]
    turn["question"] = outcome.text
    if outcome.reply:
        # A dialog rail took the message: its canned answer, or (hand-off) what the user sees while a person answers.
        turn["answer"] = outcome.reply
    return turn


def remember(state: AgentState, config: RunnableConfig) -> dict[str, Any]:
    """Keep the facts the user states about themselves ("I work in the Oslo office") in their long-term memory, and
    read what it holds for this turn.

    The question is already PII-masked. A message that only states facts is answered with an acknowledgement
    (``answer``), and no search. A graph compiled without a store remembers nothing.
    """
    store = get_store()
    if store is None:
        return {"user_memories": []}
    user = longterm.user_id(config, get_services(config).settings)
    facts = longterm.extract_facts(state["question"])
    longterm.save(store, user, facts, thread_id=config["configurable"].get("thread_id"))
    known = {"user_memories": [memory.text for memory in longterm.recall(store, user)]}
    if facts and longterm.only_statements(state["question"]):
        return known | {"answer": longterm.acknowledgement(facts)}
    return known


def _history(state: AgentState, config: RunnableConfig) -> tuple[list[AnyMessage], int]:
    """The earlier messages of the thread shown to the model (the latest that fit RAILGRAPH_HISTORY_TOKENS) and how
    many older ones that leaves out; a chat model's summary of those needs room in the budget."""
    services = get_services(config)
    model = services.chat.model
    return history_window(
        state["messages"][:-1],
        services.settings.history_tokens,
        token_counter(model),
        summary_room=SUMMARY_TOKENS if model is not None else 0,
    )


def rewrite_query(state: AgentState, config: RunnableConfig) -> dict[str, Any]:
    """Make a follow-up question standalone for retrieval, which does not see the thread, and bring the running
    summary up to date.

    The chat model rewrites it when there is one (its reply is used only if it is a short, non-empty
    query); in extractive mode a rule appends the names of the earlier question. The first turn of a
    thread, and a thread shown with no history (RAILGRAPH_HISTORY_TOKENS=0), pass as is. A question about
    the user ("my office hours") also searches for what the long-term memory knows about them.

    Messages that no longer fit the token budget are summarised by the chat model, once per turn and only when
    some were left out since the last summary; the summary is shown to the model in their place.
    """
    services = get_services(config)
    question = state["question"]
    earlier, dropped = _history(state, config)
    model = services.chat.model
    update: dict[str, Any] = {}
    covered = state.get("summarized", 0)
    if model is not None and dropped > covered:
        left_out = state["messages"][covered:dropped]
        update = {"summary": summarize(model, state.get("summary", ""), left_out, config), "summarized": dropped}
    earlier_questions = [message.text for message in earlier if isinstance(message, HumanMessage)]
    query = question
    if earlier_questions:
        rewritten = llm_rewrite(model, question, earlier, config) if model is not None else None
        query = rewritten or rule_rewrite(question, earlier_questions)
    return update | {"search_query": longterm.personalize(query, question, state.get("user_memories", []))}


def retrieve(state: AgentState, config: RunnableConfig) -> dict[str, Any]:
    """Find the chunks that best match the question (hybrid full-text + vector search, by default).

    A follow-up is searched by its standalone rewrite (``search_query``) when there is one. Under the
    store's relevance floor no chunk comes back, and ``generate`` then says it does not know. The retrieval
    rails withhold a chunk carrying a prompt injection and mask personal data in the others (withholding one
    whose data is set to block) before the model (or the extractive answerer) sees them; their verdicts join
    the turn's ``rails``.
    """
    services = get_services(config)
    query = state.get("search_query") or state["question"]
    hits = services.store.search(query, services.settings.top_k, mode=services.settings.search_mode)
    screened = services.guard.screen_chunks([document.page_content for document, _ in hits])
    kept = [(document, score, text) for (document, score), text in zip(hits, screened.texts, strict=True) if text]
    sources = [
        Source(
            n=n,
            chunk_id=document.id or "",
            doc_id=document.metadata.get("doc_id", ""),
            source=document.metadata.get("source", ""),
            page=document.metadata.get("page"),
            title=document.metadata.get("title"),
            text=text,
            quote=text[:QUOTE_CHARS],
            score=score,
        )
        for n, (document, score, text) in enumerate(kept, start=1)
    ]
    if not screened.verdicts:
        return {"sources": sources}
    return {"sources": sources, "rails": [*state.get("rails", []), *screened.verdicts]}


def chat_prompt(state: AgentState, config: RunnableConfig) -> list[AnyMessage]:
    """What the chat model is shown to draft the answer: the instructions with what is known about the user and the
    summary of older messages, the earlier messages that fit the budget, then the sources and the question."""
    numbered = "\n\n".join(
        f"[{source['n']}] ({source['title'] or source['source']}"
        + (f", page {source['page']}" if source["page"] else "")
        + f")\n{source['text']}"
        for source in state["sources"]
    )
    earlier, dropped = _history(state, config)
    system = SYSTEM_PROMPT
    if state.get("user_memories"):
        system += "\n\nWhat you know about the user:\n" + "\n".join(f"- {fact}" for fact in state["user_memories"])
    if dropped and state.get("summary"):
        system += f"\n\nSummary of the earlier conversation: {state['summary']}"
    return [
        SystemMessage(system),
        *earlier,
        HumanMessage(f"Sources:\n\n{numbered}\n\nQuestion: {state['question']}"),
    ]


def _checked_stream(state: AgentState, services: Services) -> CheckedStream | None:
    """The streaming output rails for this turn's answer; None where the draft must not stream."""
    settings = services.settings
    streaming = services.guard.output_streaming
    # A draft that may go to a reviewer is shown to nobody before the decision.
    if not streaming.enabled or settings.approval != "never" or settings.unsupported_policy == "review":
        return None
    texts = [source["text"] for source in state["sources"]]
    return CheckedStream(
        lambda chunk: services.guard.check_output(state["question"], chunk, texts),
        chunk_size=streaming.chunk_size,
        unsupported=settings.unsupported_policy,
        refuse_policy=UNSUPPORTED_CLAIMS,
    )


def _release(checks: Iterator[ChunkCheck], config: RunnableConfig) -> None:
    """Send the passed chunks to the user: ``stream_mode="custom"`` and ``astream_events`` (``on_custom_event``)."""
    write = get_stream_writer()
    for check in checks:
        if check.released:
            write({ANSWER_CHUNK: check.released})
            dispatch_custom_event(ANSWER_CHUNK, {"text": check.released}, config=config)


def generate(state: AgentState, config: RunnableConfig) -> dict[str, Any]:
    """Draft an answer from the numbered sources, citing them as [n]; with streaming output rails, the user gets it
    as it is written, in chunks the output rails passed (``agent.streaming``)."""
    services = get_services(config)
    sources = state["sources"]
    if not sources:
        return {"draft": NOT_FOUND}
    checked = _checked_stream(state, services)
    chat = services.chat
    update: dict[str, Any] = {}
    if chat.model is None:
        # With no model to read the thread, the standalone query is what names the follow-up's subject.
        query = state.get("search_query") or state["question"]
        extracts = best_sentences(query, [(source["n"], source["text"]) for source in sources], services.embeddings)
        quoted = {extract.n: extract.sentence for extract in reversed(extracts)}
        cited = [source | {"quote": quoted[source["n"]]} if source["n"] in quoted else source for source in sources]
        update = {"draft": compose_answer(extracts), "sources": cited}
        if checked is None:
            return update
        # Written at once, released through the same rails: a streaming reader gets every answer the same way.
        pieces: Generator[str, None, None] = (text for text in [update["draft"]])
    else:
        # Tagged "nostream": the raw tokens are not for the user, only what the output rails pass
        # (``stream_mode="messages"`` leaves them out; astream_events still shows the run, under that tag).
        model_config = merge_configs(config, {"tags": [TAG_NOSTREAM]})
        if checked is None:
            return {"draft": chat.model.invoke(chat_prompt(state, config), model_config).text.strip()}
        pieces = (piece.text for piece in chat.model.stream(chat_prompt(state, config), model_config))
    with closing(pieces):
        for piece in pieces:
            _release(checked.feed(piece), config)
            if checked.blocked is not None:
                break  # leaving the block closes the model's stream, which stops it
    _release(checked.close(), config)
    if checked.blocked is not None:
        return {
            # What the model wrote up to the block stays in the state (never shown), as a draft blocked whole does.
            "draft": checked.text.strip(),
            "rails": state.get("rails", []) + checked.blocked.verdicts,
            "status": "blocked",
            "refusal_policy": checked.blocked.policy or "acceptable use",
        }
    return update | {"draft": checked.text.strip()}


def output_rails(state: AgentState, config: RunnableConfig) -> dict[str, Any]:
    """Check the draft: citations point at retrieved sources that support it, no injected code or markup, personal
    data masked (the masked draft is what the user gets).

    The rails flag sentences their sources do not support; RAILGRAPH_UNSUPPORTED_POLICY decides what
    happens to them: ``remove`` drops them (all gone: the not-found answer), ``review`` leaves them for
    the reviewer (``route_after_output``), ``refuse`` blocks the answer.
    """
    services = get_services(config)
    outcome = services.guard.check_output(
        state["question"], state["draft"], [source["text"] for source in state["sources"]]
    )
    verdicts = list(outcome.verdicts)
    if outcome.blocked:
        rails = state.get("rails", []) + verdicts
        return {"rails": rails, "status": "blocked", "refusal_policy": outcome.policy or "acceptable use"}
    unsupported = [span for verdict in verdicts if verdict["verdict"] == "flag" for span in verdict.get("spans", [])]
    policy = services.settings.unsupported_policy
    draft = outcome.text
    if unsupported and policy == "refuse":
        verdicts = [verdict | {"verdict": "block"} if verdict["verdict"] == "flag" else verdict for verdict in verdicts]
        return {"rails": state.get("rails", []) + verdicts, "status": "blocked", "refusal_policy": UNSUPPORTED_CLAIMS}
    if unsupported and policy == "remove":
        draft = without_spans(draft, unsupported)
        if not any(character.isalpha() for character in draft):
            draft = NOT_FOUND
        note = "; removed (RAILGRAPH_UNSUPPORTED_POLICY=remove)"
        verdicts = [
            verdict | {"detail": verdict["detail"] + note} if verdict["verdict"] == "flag" else verdict
            for verdict in verdicts
        ]
    return {"rails": state.get("rails", []) + verdicts, "draft": draft}


def _review_flags(state: AgentState, config: RunnableConfig) -> list[str]:
    """Why the draft needs a reviewer under RAILGRAPH_APPROVAL=flagged (empty: it does not)."""
    settings = get_services(config).settings
    return review_flags(
        state["question"],
        state["sources"],
        state.get("rails", []),
        min_score=settings.review_min_score,
        topics=settings.review_topics,
    )


def _review_request(state: AgentState, flags: list[str]) -> dict[str, Any]:
    """The interrupt payload, exactly LangChain Agent Inbox's ``HumanInterrupt`` (extra top-level keys may break
    the Inbox UI, so the verdicts and flags travel in the action request's args)."""
    sources = "\n".join(f"[{s['n']}] {s['source']}: {s['quote']}" for s in state["sources"])
    rails = state.get("rails", [])
    verdicts = "\n".join(f"- {v['rail']}: {v['verdict']} ({v['detail']})" for v in rails)
    return {
        "action_request": {
            "action": "answer",
            "args": {
                "question": state["question"],
                "draft": state["draft"],
                "sources": state["sources"],
                "rails": rails,
                "flags": flags,
            },
        },
        "config": {"allow_ignore": True, "allow_respond": True, "allow_edit": True, "allow_accept": True},
        "description": (
            f"**Question**\n\n{state['question']}\n\n**Draft**\n\n{state['draft']}\n\n**Sources**\n\n{sources}"
            f"\n\n**Rails**\n\n{verdicts}\n\n**Flags**: {', '.join(flags) or 'none'}"
        ),
    }


def request_review(state: AgentState, config: RunnableConfig) -> dict[str, Any]:
    """Queue the draft for a human reviewer, with the reasons it needs one.

    A node of its own, before ``approval``: LangGraph re-runs an interrupted node from its top on resume, and a
    finished node never, so the queue's row and its audit entry are written once.
    """
    services = get_services(config)
    review_id = state["turn_id"][:12]
    flags = _review_flags(state, config)
    request = _review_request(state, flags)
    thread_id = config["configurable"]["thread_id"]
    services.reviews.submit(review_id, thread_id, state["question"], state["draft"], request, flags)
    return {"review_id": review_id, "status": "pending_review"}


def approval(state: AgentState, config: RunnableConfig) -> dict[str, Any]:
    """Wait for a human reviewer to accept, edit, answer instead, or reject (ignore) the draft.

    Nothing before ``interrupt()`` writes anything (this node re-runs from its top on resume); the decision is
    recorded after it, once: a no-op when the reviewer's command recorded it already, the record itself when the
    graph was resumed directly (Agent Inbox on LangGraph's server, ``Command(resume=...)``).
    """
    services = get_services(config)
    review = services.reviews.get(state["review_id"])
    # A reviewer may decide before this node interrupts (the row is queued a node earlier); that decision stands.
    response = review.response() if review.status != "pending" else interrupt([review.payload])
    if isinstance(response, list):
        response = response[0]
    reviewer = config["configurable"].get("reviewer") or services.settings.reviewer or "unknown"
    # The recorded decision wins: a reviewer who decided first (in the queue) is what the thread must show.
    recorded = services.reviews.decide(review.id, decision_of(response, state["draft"]), reviewer=reviewer, claim=False)
    if recorded.status == "rejected":
        return {"status": "rejected", "refusal_policy": recorded.reason}
    return {"answer": recorded.final_text, "status": "answered"}


def answer_id(turn_id: str) -> str:
    """The id of a turn's answer message: whoever holds a turn's id (a review's is its prefix) can tell from the
    thread's messages alone that the turn was answered, even after later turns."""
    return f"{turn_id}-answer"


def respond(state: AgentState, config: RunnableConfig) -> dict[str, Any]:
    """Give the user the answer and keep it in the thread's history, under the turn's id (``answer_id``)."""
    answer = state.get("answer") or state["draft"]
    return {"answer": answer, "status": "answered", "messages": [AIMessage(answer, id=answer_id(state["turn_id"]))]}


def refuse(state: AgentState, config: RunnableConfig) -> dict[str, Any]:
    """Tell the user the turn was refused, naming only the policy (never the rail internals)."""
    if state["status"] == "rejected":
        reason = state.get("refusal_policy")
        answer = "A reviewer declined to answer this question" + (f": {reason}" if reason else ".")
    else:
        answer = f"I can't help with that: it was blocked by the {state.get('refusal_policy')} policy."
    return {"answer": answer, "messages": [AIMessage(answer, id=answer_id(state["turn_id"]))]}


def route_after_input(state: AgentState) -> Literal["remember", "refuse", "respond", "request_review"]:
    """Blocked questions are refused; a user asking for a person goes to the review queue (whatever
    RAILGRAPH_APPROVAL says); a canned response is sent as it is."""
    if state["status"] == "blocked":
        return "refuse"
    if any(verdict["verdict"] == "handoff" for verdict in state["rails"]):
        return "request_review"
    return "respond" if state.get("answer") else "remember"


def route_after_remember(state: AgentState) -> Literal["rewrite_query", "respond"]:
    """A message that only stated facts has its acknowledgement as the answer: nothing to search for."""
    return "respond" if state.get("answer") else "rewrite_query"


def route_after_generate(state: AgentState) -> Literal["output_rails", "refuse"]:
    """A draft the streaming output rails blocked part-way is refused; any other goes through the output rails."""
    return "refuse" if state["status"] == "blocked" else "output_rails"


def route_after_output(state: AgentState, config: RunnableConfig) -> Literal["request_review", "respond", "refuse"]:
    """Blocked drafts are refused; RAILGRAPH_APPROVAL (and unsupported sentences under
    RAILGRAPH_UNSUPPORTED_POLICY=review) decide which of the others wait for a reviewer."""
    if state["status"] == "blocked":
        return "refuse"
    settings = get_services(config).settings
    if settings.approval == "always":
        return "request_review"
    # Unsupported sentences left in the draft go to a reviewer whatever RAILGRAPH_APPROVAL says.
    if settings.unsupported_policy == "review" and any(v["verdict"] == "flag" for v in state.get("rails", [])):
        return "request_review"
    if settings.approval == "flagged" and _review_flags(state, config):
        return "request_review"
    return "respond"


def route_after_approval(state: AgentState) -> Literal["respond", "refuse"]:
    return "refuse" if state["status"] == "rejected" else "respond"
