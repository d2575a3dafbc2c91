"""Grounded answers: quotes verbatim, sentences supported by what they cite, and the policy for the rest.

Real NeMo rails and real MiniLM. The graph tests feed a fixed draft through the real graph by giving it
a chat model that always says the same thing: the draft, not a model, is what these tests are about.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import HumanMessage

from agent import Settings, build_agent
from agent.extractive import NOT_FOUND
from agent.graph import CompiledStateGraph
from agent.models import ChatModelChoice
from agent.services import Services, services_for
from agent.turns import ask, thread_config
from loaders.ingest import file_units, ingest
from rails import Guard
from rails.checks import check_citations

SOURCES = [
    "Norwich City F.C. was founded in 1902. The club plays its home games at Carrow Road.",
    "Iwan Roberts was born in Bangor, Wales. He won fifteen caps for Wales.",
]
SUPPORTED = "Norwich City was founded in 1902 [1]."
UNSUPPORTED = "The club won the Champions League in 1999 [1]."
MISQUOTED = "Roberts was born in \u201cBarmouth, Wales\u201d [2]."


def test_supported_sentences_and_verbatim_quotes_pass(guard: Guard) -> None:
    answer = f"{SUPPORTED} Roberts was born in \u201cBangor, Wales.\u201d [2] He won fifteen caps [2]."
    outcome = guard.check_output("Tell me about Norwich City.", answer, SOURCES)
    assert not outcome.blocked and outcome.text == answer
    assert outcome.verdicts[0]["verdict"] == "pass", outcome.verdicts
    assert outcome.verdicts[0]["detail"] == "cites [1], [2] of 2 sources"


def test_quote_not_in_the_cited_source_is_flagged(guard: Guard) -> None:
    outcome = guard.check_output("Where was Roberts born?", f"{SUPPORTED} {MISQUOTED}", SOURCES)
    verdict = outcome.verdicts[0]
    assert not outcome.blocked
    assert verdict["verdict"] == "flag" and verdict["spans"] == [MISQUOTED]
    assert "quote not in [2]" in verdict["detail"] and verdict["score"] == 0.0
    # A true quote cited to the wrong source is a misquote of that source.
    wrong_source = "He was born in \u201cBangor, Wales\u201d [1]."
    assert check_citations(wrong_source, SOURCES).spans == (wrong_source,)


def test_sentence_with_no_support_is_flagged_with_its_score(guard: Guard) -> None:
    outcome = guard.check_output("Tell me about the club.", f"{SUPPORTED} {UNSUPPORTED}", SOURCES)
    verdict = outcome.verdicts[0]
    assert not outcome.blocked and outcome.text == f"{SUPPORTED} {UNSUPPORTED}"
    assert verdict["verdict"] == "flag" and verdict["spans"] == [UNSUPPORTED]
    assert "1 of 2 sentences unsupported" in verdict["detail"] and "Champions League" in verdict["detail"]
    assert verdict["score"] is not None and verdict["score"] < 0.5


def test_paraphrase_is_supported_by_embedding_similarity() -> None:
    # Few words in common with the source, the same meaning: MiniLM carries it over the line.
    assert not check_citations("Carrow Road is where the club plays its home matches [1].", SOURCES).spans
    assert check_citations("The club's stadium was built in 1935 [1].", SOURCES).spans


def test_a_number_its_source_does_not_state_is_flagged() -> None:
    # Every word but the year matches the source, so overlap alone would pass it.
    wrong_year = "Norwich City F.C. was founded in 1950 [1]."
    finding = check_citations(f"{SUPPORTED} {wrong_year}", SOURCES)
    assert finding.spans == (wrong_year,)
    assert "1950 not in [1]" in finding.detail and finding.score == 0.0
    # The right year from the wrong source is no better; thousands separators do not matter.
    assert check_citations("Norwich City F.C. was founded in 1902 [2].", SOURCES).spans
    assert not check_citations("Carrow Road holds 27,244 fans [1].", ["Carrow Road holds 27244 fans."]).spans


class _Fixed(FakeListChatModel):
    """A chat model that always drafts the same answer (the grounding rails are under test, not a model)."""


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, documents_dir: Path) -> Settings:
    root = tmp_path_factory.mktemp("grounding")
    settings = Settings(db=f"sqlite:///{root / 'railgraph.db'}", llm="extractive")
    services = services_for(settings)
    docs = documents_dir / "unstructured_example_docs"
    report = ingest(file_units([docs / "norwich-city.txt"]), services.store)
    assert not report.failed and report.added > 5
    return settings


BORN = "Iwan Roberts was born in Bangor [1]."
INVENTED = "He later became the king of Norway and ruled for forty years [1]."


def _agent(settings: Settings, policy: str, draft: str) -> CompiledStateGraph:
    changed = settings.model_copy(update={"unsupported_policy": policy})
    chat = ChatModelChoice(model=_Fixed(responses=[draft]), name="fixed", reason="test")
    services = Services.create(changed, chat=chat, guard=services_for(settings).guard)
    return build_agent(services=services)


def test_remove_drops_exactly_the_unsupported_sentence(corpus: Settings) -> None:
    result = ask(_agent(corpus, "remove", f"{BORN} {INVENTED}"), "Where was Iwan Roberts born?")
    assert result["status"] == "answered"
    assert result["answer"] == BORN
    verdict = next(v for v in result["rails"] if v["rail"] == "citations")
    assert verdict["verdict"] == "flag" and verdict["spans"] == [INVENTED] and "removed" in verdict["detail"]


def test_remove_with_nothing_left_says_not_found(corpus: Settings) -> None:
    result = ask(_agent(corpus, "remove", INVENTED), "Where was Iwan Roberts born?")
    assert result["status"] == "answered" and result["answer"] == NOT_FOUND


def test_review_sends_the_draft_to_a_reviewer_even_with_approval_never(corpus: Settings) -> None:
    graph = _agent(corpus, "review", f"{BORN} {INVENTED}")
    assert corpus.approval == "never"
    result = ask(graph, "Where was Iwan Roberts born?", thread_id="review-thread")
    assert result["status"] == "pending_review"
    snapshot = graph.get_state(thread_config("review-thread"))
    assert snapshot.interrupts and snapshot.values["draft"] == f"{BORN} {INVENTED}"


def test_refuse_blocks_the_answer(corpus: Settings) -> None:
    result = ask(_agent(corpus, "refuse", f"{BORN} {INVENTED}"), "Where was Iwan Roberts born?")
    assert result["status"] == "blocked"
    assert "unsupported claims" in result["answer"] and "king" not in result["answer"]
    assert next(v for v in result["rails"] if v["rail"] == "citations")["verdict"] == "block"


def test_supported_draft_is_answered_under_every_policy(corpus: Settings) -> None:
    for policy in ("remove", "review", "refuse"):
        result = ask(_agent(corpus, policy, BORN), "Where was Iwan Roberts born?")
        assert (result["status"], result["answer"]) == ("answered", BORN), policy


@pytest.mark.parametrize(
    "question",
    ["Where was Iwan Roberts born?", "How many caps did Iwan Roberts win for Wales?", "When was the club founded?"],
)
def test_extractive_answers_are_not_flagged(corpus: Settings, question: str) -> None:
    graph = build_agent(corpus.model_copy(update={"unsupported_policy": "refuse"}))
    state = graph.invoke({"messages": [HumanMessage(question)]}, thread_config(f"extractive-{question}"))
    assert state["status"] == "answered" and state["answer"] != NOT_FOUND
    assert "\u201c" in state["answer"] and "[" in state["answer"]
    assert [v["verdict"] for v in state["rails"]] == ["pass"] * len(state["rails"]), state["rails"]
