"""railgraph's agent: ``from agent import build_agent`` gives the compiled LangGraph graph."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agent.configuration import Settings
    from agent.graph import build_agent

__all__ = ["Settings", "build_agent"]


def __getattr__(name: str) -> Any:
    # Imported on first use so `railgraph --help` does not load LangGraph, torch and NeMo.
    if name == "build_agent":
        from agent.graph import build_agent

        return build_agent
    if name == "Settings":
        from agent.configuration import Settings

        return Settings
    raise AttributeError(name)
