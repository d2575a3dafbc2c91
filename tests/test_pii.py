"""Personal data rails on real sentences of presidio-research's dev set, through real NeMo Guardrails, Presidio
and the graph on a real SQLite store: no mocks."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agent import Settings, build_agent
from agent.services import services_for
from agent.turns import ask, thread_config
from loaders import load_file
from loaders.ingest import file_units, ingest
from rails import DEFAULT_CONFIG_DIR, Guard, GuardConfigError
from rails.pii import ENTITIES, PiiSettings, scan

MASK_ALL = PiiSettings(actions=dict.fromkeys(ENTITIES, "mask"))
EMAIL = "ana.lopez@example.com"
PHONE = "(602) 272-9781"
BOOKINGS_NOTE = (
    "Box office opening hours.\n\n"
    f"For group bookings call the box office on {PHONE} between nine and five on weekdays.\n"
)


@pytest.fixture(scope="module")
def dev_rows(shared_data: Path) -> list[dict]:
    return json.loads((shared_data / "pii" / "presidio_synth_dev.json").read_text(encoding="utf-8"))


def _row_with(rows: list[dict], value: str) -> dict:
    return next(row for row in rows if any(span["entity_value"] == value for span in row["spans"]))


def _config(tmp_path: Path, entities: dict[str, str]) -> Path:
    """A copy of the packaged rails/ folder with ``custom_data.pii.entities`` changed as given."""
    folder = tmp_path / "rails"
    shutil.copytree(DEFAULT_CONFIG_DIR, folder, ignore=shutil.ignore_patterns("__pycache__"))
    config = folder / "config.yml"
    text = config.read_text(encoding="utf-8")
    for entity, action in entities.items():
        text = text.replace(
            f"      {entity}: {'allow' if entity == 'PERSON' else 'mask'}\n", f"      {entity}: {action}\n"
        )
    config.write_text(text, encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def strict_guard(tmp_path_factory: pytest.TempPathFactory) -> Guard:
    """Cards block, e-mail addresses pass, names are masked."""
    folder = _config(
        tmp_path_factory.mktemp("strict"), {"CREDIT_CARD": "block", "EMAIL_ADDRESS": "allow", "PERSON": "mask"}
    )
    built = Guard(folder)
    yield built
    built.close()


# --- detection and masking ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entity", "value"),
    [
        ("EMAIL_ADDRESS", "JaninaTokareva@superrito.com"),
        ("PHONE_NUMBER", "(602)272-9781"),
        ("CREDIT_CARD", "4574911566148561"),
        ("CREDIT_CARD", "2307733725847513"),  # a Mastercard 2-series number, which Presidio's own pattern misses
        ("IBAN_CODE", "GB59IFUE40226315499137"),
        ("US_SSN", "054-28-6917"),
        ("IP_ADDRESS", "179.177.214.91"),
        ("PERSON", "Petr Kloz"),
        ("PERSON", "Sandra Trentino"),
    ],
)
def test_each_entity_type_is_masked_in_dev_set_sentences(dev_rows: list[dict], entity: str, value: str) -> None:
    sentence = _row_with(dev_rows, value)["full_text"]
    result = scan(sentence, MASK_ALL)
    assert value not in result.text
    assert f"<{entity}>" in result.text
    assert not result.blocked
    assert f" {entity}" in result.detail() and value not in result.detail()


@pytest.mark.parametrize(
    ("valid", "invalid"),
    [("4574911566148561", "4574911566148562"), ("GB59IFUE40226315499137", "GB59IFUE40226315499138")],
    ids=["Luhn-invalid card", "checksum-invalid IBAN"],
)
def test_invalid_card_number_and_iban_are_left_alone(dev_rows: list[dict], valid: str, invalid: str) -> None:
    sentence = _row_with(dev_rows, valid)["full_text"]
    assert valid not in scan(sentence, MASK_ALL).text
    result = scan(sentence.replace(valid, invalid), MASK_ALL)
    assert invalid in result.text, result.masked
    assert {span.entity_type for span in result.masked} <= {"PERSON"}


def test_reference_numbers_are_not_phone_numbers(documents_dir: Path) -> None:
    # A Wikipedia article as loaded: a reference list (ISBNs, URL digits, page ranges) and statistics tables
    # ("37 9 3 2 2 0", an em dash, "42 11"), all of which Presidio's phone pattern matches.
    (loaded,) = load_file(documents_dir / "unstructured_example_docs" / "norwich-city.txt")
    article = loaded.page_content
    assert "\u2014 42 11" in article and "pp. 374\u2013375" in article
    settings = PiiSettings.from_config({})
    assert "PHONE_NUMBER" not in scan(article, settings).detail()
    assert "PHONE_NUMBER" in scan("Call the office on (602) 272-9781 after nine.", settings).detail()


def test_allow_and_block_settings() -> None:
    text = f"Write to {EMAIL} about card 4111 1111 1111 1111."
    allowed = scan(text, PiiSettings.from_config({"entities": {"EMAIL_ADDRESS": "allow"}}))
    assert EMAIL in allowed.text and "<CREDIT_CARD>" in allowed.text
    blocked = scan(text, PiiSettings.from_config({"entities": {"CREDIT_CARD": "block"}}))
    assert blocked.blocked and blocked.detail() == "found 1 CREDIT_CARD (set to block); would mask 1 EMAIL_ADDRESS"
    with pytest.raises(ValueError, match=r"pii\.entities\.CREDIT_CARD .*'redact'.*mask, block, allow"):
        PiiSettings.from_config({"entities": {"CREDIT_CARD": "redact"}})
    with pytest.raises(ValueError, match=r"pii\.entities\.PASSPORT.*unknown entity type"):
        PiiSettings.from_config({"entities": {"PASSPORT": "mask"}})


# --- through NeMo -----------------------------------------------------------------------------------


def test_question_is_masked_by_the_input_rail(guard: Guard) -> None:
    outcome = guard.check_input(f"My e-mail is {EMAIL}, what does the contract say about termination?")
    assert not outcome.blocked
    assert outcome.text == "My e-mail is <EMAIL_ADDRESS>, what does the contract say about termination?"
    (verdict,) = [verdict for verdict in outcome.verdicts if verdict["rail"] == "pii input"]
    assert (verdict["verdict"], verdict["detail"]) == ("modify", "masked 1 EMAIL_ADDRESS")
    assert all(EMAIL not in v["detail"] for v in outcome.verdicts)


def test_names_pass_by_default(guard: Guard) -> None:
    question = "Where was Iwan Roberts born?"
    assert guard.check_input(question).text == question


def test_answer_is_masked_and_flagged_sentences_keep_no_data(guard: Guard) -> None:
    sources = ["Norwich City F.C. was founded in 1902."]
    outcome = guard.check_output("Who can I write to?", f"Write to {EMAIL} about tickets [1].", sources)
    assert not outcome.blocked
    assert outcome.text == "Write to <EMAIL_ADDRESS> about tickets [1]."
    flag = next(v for v in outcome.verdicts if v["verdict"] == "flag")
    assert flag["spans"] == [outcome.text] and EMAIL not in flag["detail"]
    assert outcome.verdicts[-1]["rail"] == "pii output" and outcome.verdicts[-1]["verdict"] == "modify"


def test_block_and_allow_settings_through_the_guard(strict_guard: Guard) -> None:
    refused = strict_guard.check_input("What is the limit on my card 4574911566148561?")
    assert refused.blocked and refused.policy == "personal data" and "personal data" in refused.message
    assert refused.verdicts[-1]["detail"] == "found 1 CREDIT_CARD (set to block)"

    allowed = strict_guard.check_input(f"Can you reply to {EMAIL} about Mr. Kloz?")
    assert allowed.text == f"Can you reply to {EMAIL} about Mr. <PERSON>?"

    chunks = strict_guard.screen_chunks(["Card on file: 4574911566148561.", f"Contact {EMAIL}.", "Nothing here."])
    assert chunks.texts == [None, f"Contact {EMAIL}.", "Nothing here."]
    verdict = {verdict["rail"]: verdict for verdict in chunks.verdicts}["pii retrieval"]
    assert verdict["verdict"] == "modify"
    assert verdict["detail"] == "withheld 1 of 3 chunks for 1 CREDIT_CARD (set to block)"


def test_bad_pii_setting_is_a_clear_error(tmp_path: Path) -> None:
    folder = _config(tmp_path, {"US_SSN": "hide"})
    with pytest.raises(GuardConfigError, match=r"pii\.entities\.US_SSN .*'hide'; use one of mask, block, allow"):
        Guard(folder)


# --- through the graph ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory, documents_dir: Path, guard: Guard):
    root = tmp_path_factory.mktemp("pii-corpus")
    note = root / "box-office.txt"
    note.write_text(BOOKINGS_NOTE, encoding="utf-8")
    settings = Settings(db=f"sqlite:///{root / 'railgraph.db'}", llm="extractive")
    services = services_for(settings)
    report = ingest(
        file_units([documents_dir / "unstructured_example_docs" / "norwich-city.txt", note]), services.store
    )
    assert not report.failed
    return build_agent(settings)


def test_email_in_a_question_never_reaches_retrieval_or_the_answer(agent) -> None:
    result = ask(agent, f"My e-mail is {EMAIL}. Where was Iwan Roberts born?", thread_id="pii-question")
    values = agent.get_state(thread_config("pii-question")).values
    assert result["status"] == "answered" and "Bangor" in result["answer"]
    assert values["question"] == "My e-mail is <EMAIL_ADDRESS>. Where was Iwan Roberts born?"
    assert EMAIL not in (values["search_query"] or values["question"])
    assert EMAIL not in result["answer"]
    assert all(EMAIL not in message.text for message in values["messages"])  # the thread keeps it masked
    assert any(v["rail"] == "pii input" and v["verdict"] == "modify" for v in values["rails"])


def test_phone_number_in_a_chunk_is_masked_before_generation(agent) -> None:
    result = ask(agent, "What number do I call for group bookings at the box office?", thread_id="pii-chunk")
    values = agent.get_state(thread_config("pii-chunk")).values
    box_office = [s for s in values["sources"] if s["source"].endswith("box-office.txt")]
    assert box_office and all(PHONE not in s["text"] and PHONE not in s["quote"] for s in values["sources"])
    assert "<PHONE_NUMBER>" in values["draft"], "the extractive draft quotes the chunk the model was given"
    assert PHONE not in values["draft"] and PHONE not in result["answer"]
    verdict = next(v for v in values["rails"] if v["rail"] == "pii retrieval")
    assert verdict["verdict"] == "modify" and verdict["detail"].startswith("masked 1 PHONE_NUMBER in 1 of ")


# --- the eval command --------------------------------------------------------------------------------


def test_eval_pii_command_reports_scores_per_entity(tmp_path: Path, dev_rows: list[dict]) -> None:
    dataset = tmp_path / "pii.json"
    dataset.write_text(json.dumps([*dev_rows[:60], {"text": "a row without full_text"}]), encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "agent.cli", "eval", "pii", "--dataset", str(dataset), "--json"],
        env=os.environ | {"COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert f"{dataset} row 60: skipped" in done.stderr
    report = json.loads(done.stdout)
    assert report["sentences"] == 60 and report["skipped_rows"] == 1
    assert report["match"].startswith("overlap")
    assert set(report["entities"]) == set(ENTITIES)
    for scores in report["entities"].values():
        assert {"precision", "recall", "f1", "predicted", "labelled"} <= set(scores)
        assert all(0 <= scores[key] <= 1 for key in ("precision", "recall", "f1"))
    assert report["entities"]["PERSON"]["labelled"] > 0 and report["entities"]["PERSON"]["recall"] > 0
    assert 0 < report["latency_ms"]["p50"] <= report["latency_ms"]["p95"]
