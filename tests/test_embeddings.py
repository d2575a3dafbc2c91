"""The packaged MiniLM embeddings: a chunk embedded in a bulk call lands where the same text as a query does."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from agent.embeddings import EMBEDDING_DIM, bf16_native, default_embeddings, sentence_spans


@pytest.fixture
def passages(shared_data: Path) -> Callable[[int], list[str]]:
    """The first ``count`` mini-Wikipedia passages."""

    def first(count: int) -> list[str]:
        with (shared_data / "rag" / "mini_wikipedia" / "corpus.jsonl").open(encoding="utf-8") as lines:
            return [json.loads(line)["text"] for line, _ in zip(lines, range(count), strict=False)]

    return first


@pytest.fixture
def bf16_setting(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """``RAILGRAPH_EMBED_BF16`` read afresh by ``bf16_native`` (it caches the answer per process)."""
    bf16_native.cache_clear()
    yield monkeypatch
    monkeypatch.undo()
    bf16_native.cache_clear()


def test_bulk_vectors_match_one_text_vectors(passages: Callable[[int], list[str]]) -> None:
    texts = passages(24)
    bulk = default_embeddings().encode(texts)
    alone = np.stack([default_embeddings().encode([text])[0] for text in texts[:6]])
    assert bulk.shape == (24, 384) and bulk.dtype == np.float32
    assert np.allclose(np.linalg.norm(bulk, axis=1), 1.0, atol=1e-3)
    # bfloat16 (where the CPU has it) moves a vector by far less than any two passages differ.
    cosines = np.sum(bulk[:6] * alone, axis=1)
    assert cosines.min() > 0.999
    others = bulk[:6] @ bulk[6:12].T
    assert others.max() < cosines.min() - 0.05


def test_bf16_can_be_turned_off(bf16_setting: pytest.MonkeyPatch, passages: Callable[[int], list[str]]) -> None:
    texts = passages(4)
    alone = np.stack([default_embeddings().encode([text])[0] for text in texts])
    bf16_setting.setenv("RAILGRAPH_EMBED_BF16", "0")
    assert not bf16_native()
    # float32 throughout: a bulk call gives each text's own vector, up to padding noise.
    assert np.abs(default_embeddings().encode(texts) - alone).max() < 1e-5


def test_bulk_calls_use_bf16_where_the_cpu_has_it(
    bf16_setting: pytest.MonkeyPatch, passages: Callable[[int], list[str]]
) -> None:
    import torch

    bf16_setting.setenv("RAILGRAPH_EMBED_BF16", "1")
    capabilities = torch.cpu.get_capabilities()
    assert bf16_native() == bool(capabilities.get("avx512_bf16") or capabilities.get("amx_bf16"))
    if bf16_native():
        texts = passages(4)
        alone = np.stack([default_embeddings().encode([text])[0] for text in texts])
        # A bulk call ran in bfloat16: close to the float32 vectors, not equal to them.
        assert 1e-5 < np.abs(default_embeddings().encode(texts) - alone).max() < 0.05


def test_one_text_path_gives_sentence_transformers_vector(passages: Callable[[int], list[str]]) -> None:
    from agent.embeddings import _sentence_transformer

    # Short, long, over the 256-token window (truncated alike), empty, non-Latin.
    texts = [*passages(3), "hi", "", "word " * 400, "東京は日本の首都です。"]
    reference = _sentence_transformer().encode(texts, normalize_embeddings=True, batch_size=1)
    for text, expected in zip(texts, reference, strict=True):
        vector = default_embeddings().encode([text])[0]
        assert float(vector @ expected) > 0.99999, text[:40]
    # Exporting the transformer for the one-text path left the shared model as it was: not in training mode, where
    # dropout would make bulk vectors (read from the transformer directly) random.
    bulk = default_embeddings().encode(texts)
    assert np.abs(bulk - default_embeddings().encode(texts)).max() < 1e-6


def test_features_hold_the_sentence_embedding_and_ignore_the_texts_beside_them(
    passages: Callable[[int], list[str]],
) -> None:
    from agent.embeddings import FEATURES_DIM, LAYERS, SENTENCE_COLUMNS

    texts = [*passages(5), "hi", "word " * 400]
    together = default_embeddings().encode_features(texts)
    alone = np.concatenate([default_embeddings().encode_features([text]) for text in texts])
    assert together.shape == (len(texts), FEATURES_DIM) and together.dtype == np.float32
    assert default_embeddings().encode_features([]).shape == (0, FEATURES_DIM)
    # The classifier is trained on features computed in bulk and scores one prompt: they must be the same numbers.
    assert np.array_equal(together, alone)
    # Each of the layer means, the max and the [CLS] vector has unit length.
    assert np.allclose(np.linalg.norm(alone.reshape(len(texts), LAYERS + 2, -1), axis=2), 1.0, atol=1e-4)
    # The last layer's mean is the sentence embedding: from int8 weights, so near the float32 one, not equal to it,
    # and far nearer than two texts are to each other.
    sentence = default_embeddings().encode(texts)
    same = np.sum(alone[:, SENTENCE_COLUMNS] * sentence, axis=1)
    assert same.min() > 0.98 and same.max() < 1 - 1e-6
    assert (alone[:5, SENTENCE_COLUMNS] @ sentence[:5].T - np.eye(5)).max() < same.min() - 0.02


def test_sentence_vectors_come_from_the_same_pass_one_per_sentence() -> None:
    text = (
        "Iwan Roberts is a Welsh former footballer. He was born in Bangor in 1968. "
        "Norwich City signed him from Wolves for £850,000!"
    )
    vectors, sentences = default_embeddings().encode_with_sentences([text, "hi", ""])
    assert np.allclose(vectors, default_embeddings().encode([text, "hi", ""]), atol=1e-4)
    assert [matrix.shape for matrix in sentences] == [(3, EMBEDDING_DIM), (1, EMBEDDING_DIM), (0, EMBEDDING_DIM)]
    assert np.allclose(np.linalg.norm(sentences[0], axis=1), 1.0, atol=1e-4)
    # Each sentence pools its own tokens (three different vectors, none the whole text's), and still knows the text
    # around it: "He" of the second is Iwan Roberts, so it is nearer a question naming him than the sentence read
    # alone is.
    similar = sentences[0] @ sentences[0].T
    assert similar[np.triu_indices(3, 1)].max() < 0.9 and (sentences[0] @ vectors[0]).max() < 0.95
    alone = default_embeddings().encode([text[start:end] for start, end in sentence_spans(text)])
    question = default_embeddings().encode(["Where was Iwan Roberts born?"])[0]
    assert float(sentences[0][1] @ question) > float(alone[1] @ question) + 0.1
    assert default_embeddings().encode_with_sentences([])[1] == []


def test_the_exported_transformer_is_kept_and_a_damaged_copy_is_exported_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import agent.embeddings as embeddings

    model = embeddings._sentence_transformer()
    tokens = model.preprocess(["When was the club founded?"])
    inputs = {"input_ids": tokens["input_ids"].numpy(), "attention_mask": tokens["attention_mask"].numpy()}
    exported = embeddings.transformer_session(model, tmp_path).run(None, inputs)[0]
    [kept] = tmp_path.glob("*.onnx")

    def no_export(_: object) -> bytes:
        raise AssertionError("exported again although the cache holds the model")

    with monkeypatch.context() as patched:
        patched.setattr(embeddings, "_export_transformer", no_export)
        assert np.abs(embeddings.transformer_session(model, tmp_path).run(None, inputs)[0] - exported).max() == 0
    # A file cut short by a crash or a full disk: exported again and replaced, no error.
    kept.write_bytes(kept.read_bytes()[:1000])
    assert np.abs(embeddings.transformer_session(model, tmp_path).run(None, inputs)[0] - exported).max() == 0
    assert kept.stat().st_size > 1_000_000 and sorted(tmp_path.iterdir()) == [kept]
    # A cache folder that cannot be made (a file stands there): the model still runs.
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("x")
    assert np.abs(embeddings.transformer_session(model, blocked).run(None, inputs)[0] - exported).max() == 0
    # The int8 copy the rails run is made from the cached export (not exported again) and kept beside it, a quarter
    # of its size; it computes nearly the same layers.
    with monkeypatch.context() as patched:
        patched.setattr(embeddings, "_export_transformer", no_export)
        int8 = embeddings.transformer_session(model, tmp_path, int8=True).run(None, inputs)[0]
    [quantized] = set(tmp_path.glob("*.onnx")) - {kept}
    assert quantized.name == kept.name.replace(".onnx", "-int8.onnx")
    assert quantized.stat().st_size < kept.stat().st_size / 3
    cosine = np.sum(int8 * exported, axis=-1) / np.linalg.norm(int8, axis=-1) / np.linalg.norm(exported, axis=-1)
    assert cosine.min() > 0.95 and np.abs(int8 - exported).max() > 1e-3
    # Beside a damaged float32 file, the int8 copy is made from a fresh export, with no error.
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / kept.name).write_bytes(b"not a model")
    assert np.abs(embeddings.transformer_session(model, fresh, int8=True).run(None, inputs)[0] - int8).max() < 1e-5
