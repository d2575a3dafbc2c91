"""A drop-in for NeMo's Colang 1.0 ``eval_expression`` that parses each expression once.

NeMo evaluates a flow's ``if``/``while`` conditions and ``$x = ...`` assignments with ``simpleeval``, and its
``eval_expression`` rewrites the ``$variables`` with two regular expressions, builds a new ``SimpleEval`` and
parses the expression afresh on every call: about 340 calls per input check of railgraph's rails, most of them
from the ``run input rails`` loop of NeMo's llm_flows.co. Flows are fixed text, so the rewritten expression and
its syntax tree are cached here; only the variable values are read per call. The evaluation itself is
``simpleeval``'s, with the names and functions NeMo gives it, so an expression's value, or its error message,
is what NeMo's own function gives. ``rails.Guard`` installs it when it builds its rails.
"""

from __future__ import annotations

import ast
import re
import threading
from functools import lru_cache
from typing import Any

_VARIABLE = re.compile(r"\$([a-zA-Z_][a-zA-Z0-9_]*)")
_evaluators = threading.local()


@lru_cache(maxsize=4096)
def _compiled(expr: str) -> tuple[tuple[str, ...], str, ast.AST]:
    """The ``$variables`` of ``expr`` (first use first), the expression with each ``$name`` as ``var_name`` (as
    NeMo writes it) and its parsed tree."""
    from simpleeval import SimpleEval

    names = tuple(dict.fromkeys(_VARIABLE.findall(expr)))
    rewritten = _VARIABLE.sub(r"var_\1", expr)
    return names, rewritten, SimpleEval.parse(rewritten)


def eval_expression(expr: Any, context: dict[str, Any]) -> Any:
    """``nemoguardrails.colang.v1_0.runtime.eval.eval_expression``, with the parse cached."""
    from nemoguardrails.colang.v1_0.runtime.utils import AttributeDict
    from simpleeval import SimpleEval

    if expr is None:
        return None
    if not isinstance(expr, str):
        if not isinstance(expr, bool | int):
            raise TypeError(f"a Colang expression is a str, bool or int, not {type(expr).__name__}")
        return expr
    try:
        names, rewritten, tree = _compiled(expr)
        values = {}
        for name in names:
            value = context.get(name)
            # As NeMo does: dicts become AttributeDicts so that `$speaker.name` reads a key.
            values[f"var_{name}"] = AttributeDict(value) if isinstance(value, dict) else value
        # One evaluator per thread: SimpleEval keeps the names (and the expression, for its errors) on itself.
        evaluator = getattr(_evaluators, "evaluator", None)
        if evaluator is None:
            evaluator = _evaluators.evaluator = SimpleEval(functions={"len": len})
        evaluator.names = values
        return evaluator.eval(rewritten, previously_parsed=tree)
    except Exception as exc:
        raise Exception(f"Error evaluating '{expr}': {exc}") from exc


def install() -> bool:
    """Make NeMo's Colang 1.0 runtime (its flow stepping and sliding) use ``eval_expression``.

    Done only where those modules still call NeMo's own function, so a NeMo release that changes them keeps its
    own; returns whether the runtime uses this one now.
    """
    from nemoguardrails.colang.v1_0.runtime import eval as nemo_eval
    from nemoguardrails.colang.v1_0.runtime import flows, sliding

    users = (flows, sliding)
    if all(module.eval_expression is eval_expression for module in users):
        return True
    if not all(module.eval_expression is nemo_eval.eval_expression for module in users):
        return False
    for module in users:
        module.eval_expression = eval_expression
    return True
