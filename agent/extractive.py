"""Extractive answering: no generative model, only verbatim sentences from the retrieved chunks, cited.

This is the honest fallback on a machine with no chat model: it cannot make anything up.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
from langchain_core.embeddings import Embeddings

# Sentence ends followed by space, or line breaks; good enough for prose, lists and table rows.
_SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])|\n\s*\n|\n(?=\s*[-*•\d])")
# Below this cosine similarity a sentence is noise rather than an answer (MiniLM, normalised vectors).
RELEVANCE_FLOOR = 0.3
NOT_FOUND = "I could not find an answer to that in the indexed documents."


@dataclass(frozen=True)
class Extract:
    """One quoted sentence and the number of the source it comes from."""

    n: int
    sentence: str
    score: float


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text``, stripped, dropping fragments too short to answer anything."""
    parts = (" ".join(part.split()) for part in _SENTENCE_BREAK.split(text))
    return [part for part in parts if len(part) >= 20]


def best_sentences(
    question: str, numbered_texts: list[tuple[int, str]], embeddings: Embeddings, *, limit: int = 3
) -> list[Extract]:
    """The ``limit`` sentences most similar to ``question``, above the relevance floor, best first."""
    candidates = [(n, sentence) for n, text in numbered_texts for sentence in split_sentences(text)]
    if not candidates:
        return []
    vectors = np.asarray(embeddings.embed_documents([question] + [sentence for _, sentence in candidates]))
    scores = vectors[1:] @ vectors[0]
    order = np.argsort(-scores)[:limit]
    return [
        Extract(n=candidates[i][0], sentence=candidates[i][1], score=float(scores[i]))
        for i in order
        if scores[i] >= RELEVANCE_FLOOR
    ]


def compose_answer(extracts: list[Extract]) -> str:
    """The extracts as one answer, each sentence quoted verbatim and followed by its citation."""
    if not extracts:
        return NOT_FOUND
    return " ".join(f"\u201c{extract.sentence}\u201d [{extract.n}]" for extract in extracts)
