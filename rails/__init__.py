"""railgraph's guardrails: the NeMo Guardrails config in this folder and the ``Guard`` that runs it."""

from rails.guard import DEFAULT_CONFIG_DIR, Guard, GuardConfigError, RailsOutcome, RailVerdict

__all__ = ["DEFAULT_CONFIG_DIR", "Guard", "GuardConfigError", "RailVerdict", "RailsOutcome"]
