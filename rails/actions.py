"""NeMo Guardrails actions of the railgraph rails (NeMo loads this file from the config folder).

Each action returns NeMo's ``RailOutcome`` (``is_blocked``, ``reason``, ``metadata``), the same
shape as the built-in ``injection_detection`` action, so the flows read alike and ``rails.Guard``
builds every verdict the same way. Settings come from custom keys of ``config.yml``; the work is
done in ``rails.checks``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nemoguardrails import RailsConfig
from nemoguardrails.actions import action
from nemoguardrails.actions.rail_outcome import RailOutcome, TransformTarget

from rails import checks, pii

# Where a `pii_check` in each kind of rail writes the masked text: NeMo's variables of the checked text.
_PII_TARGETS = {
    "input": TransformTarget.USER_MESSAGE,
    "output": TransformTarget.BOT_MESSAGE,
    "retrieval": TransformTarget.RELEVANT_CHUNKS,
}


def _config_dir(config: RailsConfig) -> Path:
    # NeMo joins several config folders with commas; ours is the first.
    return Path((config.config_path or ".").split(",")[0].strip())


def _settings(config: RailsConfig, key: str) -> dict[str, Any]:
    value = config.custom_data.get(key) or {}
    if not isinstance(value, dict):
        raise ValueError(f"{key!r} in config.yml must be a mapping, not {type(value).__name__}")
    return value


def _outcome(finding: checks.Finding, **extra: Any) -> RailOutcome:
    metadata: dict[str, Any] = {"score": finding.score, **extra}
    if finding.spans:
        # An allowed outcome with spans is a flag (rails.guard reads it so): the text passes, the caller decides.
        metadata["spans"] = list(finding.spans)
    if finding.blocked:
        return RailOutcome.block(reason=finding.detail, metadata=metadata)
    return RailOutcome.allow(reason=finding.detail, metadata=metadata)


@action(name="yara_prompt_injection", is_system_action=True)
async def yara_prompt_injection(text: str, config: RailsConfig) -> RailOutcome:
    """Match the prompt against ``yara/prompt_injection.yara`` (or ``yara_prompt_injection.rules``)."""
    rules = _settings(config, "yara_prompt_injection").get("rules", "yara/prompt_injection.yara")
    return _outcome(checks.check_yara(text or "", _config_dir(config) / rules))


@action(name="prompt_attack_classifier", is_system_action=True)
async def prompt_attack_classifier(text: str, config: RailsConfig) -> RailOutcome:
    """Score the prompt with the trained classifier (``prompt_attack`` settings in config.yml)."""
    settings = _settings(config, "prompt_attack")
    models_dir = _config_dir(config) / settings.get("model_dir", "models")
    threshold = settings.get("threshold")
    return _outcome(checks.check_prompt_attack(text or "", models_dir, None if threshold is None else float(threshold)))


def _topic_finding(text: str, settings: dict[str, Any], topics: dict[str, list[str]]) -> checks.Finding:
    return checks.check_topics(
        text or "",
        topics,
        [str(example) for example in settings.get("allowed") or []],
        min_similarity=float(settings.get("min_similarity", 0.5)),
        margin=float(settings.get("margin", 0.1)),
    )


def _examples(listed: Any) -> list[str]:
    return [str(example) for example in listed or []]


@action(name="political_opinion_check", is_system_action=True)
async def political_opinion_check(text: str, config: RailsConfig) -> RailOutcome:
    """Compare the prompt with the example utterances under ``political_opinions`` in config.yml."""
    settings = _settings(config, "political_opinions")
    examples = settings.get("examples") or {}
    allowed = {"allowed": examples.get("factual")} | settings
    return _outcome(_topic_finding(text, allowed, {"political opinion": _examples(examples.get("opinion"))}))


@action(name="off_limits_topic_check", is_system_action=True)
async def off_limits_topic_check(text: str, config: RailsConfig) -> RailOutcome:
    """Refuse prompts near the examples of a topic under ``off_limits_topics.topics`` in config.yml."""
    settings = _settings(config, "off_limits_topics")
    topics = {str(name): _examples(listed) for name, listed in (settings.get("topics") or {}).items()}
    finding = _topic_finding(text, settings, topics)
    return _outcome(finding, topic=finding.label)


@action(name="dialog_check", is_system_action=True)
async def dialog_check(text: str, config: RailsConfig) -> RailOutcome:
    """The dialog path in one pass: a prompt near the ``human_handoff`` examples goes to a person; one near the
    examples of an entry under ``canned_responses.responses`` gets its ``response``.

    A match stops the input rails like a block; its ``reply`` metadata (and ``handoff``) tells ``rails.Guard`` it
    is an answer, not a refusal.
    """
    handoff = _settings(config, "human_handoff")
    asked = _topic_finding(text, handoff, {"talk to a human": _examples(handoff.get("examples"))})
    if asked.blocked:
        return _outcome(asked, handoff=True, reply=str(handoff.get("reply", "")).strip())
    canned = _settings(config, "canned_responses")
    responses = canned.get("responses") or {}
    finding = _topic_finding(
        text, canned, {str(name): _examples(entry.get("examples")) for name, entry in responses.items()}
    )
    if finding.label is None:
        return _outcome(finding)
    return _outcome(finding, reply=str(responses[finding.label]["response"]).strip())


@action(name="citation_check", is_system_action=True)
async def citation_check(answer: str, config: RailsConfig, context: dict[str, Any] | None = None) -> RailOutcome:
    """Check the answer against the numbered sources in the ``sources`` context key: every ``[n]`` names
    one, every quote is verbatim in it, every sentence is supported (``grounding`` settings in config.yml)."""
    sources = (context or {}).get("sources") or []
    settings = _settings(config, "grounding")
    finding = checks.check_citations(
        answer or "",
        [str(source) for source in sources],
        min_overlap=float(settings.get("min_overlap", checks.MIN_OVERLAP)),
        min_similarity=float(settings.get("min_similarity", checks.MIN_SIMILARITY)),
    )
    return _outcome(finding)


@action(name="pii_check", is_system_action=True)
async def pii_check(text: str, source: str, config: RailsConfig) -> RailOutcome:
    """Find personal data in a user message, bot message or retrieved chunks (``source``: input, output,
    retrieval) and mask it, block on it or let it pass per entity type (``pii`` settings in config.yml).

    The reason names entity types and counts only, never the data; a masked text comes back as a transform of the
    ``source``'s variable, which the flow assigns.
    """
    if source not in _PII_TARGETS:
        raise ValueError(f"pii_check: source must be one of {', '.join(_PII_TARGETS)}, not {source!r}")
    scan = pii.scan(text or "", pii.PiiSettings.from_config(_settings(config, "pii")))
    metadata: dict[str, Any] = {"score": scan.score}
    if scan.blocked:
        return RailOutcome.block(reason=scan.detail(), metadata=metadata)
    if scan.masked:
        return RailOutcome.transform([(_PII_TARGETS[source], scan.text)], reason=scan.detail(), metadata=metadata)
    return RailOutcome.allow(reason=scan.detail(), metadata=metadata)


@action(name="chunk_injection_check", is_system_action=True)
async def chunk_injection_check(text: str, config: RailsConfig) -> RailOutcome:
    """Look for a prompt injection planted in retrieved chunks: the prompt-injection YARA rules and the
    classifier's heads named under ``retrieval_injection`` in config.yml."""
    settings = checks.chunk_injection_settings(config.custom_data, _config_dir(config))
    return _outcome(checks.check_chunk_injection([text or ""], **settings)[0])
