"""The railgraph agent: input rails -> remember -> rewrite query -> retrieve -> generate -> output rails -> review
-> respond."""

from __future__ import annotations

from typing import Literal

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.store.base import BaseStore

from agent import nodes
from agent.configuration import Settings
from agent.memory import open_checkpointer, open_memory_store
from agent.services import Services, services_for
from agent.state import AgentState, InputState


def build_agent(
    settings: Settings | None = None,
    *,
    services: Services | None = None,
    checkpointer: BaseCheckpointSaver | Literal["database"] | None = "database",
    store: BaseStore | Literal["database"] | None = "database",
) -> CompiledStateGraph:
    """Compile the agent.

    Args:
        settings: defaults to ``Settings()`` (``RAILGRAPH_*`` variables and ``railgraph.toml``).
        services: the database, store, rails and model to use; built from ``settings`` when omitted.
        checkpointer: ``"database"`` keeps threads in the railgraph database; pass your own saver, or
            ``None`` when the agent is a subgraph of a graph that has one.
        store: the long-term memory (facts users state about themselves): ``"database"`` keeps it in the railgraph
            database; pass your own ``BaseStore``, or ``None`` for the store of an enclosing graph or server.
    """
    services = services or services_for(settings or Settings())
    builder = StateGraph(AgentState, input_schema=InputState)
    builder.add_node("input_rails", nodes.input_rails)
    builder.add_node("remember", nodes.remember)
    builder.add_node("rewrite_query", nodes.rewrite_query)
    builder.add_node("retrieve", nodes.retrieve)
    builder.add_node("generate", nodes.generate)
    builder.add_node("output_rails", nodes.output_rails)
    builder.add_node("request_review", nodes.request_review)
    builder.add_node("approval", nodes.approval)
    builder.add_node("respond", nodes.respond)
    builder.add_node("refuse", nodes.refuse)
    builder.add_edge(START, "input_rails")
    builder.add_conditional_edges("input_rails", nodes.route_after_input)
    builder.add_conditional_edges("remember", nodes.route_after_remember)
    builder.add_edge("rewrite_query", "retrieve")
    builder.add_edge("retrieve", "generate")
    builder.add_conditional_edges("generate", nodes.route_after_generate)
    builder.add_conditional_edges("output_rails", nodes.route_after_output)
    builder.add_edge("request_review", "approval")
    builder.add_conditional_edges("approval", nodes.route_after_approval)
    builder.add_edge("respond", END)
    builder.add_edge("refuse", END)
    saver = open_checkpointer(services.settings) if checkpointer == "database" else checkpointer
    memories = open_memory_store(services.settings) if store == "database" else store
    graph = builder.compile(checkpointer=saver, store=memories, name="railgraph")
    return graph.with_config(configurable={"services": services})


def make_graph() -> CompiledStateGraph:
    """Entry point for ``langgraph.json``: LangGraph's server brings its own checkpointer and store."""
    return build_agent(checkpointer=None, store=None)
