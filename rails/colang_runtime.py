"""Two drop-ins for NeMo's Colang 1.0 runtime that give its results with less work.

An input check of railgraph's rails spends more time in the Colang runtime than in the rails' own actions; a
profile on a 2-core AMD EPYC showed two causes, one drop-in for each:

- ``eval_expression``: NeMo evaluates a flow's ``if``/``while`` conditions and ``$x = ...`` assignments with
  ``simpleeval``, and its own ``eval_expression`` rewrites the ``$variables`` with two regular expressions,
  builds a new ``SimpleEval`` and parses the expression afresh on every call (about 340 calls per check, most
  from the ``run input rails`` loop of NeMo's llm_flows.co). Flows are fixed text, so the rewritten expression and
  its syntax tree are cached here; only the variable values are read per call.
- ``compute_next_steps``: to find the step after each new event, NeMo folds ``compute_next_state`` over the whole
  event history from an empty state, so a check of n events costs n^2/2 flow steps. While the runtime processes
  one message it only appends to its list of events, so here the state after the last call is kept and only the
  new events are folded into it; any other history (a different list, one whose earlier events changed, a
  ``hide_prev_turn`` event, flows added since) is folded from the start, as NeMo does.

Both call NeMo's and simpleeval's own code for the work itself, so the values, errors and next events are NeMo's
(tests/test_colang_runtime.py runs both on every call of real checks). ``rails.Guard`` installs them when it builds
its rails.
"""

from __future__ import annotations

import ast
import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from time import time
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nemoguardrails.colang.v1_0.runtime.flows import State

_VARIABLE = re.compile(r"\$([a-zA-Z_][a-zA-Z0-9_]*)")
_evaluators = threading.local()
# The NeMo Guardrails releases whose Colang 1.0 runtime these drop-ins were compared with.
VERIFIED_NEMO = ("0.24.",)
# Event lists being processed at once: one per message in flight (the Guard's loop runs concurrent checks).
_MAX_RESUMABLE = 16


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


@dataclass
class _Folded:
    """The flow state after folding the first ``count`` events of ``history`` (the runtime's own list)."""

    history: list[dict]
    count: int
    last_event: dict | None
    flow_ids: tuple[str, ...]
    rails_config: Any
    state: State


_folded: OrderedDict[int, _Folded] = OrderedDict()
_folded_lock = threading.Lock()


def _resume(history: list[dict], flow_configs: dict[str, Any], rails_config: Any) -> _Folded | None:
    """The fold over ``history``'s events so far, taken out of the cache, when it was over these same events."""
    with _folded_lock:
        folded = _folded.pop(id(history), None)
    if (
        folded is None
        or folded.history is not history
        or folded.count > len(history)
        or (folded.count > 0 and history[folded.count - 1] is not folded.last_event)
        or folded.flow_ids != tuple(flow_configs)
        or folded.rails_config is not rails_config
    ):
        return None
    return folded


def _keep(history: list[dict], flow_configs: dict[str, Any], rails_config: Any, state: State) -> None:
    folded = _Folded(history, len(history), history[-1] if history else None, tuple(flow_configs), rails_config, state)
    with _folded_lock:
        _folded[id(history)] = folded
        while len(_folded) > _MAX_RESUMABLE:
            _folded.popitem(last=False)


def compute_next_steps(
    history: list[dict], flow_configs: dict[str, Any], rails_config: Any, processing_log: list[dict]
) -> list[dict]:
    """``nemoguardrails.colang.v1_0.runtime.flows.compute_next_steps``, folding only the events it has not seen."""
    from nemoguardrails.colang.v1_0.runtime import flows

    if any(event["type"] == "hide_prev_turn" for event in history):
        # NeMo rewrites such a history before folding it; its own function does that.
        return flows.compute_next_steps(history, flow_configs, rails_config, processing_log)
    folded = _resume(history, flow_configs, rails_config)
    if folded is None:
        state = flows.State(context={}, flow_states=[], flow_configs=flow_configs, rails_config=rails_config)
        start = 0
    else:
        state, start = folded.state, folded.count
    for event in history[start:]:
        state = flows.compute_next_state(state, event)
        # As in NeMo: a "stop" ends every flow.
        if event["type"] == "BotIntent" and event["intent"] == "stop":
            state.flow_states = []
    _keep(history, flow_configs, rails_config, state)

    next_steps = []
    if state.context_updates:
        next_steps.append(flows.new_event_dict("ContextUpdate", data=state.context_updates))
    if state.next_step:
        step = flows._step_to_event(state.next_step)
        if step["type"] == "BotIntent" and state.next_step_comment:
            # A bot intent's comment is its instructions.
            step["instructions"] = state.next_step_comment
        next_steps.append(step)
    if history and history[-1]["type"] == "BotIntent" and history[-1]["intent"] == "stop":
        next_steps = []
    if next_steps and state.next_step_by_flow_uid:
        for flow_state in state.flow_states:
            if flow_state.uid == state.next_step_by_flow_uid:
                processing_log.append(
                    {"type": "step", "timestamp": time(), "flow_id": flow_state.flow_id, "next_steps": next_steps}
                )
    return next_steps


def replacements() -> list[tuple[ModuleType, str, Callable[..., Any], Callable[..., Any]]]:
    """Where NeMo's runtime looks up the functions replaced here: ``(module, name, NeMo's own, railgraph's)``."""
    from nemoguardrails.colang.v1_0.runtime import eval as nemo_eval
    from nemoguardrails.colang.v1_0.runtime import flows, runtime, sliding

    return [
        (flows, "eval_expression", nemo_eval.eval_expression, eval_expression),
        (sliding, "eval_expression", nemo_eval.eval_expression, eval_expression),
        (runtime, "compute_next_steps", flows.compute_next_steps, compute_next_steps),
    ]


def install() -> bool:
    """Make NeMo's Colang 1.0 runtime use ``eval_expression`` (in its flow stepping and sliding) and
    ``compute_next_steps``.

    Done only on the NeMo releases these were checked against (``VERIFIED_NEMO``: the tests run both on every
    call of real checks) and where those modules still call NeMo's own functions, so another release keeps its
    own; returns whether the runtime uses these now.
    """
    from importlib.metadata import version

    if not version("nemoguardrails").startswith(VERIFIED_NEMO):
        return False
    targets = replacements()
    if all(getattr(module, name) is ours for module, name, _, ours in targets):
        return True
    if not all(getattr(module, name) in (nemos, ours) for module, name, nemos, ours in targets):
        return False
    for module, name, _, ours in targets:
        setattr(module, name, ours)
    return True
