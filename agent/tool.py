"""The agent as a LangChain tool, for other agents: a question in, a cited answer with its sources out."""

from __future__ import annotations

import uuid
from typing import Any

from langchain_core.messages import HumanMessage
from langchain_core.tools import BaseTool, StructuredTool
from langgraph.graph.state import CompiledStateGraph

from agent.turns import thread_config, turn_result

DESCRIPTION = (
    "Answer a question from the user's own documents. Returns an answer citing sources as [n], "
    "followed by the numbered sources; says so when nothing relevant was found or policy refused."
)


def _format(result: dict[str, Any]) -> str:
    sources = "\n".join(
        f"[{s['n']}] {s['source']}" + (f", page {s['page']}" if s["page"] else "") for s in result["sources"]
    )
    return (
        f"{result['answer']}\n\nSources:\n{sources}" if sources and result["status"] == "answered" else result["answer"]
    )


def as_tool(graph: CompiledStateGraph, *, name: str = "ask_documents", description: str = DESCRIPTION) -> BaseTool:
    """A tool running one turn of ``graph`` per call, each in a thread of its own."""

    def ask_documents(question: str) -> str:
        thread_id = uuid.uuid4().hex
        graph.invoke({"messages": [HumanMessage(question)]}, thread_config(thread_id))
        return _format(turn_result(graph, thread_id))

    async def aask_documents(question: str) -> str:
        thread_id = uuid.uuid4().hex
        await graph.ainvoke({"messages": [HumanMessage(question)]}, thread_config(thread_id))
        return _format(turn_result(graph, thread_id))

    return StructuredTool.from_function(
        func=ask_documents, coroutine=aask_documents, name=name, description=description
    )
