"""Retrieval evaluation: ingest a JSONL corpus, ask its questions, score recall@k, MRR and extractive answers.

This is what ``railgraph eval retrieval`` runs (the JSON contract is in DESIGN.md). Definitions:

- a retrieved chunk is a *hit* when its ``doc_id`` is one of the question's ``gold_passage_ids``;
- ``recall@n``: share of questions with a hit among the first ``n`` chunks returned (chunks, not distinct
  passages: two chunks of one passage take two places);
- ``mrr``: mean over questions of 1 / rank of the first hit within the first ``k`` chunks (0 when none);
- ``answer_in_context``: share of questions where a gold answer, normalised, occurs in the ``k`` chunks' text;
- ``exact_match`` / ``f1``: the extractive answerer (``agent.extractive.best_sentences``) picks sentences from
  the ``k`` chunks; each picked sentence is scored against each gold answer with SQuAD's normalisation
  (lowercase, no punctuation, no articles) and the best pair counts;
- ``latency_ms``: p50 / p95 wall time of one ``ChunkStore.search`` call (query embedding included).
"""

from __future__ import annotations

import json
import re
import string
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from langchain_core.documents import Document

from agent.extractive import best_sentences
from agent.store import ChunkStore, SearchMode, SearchOptions
from loaders import split_documents

INGEST_BATCH = 128
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class Question:
    """One evaluation question and what counts as finding it."""

    qid: str
    question: str
    answers: list[str]
    gold_passage_ids: list[str]


def read_jsonl(path: Path, required: tuple[str, ...]) -> Iterator[dict[str, Any]]:
    """Rows of a JSONL file; a bad line or a missing field is a ``ValueError`` naming the file and line."""
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{number}: not valid JSON ({error.msg})") from error
            missing = [name for name in required if name not in row]
            if missing:
                raise ValueError(f"{path}:{number}: missing field(s) {', '.join(missing)}; expected {required}")
            yield row


def read_questions(path: Path) -> list[Question]:
    """The question rows ``{qid, question, answers[], gold_passage_ids[]}`` of ``path``."""
    return [
        Question(str(row["qid"]), row["question"], list(row["answers"]), [str(i) for i in row["gold_passage_ids"]])
        for row in read_jsonl(path, ("qid", "question", "answers", "gold_passage_ids"))
    ]


def corpus_documents(path: Path) -> list[Document]:
    """The corpus rows ``{id, title, text}`` as Documents whose ``doc_id`` is the row id, title kept."""
    return [
        Document(
            page_content=row["text"],
            metadata={"doc_id": str(row["id"]), "source": str(row["id"]), "title": row["title"] or None},
        )
        for row in read_jsonl(path, ("id", "title", "text"))
        if row["text"].strip()
    ]


def ingest_corpus(
    store: ChunkStore,
    documents: list[Document],
    *,
    chunk_size: int,
    chunk_overlap: int,
    progress: Progress | None = None,
) -> int:
    """Split and add the corpus documents not yet in ``store`` (so a given ``--db`` is reused); chunks added."""
    present = {row[0] for row in store.db.query("SELECT DISTINCT doc_id FROM chunks")}
    missing = [document for document in documents if document.metadata["doc_id"] not in present]
    chunks = split_documents(missing, chunk_size=chunk_size, chunk_overlap=chunk_overlap)
    for start in range(0, len(chunks), INGEST_BATCH):
        batch = chunks[start : start + INGEST_BATCH]
        store.add_texts(
            [chunk.page_content for chunk in batch],
            [chunk.metadata for chunk in batch],
            ids=[f"{chunk.metadata['doc_id']}#{chunk.metadata['chunk']}" for chunk in batch],
        )
        if progress:
            progress("ingesting", start + len(batch), len(chunks))
    return len(chunks)


def normalize_answer(text: str) -> str:
    """SQuAD's answer normalisation: lowercase, no punctuation, no articles, single spaces."""
    return " ".join(_ARTICLES.sub(" ", text.lower().translate(_PUNCTUATION)).split())


def f1_score(prediction: str, gold: str) -> float:
    """SQuAD token F1 between a prediction and one gold answer."""
    predicted, wanted = normalize_answer(prediction).split(), normalize_answer(gold).split()
    common = sum((Counter(predicted) & Counter(wanted)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(wanted)
    return 2 * precision * recall / (precision + recall)


def evaluate_retrieval(
    store: ChunkStore,
    questions: list[Question],
    *,
    k: int,
    mode: SearchMode,
    options: SearchOptions | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Ask every question of the store and score it; the ``eval retrieval --json`` object of DESIGN.md."""
    hits_at_1 = hits_at_k = answered = 0
    reciprocal_ranks: list[float] = []
    latencies: list[float] = []
    exact: list[float] = []
    f1: list[float] = []
    for done, question in enumerate(questions, start=1):
        started = time.perf_counter()
        results = store.search(question.question, k, mode=mode, options=options)
        latencies.append((time.perf_counter() - started) * 1000)
        gold = set(question.gold_passage_ids)
        ranks = [rank for rank, (document, _) in enumerate(results, start=1) if document.metadata["doc_id"] in gold]
        first = ranks[0] if ranks else None
        hits_at_1 += first == 1
        hits_at_k += first is not None
        reciprocal_ranks.append(1.0 / first if first else 0.0)
        context = normalize_answer(" ".join(document.page_content for document, _ in results))
        answered += any(normalize_answer(answer) in context for answer in question.answers if answer.strip())
        extracts = best_sentences(
            question.question,
            [(n, document.page_content) for n, (document, _) in enumerate(results, start=1)],
            store.embeddings,
        )
        sentences = [extract.sentence for extract in extracts] or [""]
        exact.append(
            max(float(normalize_answer(s) == normalize_answer(a)) for s in sentences for a in question.answers)
        )
        f1.append(max(f1_score(s, a) for s in sentences for a in question.answers))
        if progress:
            progress(f"{mode} retrieval", done, len(questions))
    count = len(questions) or 1
    return {
        "mode": mode,
        "k": k,
        "questions": len(questions),
        "recall@1": hits_at_1 / count,
        f"recall@{k}": hits_at_k / count,
        "mrr": float(np.mean(reciprocal_ranks)) if reciprocal_ranks else 0.0,
        "answer_in_context": answered / count,
        "exact_match": float(np.mean(exact)) if exact else 0.0,
        "f1": float(np.mean(f1)) if f1 else 0.0,
        "latency_ms": {
            "p50": float(np.percentile(latencies, 50)) if latencies else 0.0,
            "p95": float(np.percentile(latencies, 95)) if latencies else 0.0,
        },
    }
