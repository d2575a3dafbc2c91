"""Streaming output rails: the answer reaches the user in chunks the real output rails passed, while the model writes.

The chat model is scripted (a fixed answer streamed word by word, counting the words it has given out), so that a
test can say which sentence the rails must mask or block and how far the model had got; the rails, the graph and
the SQLite database are the real ones.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import copy_rails_config
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langgraph.graph.state import CompiledStateGraph

from agent import Settings, build_agent
from agent.models import ChatModelChoice
from agent.nodes import ANSWER_CHUNK
from agent.services import Services, services_for
from agent.streaming import CheckedStream
from agent.turns import ask, thread_config
from loaders.ingest import file_units, ingest
from rails import Guard, RailsOutcome

QUESTION = "Where was Iwan Roberts born?"
BORN = "Iwan Roberts was born in Bangor [1]."
EMAIL = "Iwan Roberts was born in Bangor; write to iwan.roberts@example.com [1]."
SCRIPT = "Run <script>alert(document.cookie)</script> now [1]."


class ScriptedChat(BaseChatModel):
    """Streams ``text`` a word at a time, paced like a model writing 100 tokens/s (without a pause the graph's
    thread would run ahead of the test's reader); ``given`` counts the words handed out so far."""

    text: str
    given: int = 0

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **_: Any) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=AIMessage(self.text))])

    def _stream(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **_: Any
    ) -> Iterator[ChatGenerationChunk]:
        words = self.text.split(" ")
        for n, word in enumerate(words):
            piece = word if n == len(words) - 1 else word + " "
            time.sleep(0.01)
            self.given += 1
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=piece))
            if run_manager is not None:
                run_manager.on_llm_new_token(piece, chunk=chunk)
            yield chunk


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, documents_dir: Path) -> Settings:
    settings = Settings(db=f"sqlite:///{tmp_path_factory.mktemp('streaming') / 'railgraph.db'}", llm="extractive")
    report = ingest(
        file_units([documents_dir / "unstructured_example_docs" / "norwich-city.txt"]), services_for(settings).store
    )
    assert not report.failed
    return settings


def _agent(settings: Settings, model: ScriptedChat, guard: Guard | None = None) -> CompiledStateGraph:
    chat = ChatModelChoice(model=model, name="scripted", reason="test")
    return build_agent(services=Services.create(settings, chat=chat, guard=guard or services_for(settings).guard))


def _streamed(graph: CompiledStateGraph, model: ScriptedChat) -> tuple[list[tuple[int, str]], dict[str, Any]]:
    """The chunks the user got, each with the number of words the model had given out when it arrived; the turn."""
    chunks: list[tuple[int, str]] = []
    result = ask(graph, QUESTION, on_chunk=lambda chunk: chunks.append((model.given, chunk)))
    return chunks, result


def test_answer_arrives_in_checked_sentences_while_the_model_writes(corpus: Settings) -> None:
    model = ScriptedChat(text=" ".join([BORN] * 16))
    chunks, result = _streamed(_agent(corpus, model), model)
    total = len(model.text.split(" "))
    assert len(chunks) >= 3
    # The first chunk reached the user when the model was less than half done.
    assert chunks[0][0] < total / 2
    # Whole sentences only, never a part of one.
    assert all(chunk.strip().endswith("[1].") for _, chunk in chunks)
    assert result["status"] == "answered"
    assert "".join(chunk for _, chunk in chunks).strip() == result["answer"] == model.text


def test_personal_data_is_masked_before_it_streams(corpus: Settings) -> None:
    model = ScriptedChat(text=" ".join([BORN] * 8 + [EMAIL] + [BORN] * 8))
    chunks, result = _streamed(_agent(corpus, model), model)
    streamed = "".join(chunk for _, chunk in chunks)
    assert "<EMAIL_ADDRESS>" in streamed and "iwan.roberts@example.com" not in streamed
    assert "iwan.roberts@example.com" not in result["answer"]


def test_a_blocked_chunk_stops_the_model_and_nothing_after_it_streams(corpus: Settings) -> None:
    model = ScriptedChat(text=" ".join([BORN] * 8 + [SCRIPT] + [BORN] * 40))
    chunks, result = _streamed(_agent(corpus, model), model)
    streamed = "".join(chunk for _, chunk in chunks)
    assert streamed.strip() and "script" not in streamed
    assert result["status"] == "blocked"
    assert "unsafe code or markup" in result["answer"] and "script" not in result["answer"]
    assert any(v["rail"] == "injection detection" and v["verdict"] == "block" for v in result["rails"])
    # The model was stopped at the blocked chunk, long before its 400-odd words were out.
    assert model.given < len(model.text.split(" ")) / 2


def test_unsupported_sentences_are_left_out_of_the_stream(corpus: Settings) -> None:
    invented = "He later became the king of Norway and ruled for forty years [1]."
    model = ScriptedChat(text=" ".join([BORN] * 6 + [invented] + [BORN] * 6))
    chunks, result = _streamed(_agent(corpus, model), model)
    streamed = "".join(chunk for _, chunk in chunks)
    assert "king" not in streamed and streamed.count(BORN) == 12
    assert result["status"] == "answered" and "king" not in result["answer"]


def test_a_draft_that_may_go_to_a_reviewer_never_streams(corpus: Settings) -> None:
    model = ScriptedChat(text=" ".join([BORN] * 12))
    chunks, result = _streamed(_agent(corpus.model_copy(update={"approval": "always"}), model), model)
    assert chunks == [] and result["status"] == "pending_review"


def test_streaming_turned_off_in_config_yml_releases_nothing_early(corpus: Settings, tmp_path: Path) -> None:
    folder = copy_rails_config(tmp_path)
    config = folder / "config.yml"
    config.write_text(config.read_text(encoding="utf-8").replace("      enabled: true\n", "      enabled: false\n"))
    guard = Guard(folder)
    try:
        assert not guard.output_streaming.enabled
        model = ScriptedChat(text=" ".join([BORN] * 12))
        chunks, result = _streamed(_agent(corpus, model, guard), model)
    finally:
        guard.close()
    assert chunks == [] and result["status"] == "answered" and result["answer"] == model.text


def test_an_extractive_answer_streams_through_the_same_rails(corpus: Settings) -> None:
    chat = ChatModelChoice(model=None, name="extractive", reason="test")
    graph = build_agent(services=Services.create(corpus, chat=chat, guard=services_for(corpus).guard))
    chunks: list[str] = []
    result = ask(graph, QUESTION, on_chunk=chunks.append)
    assert result["status"] == "answered" and "Bangor" in result["answer"]
    assert "".join(chunks).strip() == result["answer"]


def test_raw_tokens_stay_out_of_messages_mode_and_checked_chunks_reach_astream_events(corpus: Settings) -> None:
    model = ScriptedChat(text=" ".join([BORN] * 8 + [EMAIL]))
    graph = _agent(corpus, model)
    messages = list(
        graph.stream({"messages": [HumanMessage(QUESTION)]}, thread_config("messages-mode"), stream_mode="messages")
    )
    from_generate = [message for message, metadata in messages if metadata.get("langgraph_node") == "generate"]
    assert from_generate == []
    # What messages mode does show is the checked answer, masked.
    assert any("<EMAIL_ADDRESS>" in message.text for message, _ in messages)

    async def events() -> list[dict[str, Any]]:
        inputs = {"messages": [HumanMessage(QUESTION)]}
        return [event async for event in graph.astream_events(inputs, thread_config("events"), version="v2")]

    seen = asyncio.run(events())
    chunks = [e["data"]["text"] for e in seen if e["event"] == "on_custom_event" and e["name"] == ANSWER_CHUNK]
    raw = [e for e in seen if e["event"] == "on_chat_model_stream"]
    assert len(chunks) >= 2 and "iwan.roberts@example.com" not in "".join(chunks)
    assert raw and all("nostream" in e["tags"] for e in raw)


def _passed(chunk: str) -> RailsOutcome:
    return RailsOutcome(blocked=False, text=chunk.strip(), verdicts=[])


def test_a_chunk_ends_at_the_last_sentence_end_once_chunk_size_tokens_are_in() -> None:
    stream = CheckedStream(_passed, chunk_size=4)
    released = []
    for token in ["One", " two.", " Three", " four", " five.", " Six", " seven"]:
        released += [check.released for check in stream.feed(token)]
    # Nothing at "two." (2 tokens in); at the 4th token, the chunk ends after "two.", the latest sentence end, and
    # " Three four five." is held: its end has not been followed by the next word's space yet, so it may go on.
    assert released == ["One two."]
    assert [check.released for check in stream.close()] == [" Three four five. Six seven"]
    assert stream.text == "One two. Three four five. Six seven"


def test_a_run_on_sentence_is_cut_at_a_space_after_four_chunk_sizes() -> None:
    stream = CheckedStream(_passed, chunk_size=2)
    released = [
        check.released for word in ["a", "b", "c", "d", "e", "f", "g", "h", "i"] for check in stream.feed(word + " ")
    ]
    # The last word stays behind: the next token could still be part of it.
    assert released == ["a b c d e f g "]
    assert [check.released for check in stream.close()] == ["h i "]
