"""One function per node of the graph in DESIGN.md, and the routers between them.

Nodes are plain synchronous functions ``(state, config) -> dict``: LangGraph runs them directly under
``invoke``/``stream`` and in a worker thread under ``ainvoke``/``astream_events``, so one implementation
serves both and chat-model tokens still reach ``stream_mode="messages"`` and ``astream_events``.
"""

from __future__ import annotations

import uuid
from typing import Any, Literal

from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, SystemMessage
from langchain_core.runnables import RunnableConfig
from langgraph.types import interrupt

from agent.extractive import NOT_FOUND, best_sentences, compose_answer
from agent.rewrite import llm_rewrite, rule_rewrite
from agent.services import get_services
from agent.state import AgentState, Source
from rails import RailVerdict

SYSTEM_PROMPT = (
    "You answer questions using only the numbered sources the user gives you. "
    "After every claim, cite the source it comes from as [n]. "
    "If the sources do not contain the answer, say that you do not know. Be brief."
)
QUOTE_CHARS = 300
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
    return turn | {"question": outcome.text}


def rewrite_query(state: AgentState, config: RunnableConfig) -> dict[str, Any]:
    """Make a follow-up question standalone for retrieval, which does not see the thread.

    The chat model rewrites it when there is one (its reply is used only if it is a short, non-empty
    query); in extractive mode a rule appends the names of the earlier question. The first turn of a
    thread, and a thread shown to the model with no history (RAILGRAPH_HISTORY_MESSAGES=0), pass as is.
    """
    services = get_services(config)
    question = state["question"]
    window = services.settings.history_messages
    earlier = state["messages"][:-1][-window:] if window else []
    earlier_questions = [message.text for message in earlier if isinstance(message, HumanMessage)]
    if not earlier_questions:
        return {"search_query": question}
    model = services.chat.model
    rewritten = llm_rewrite(model, question, earlier, config) if model is not None else None
    return {"search_query": rewritten or rule_rewrite(question, earlier_questions)}


def retrieve(state: AgentState, config: RunnableConfig) -> dict[str, Any]:
    """Find the chunks that best match the question (hybrid full-text + vector search, by default).

    A follow-up is searched by its standalone rewrite (``search_query``) when there is one. Under the
    store's relevance floor no chunk comes back, and ``generate`` then says it does not know. The retrieval
    rail masks personal data in the chunks before the model (or the extractive answerer) sees them and
    withholds a chunk whose data is set to block; its verdict joins the turn's ``rails``.
    """
    services = get_services(config)
    query = state.get("search_query") or state["question"]
    hits = services.store.search(query, services.settings.top_k, mode=services.settings.search_mode)
    screened = services.guard.mask_chunks([document.page_content for document, _ in hits])
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
    if screened.verdict is None:
        return {"sources": sources}
    return {"sources": sources, "rails": [*state.get("rails", []), screened.verdict]}


def _prompt(state: AgentState, history_messages: int) -> list[AnyMessage]:
    numbered = "\n\n".join(
        f"[{source['n']}] ({source['title'] or source['source']}"
        + (f", page {source['page']}" if source["page"] else "")
        + f")\n{source['text']}"
        for source in state["sources"]
    )
    earlier = state["messages"][:-1][-history_messages:] if history_messages else []
    return [
        SystemMessage(SYSTEM_PROMPT),
        *earlier,
        HumanMessage(f"Sources:\n\n{numbered}\n\nQuestion: {state['question']}"),
    ]


def generate(state: AgentState, config: RunnableConfig) -> dict[str, Any]:
    """Draft an answer from the numbered sources, citing them as [n]."""
    services = get_services(config)
    sources = state["sources"]
    if not sources:
        return {"draft": NOT_FOUND}
    chat = services.chat
    if chat.model is None:
        # With no model to read the thread, the standalone query is what names the follow-up's subject.
        query = state.get("search_query") or state["question"]
        extracts = best_sentences(query, [(source["n"], source["text"]) for source in sources], services.embeddings)
        quoted = {extract.n: extract.sentence for extract in reversed(extracts)}
        cited = [source | {"quote": quoted[source["n"]]} if source["n"] in quoted else source for source in sources]
        return {"draft": compose_answer(extracts), "sources": cited}
    reply = chat.model.invoke(_prompt(state, services.settings.history_messages), config)
    return {"draft": reply.text.strip()}


def _without(text: str, spans: list[str]) -> str:
    """``text`` less each of ``spans`` (exact substrings) and the spaces after it."""
    for span in spans:
        start = text.find(span)
        if start >= 0:
            end = start + len(span)
            end += len(text[end:]) - len(text[end:].lstrip(" \t"))
            text = text[:start] + text[end:]
    return text.strip()


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
        draft = _without(draft, unsupported)
        if not any(character.isalpha() for character in draft):
            draft = NOT_FOUND
        note = "; removed (RAILGRAPH_UNSUPPORTED_POLICY=remove)"
        verdicts = [
            verdict | {"detail": verdict["detail"] + note} if verdict["verdict"] == "flag" else verdict
            for verdict in verdicts
        ]
    return {"rails": state.get("rails", []) + verdicts, "draft": draft}


def _review_request(state: AgentState) -> dict[str, Any]:
    """The interrupt payload, in the shape of LangChain Agent Inbox's ``HumanInterrupt``."""
    sources = "\n".join(f"[{s['n']}] {s['source']}: {s['quote']}" for s in state["sources"])
    return {
        "action_request": {
            "action": "answer",
            "args": {"question": state["question"], "draft": state["draft"], "sources": state["sources"]},
        },
        "config": {"allow_ignore": True, "allow_respond": True, "allow_edit": True, "allow_accept": True},
        "description": (
            f"**Question**\n\n{state['question']}\n\n**Draft**\n\n{state['draft']}\n\n**Sources**\n\n{sources}"
        ),
        "rails": state.get("rails", []),
    }


def approval(state: AgentState, config: RunnableConfig) -> dict[str, Any]:
    """Wait for a human reviewer to accept, edit, answer instead, or reject (ignore) the draft."""
    services = get_services(config)
    review_id = state["turn_id"][:12]
    request = _review_request(state)
    # This node runs again from the top on resume: submitting is idempotent, so the queue gets one row.
    services.reviews.submit(review_id, config["configurable"]["thread_id"], state["question"], state["draft"], request)
    response = interrupt([request])
    if isinstance(response, list):
        response = response[0]
    kind, args = response.get("type"), response.get("args")
    if kind == "accept":
        outcome: dict[str, Any] = {"answer": state["draft"], "status": "answered"}
        status = "approved"
    elif kind == "edit":
        outcome = {
            "answer": args["args"]["draft"] if isinstance(args, dict) else str(args),
            "status": "answered",
        }
        status = "edited"
    elif kind == "response":
        outcome = {"answer": str(args), "status": "answered"}
        status = "responded"
    elif kind == "ignore":
        outcome = {"status": "rejected", "refusal_policy": str(args) if args else None}
        status = "rejected"
    else:
        raise ValueError(f"unknown review response {response!r}: expected type accept, edit, response or ignore")
    services.reviews.decide(
        review_id,
        status,
        reviewer=None,
        final_text=outcome.get("answer"),
        reason=outcome.get("refusal_policy"),
        claim=False,
    )
    return outcome | {"review_id": review_id}


def respond(state: AgentState, config: RunnableConfig) -> dict[str, Any]:
    """Give the user the answer and keep it in the thread's history."""
    answer = state.get("answer") or state["draft"]
    return {"answer": answer, "status": "answered", "messages": [AIMessage(answer)]}


def refuse(state: AgentState, config: RunnableConfig) -> dict[str, Any]:
    """Tell the user the turn was refused, naming only the policy (never the rail internals)."""
    if state["status"] == "rejected":
        reason = state.get("refusal_policy")
        answer = "A reviewer declined to answer this question" + (f": {reason}" if reason else ".")
    else:
        answer = f"I can't help with that: it was blocked by the {state.get('refusal_policy')} policy."
    return {"answer": answer, "messages": [AIMessage(answer)]}


def route_after_input(state: AgentState) -> Literal["rewrite_query", "refuse"]:
    return "refuse" if state["status"] == "blocked" else "rewrite_query"


def route_after_output(state: AgentState, config: RunnableConfig) -> Literal["approval", "respond", "refuse"]:
    if state["status"] == "blocked":
        return "refuse"
    settings = get_services(config).settings
    policy = settings.approval
    if policy == "always":
        return "approval"
    rails = state.get("rails", [])
    # Unsupported sentences left in the draft go to a reviewer whatever RAILGRAPH_APPROVAL says.
    if settings.unsupported_policy == "review" and any(verdict["verdict"] == "flag" for verdict in rails):
        return "approval"
    flagged = not state["sources"] or any(verdict["verdict"] != "pass" for verdict in rails)
    if policy == "flagged" and flagged:
        return "approval"
    return "respond"


def route_after_approval(state: AgentState) -> Literal["respond", "refuse"]:
    return "refuse" if state["status"] == "rejected" else "respond"
