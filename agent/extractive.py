"""Extractive answering: no generative model, only verbatim sentences from the retrieved chunks, cited.

This is the honest fallback on a machine with no chat model: it cannot make anything up.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
from langchain_core.embeddings import Embeddings

# Sentence ends (with any footnote markers such as "[12]" after them) followed by space, or blank lines
# and list items; good enough for prose, lists and table rows.
_SENTENCE_BREAK = re.compile(r"(?<=[.!?])(?:\[\d+\])*\s+(?=[\"'(\[]?[A-Z0-9])|\n\s*\n|\n(?=\s*[-*•\d])")
_TERM = re.compile(r"[^\W_]+", re.UNICODE)
# Question words that say nothing about which sentence answers it.
_STOPWORD_TEXT = (
    "a an and are as at be by did do does for from has have how i in is it its me "
    "my of on or the their this to was were what when where which who whom whose why will with you your"
)
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())
# Below this score a sentence is noise rather than an answer (MiniLM cosine plus term overlap).
RELEVANCE_FLOOR = 0.45
# Sentences scoring under this share of the best one are left out rather than padding the answer.
KEEP_RATIO = 0.85
# How many sentences, picked by shared question words, are compared by embedding.
EMBEDDED_CANDIDATES = 16
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
    # Embedding every sentence of every chunk is most of a turn's time on a CPU; the sentences sharing
    # the most question words are the only ones that can win, so only they are embedded.
    overlaps = np.array([term_overlap(question, sentence) for _, sentence in candidates])
    shortlist = np.argsort(-overlaps, kind="stable")[:EMBEDDED_CANDIDATES]
    candidates = [candidates[i] for i in shortlist]
    vectors = np.asarray(embeddings.embed_documents([question] + [sentence for _, sentence in candidates]))
    # Embeddings alone favour short sentences that merely name the subject (a reference list entry);
    # the share of the question's content words a sentence contains rewards the one that answers it.
    scores = vectors[1:] @ vectors[0] + 0.5 * overlaps[shortlist]
    order = np.argsort(-scores)[:limit]
    best = float(scores[order[0]])
    return [
        Extract(n=candidates[i][0], sentence=candidates[i][1], score=float(scores[i]))
        for i in order
        if scores[i] >= max(RELEVANCE_FLOOR, KEEP_RATIO * best)
    ]


def _terms(text: str) -> set[str]:
    # A five-letter prefix is a cheap stemmer: "founded"/"founding", "caps"/"cap" meet.
    return {word[:5] for word in _TERM.findall(text.lower()) if word not in _STOPWORDS}


def term_overlap(question: str, sentence: str) -> float:
    """Share of the question's content words (crudely stemmed) found in ``sentence``."""
    wanted = _terms(question)
    return len(wanted & _terms(sentence)) / len(wanted) if wanted else 0.0


def compose_answer(extracts: list[Extract]) -> str:
    """The extracts as one answer, each sentence quoted verbatim and followed by its citation."""
    if not extracts:
        return NOT_FOUND
    return " ".join(f"\u201c{extract.sentence}\u201d [{extract.n}]" for extract in extracts)
