"""ChatLlamaCpp on the real SmolLM2 GGUF: sync, streaming, async, stop, errors and concurrency."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest
from langchain_core.messages import AIMessageChunk

from agent.llamacpp import ChatLlamaCpp, LlamaCppError

PROMPT = "What is the capital of France? Answer in one sentence."


@pytest.fixture(scope="module")
def chat(gguf_path: Path) -> ChatLlamaCpp:
    # n_ctx 2048 like test_models' model, so both modules share one loaded copy.
    return ChatLlamaCpp(model_path=gguf_path, n_ctx=2048, max_tokens=32, seed=7)


def test_invoke_answers_with_usage(chat: ChatLlamaCpp) -> None:
    reply = chat.invoke(PROMPT)
    assert isinstance(reply.content, str)
    assert reply.content.strip()
    assert reply.usage_metadata is not None
    assert reply.usage_metadata["input_tokens"] > 0
    assert 0 < reply.usage_metadata["output_tokens"] <= 32
    assert reply.response_metadata["finish_reason"] in ("stop", "length")


def test_stream_yields_many_chunks_that_add_up(chat: ChatLlamaCpp) -> None:
    chunks = list(chat.stream("Count from one to ten."))
    texts = [chunk.content for chunk in chunks if chunk.content]
    assert len(texts) > 1
    whole = sum(chunks[1:], chunks[0])
    assert isinstance(whole, AIMessageChunk)
    assert whole.content == "".join(str(text) for text in texts)
    assert str(whole.content).strip()
    assert whole.usage_metadata is not None
    assert whole.usage_metadata["output_tokens"] > 0
    assert whole.response_metadata["finish_reason"] in ("stop", "length")


def test_async_paths(chat: ChatLlamaCpp) -> None:
    async def run() -> tuple[list[AIMessageChunk], str]:
        chunks = [chunk async for chunk in chat.astream("Say hello.")]
        stream = chat.astream("Write a long story about a lighthouse.", max_tokens=200)
        await anext(stream)
        await stream.aclose()  # an abandoned async stream must give the model back
        reply = await asyncio.wait_for(chat.ainvoke("Say hello."), timeout=60)
        return chunks, str(reply.content)

    chunks, text = asyncio.run(run())
    assert len([chunk for chunk in chunks if chunk.content]) > 1
    assert text.strip()


def test_stop_sequences_end_the_answer(chat: ChatLlamaCpp) -> None:
    # Temperature 0 (a per-call argument) makes both answers the same up to the stop sequence.
    full = str(chat.invoke(PROMPT, temperature=0).content)
    stopped = str(chat.invoke(PROMPT, stop=[" "], temperature=0).content)
    streamed = "".join(str(c.content) for c in chat.stream(PROMPT, stop=[" "], temperature=0))
    assert " " in full
    assert " " not in stopped
    assert full.startswith(stopped)
    assert streamed == stopped


def test_missing_file_is_a_clear_value_error(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "model.gguf"
    with pytest.raises(ValueError, match="GGUF model file not found") as caught:
        ChatLlamaCpp(model_path=missing)
    assert str(missing) in str(caught.value)
    assert "llamacpp:" in str(caught.value)


def test_non_gguf_file_is_a_clear_value_error(tmp_path: Path) -> None:
    page = tmp_path / "model.gguf"
    page.write_text("<!DOCTYPE html><html>Not Found</html>")
    with pytest.raises(ValueError, match="is not a GGUF file") as caught:
        ChatLlamaCpp(model_path=page)
    assert str(page) in str(caught.value)


def test_truncated_gguf_fails_on_load_with_a_clear_value_error(gguf_path: Path, tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.gguf"
    with gguf_path.open("rb") as source:
        truncated.write_bytes(source.read(100_000))
    model = ChatLlamaCpp(model_path=truncated)  # the magic is right, so only loading can tell
    with pytest.raises(ValueError, match="could not load") as caught:
        model.load()
    assert str(truncated) in str(caught.value)


def test_prompt_longer_than_context_names_n_ctx(gguf_path: Path) -> None:
    small = ChatLlamaCpp(model_path=gguf_path, n_ctx=256, max_tokens=8)
    with pytest.raises(LlamaCppError, match="raise n_ctx"):
        small.invoke("word " * 400)
    with pytest.raises(LlamaCppError, match="raise n_ctx"):  # raised on the consumer's thread too
        list(small.stream("word " * 400))


def test_concurrent_calls_both_answer(chat: ChatLlamaCpp) -> None:
    answers: dict[int, str] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def ask(n: int) -> None:
        try:
            start.wait()
            answers[n] = str(chat.invoke(f"Name a colour, number {n}.").content)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=ask, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors
    assert sorted(answers) == [0, 1]
    assert all(text.strip() for text in answers.values())


def test_abandoned_stream_frees_the_model(chat: ChatLlamaCpp) -> None:
    stream = chat.stream("Write a long story about a lighthouse.", max_tokens=200)
    next(stream)
    started = time.perf_counter()
    stream.close()  # llama.cpp stops at the next token instead of writing 200 more
    assert time.perf_counter() - started < 5
    assert str(chat.invoke("Say yes.").content).strip()
