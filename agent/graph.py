"""The railgraph agent: input rails -> rewrite query -> retrieve -> generate -> output rails -> approval -> respond."""

from __future__ import annotations

from typing import Literal

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph

from agent import nodes
from agent.configuration import Settings
from agent.memory import SqliteCheckpointer
from agent.services import Services, services_for
from agent.state import AgentState, InputState


def build_agent(
    settings: Settings | None = None,
    *,
    services: Services | None = None,
    checkpointer: BaseCheckpointSaver | Literal["database"] | None = "database",
) -> CompiledStateGraph:
    """Compile the agent.

    Args:
        settings: defaults to ``Settings()`` (``RAILGRAPH_*`` variables and ``railgraph.toml``).
        services: the database, store, rails and model to use; built from ``settings`` when omitted.
        checkpointer: ``"database"`` keeps threads in the railgraph database; pass your own saver, or
            ``None`` when the agent is a subgraph of a graph that has one.
    """
    services = services or services_for(settings or Settings())
    builder = StateGraph(AgentState, input_schema=InputState)
    builder.add_node("input_rails", nodes.input_rails)
    builder.add_node("rewrite_query", nodes.rewrite_query)
    builder.add_node("retrieve", nodes.retrieve)
    builder.add_node("generate", nodes.generate)
    builder.add_node("output_rails", nodes.output_rails)
    builder.add_node("approval", nodes.approval)
    builder.add_node("respond", nodes.respond)
    builder.add_node("refuse", nodes.refuse)
    builder.add_edge(START, "input_rails")
    builder.add_conditional_edges("input_rails", nodes.route_after_input)
    builder.add_edge("rewrite_query", "retrieve")
    builder.add_edge("retrieve", "generate")
    builder.add_edge("generate", "output_rails")
    builder.add_conditional_edges("output_rails", nodes.route_after_output)
    builder.add_conditional_edges("approval", nodes.route_after_approval)
    builder.add_edge("respond", END)
    builder.add_edge("refuse", END)
    saver = SqliteCheckpointer.open(services.settings.sqlite_path) if checkpointer == "database" else checkpointer
    graph = builder.compile(checkpointer=saver, name="railgraph")
    return graph.with_config(configurable={"services": services})


def make_graph() -> CompiledStateGraph:
    """Entry point for ``langgraph.json``: LangGraph's server brings its own checkpointer."""
    return build_agent(checkpointer=None)
