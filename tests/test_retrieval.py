"""Hybrid retrieval on the real store and the real MiniLM: fusion weights, filters, duplicates, relevance floor."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent import Settings, build_agent
from agent.db import Database
from agent.embeddings import default_embeddings
from agent.extractive import NOT_FOUND
from agent.fusion import fuse_scores
from agent.services import services_for
from agent.store import ChunkStore, SearchOptions, fts_query
from agent.turns import ask

RHINE = "The Rhine flows through Switzerland, Germany and the Netherlands into the North Sea."
TEXTS = [
    # Means the query without sharing its words: the vector side's favourite.
    ("cats.md", "md", ["pets"], "Cats are small domesticated felines that people keep as pets at home."),
    # Shares the query's rare words but is about tax forms: the keyword side's favourite.
    ("tax.txt", "txt", ["tax"], "Form 1040: list every kitten you claim and the companion schedule in tax filings."),
    ("rhine.md", "md", ["rivers"], RHINE),
    ("rhine-copy.txt", "txt", ["rivers"], RHINE),
    ("danube.txt", "txt", ["rivers"], "The Danube is the second-longest river in Europe; it ends in the Black Sea."),
]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> ChunkStore:
    chunks = ChunkStore(Database(tmp_path_factory.mktemp("store") / "chunks.db"), default_embeddings())
    chunks.add_texts(
        [text for *_, text in TEXTS],
        [{"source": source, "doc_id": source, "type": kind, "tags": tags} for source, kind, tags, _ in TEXTS],
    )
    return chunks


def doc_ids(results: list) -> list[str]:
    return [document.metadata["doc_id"] for document, _ in results]


@pytest.mark.parametrize("fusion", ["convex", "rrf"])
def test_fusion_weights_decide_which_side_wins(store: ChunkStore, fusion: str) -> None:
    query = "kitten companion animals"
    vector_only = store.search(query, 2, options=SearchOptions(fusion=fusion, keyword_weight=0.0))
    keyword_heavy = store.search(query, 2, options=SearchOptions(fusion=fusion, vector_weight=0.2))
    assert doc_ids(vector_only)[0] == "cats.md"
    assert doc_ids(keyword_heavy)[0] == "tax.txt"
    # Each hit says where it ranked on both sides of the fusion.
    cats = next(document for document, _ in keyword_heavy + vector_only if document.metadata["doc_id"] == "cats.md")
    assert cats.metadata["vector_rank"] == 1 and cats.metadata["keyword_rank"] is None


def test_filters_are_applied_inside_the_query(store: ChunkStore) -> None:
    query = "Which rivers reach the sea in Europe?"
    assert set(doc_ids(store.search(query, 5, filters={"type": "md"}))) <= {"cats.md", "rhine.md"}
    assert doc_ids(store.search(query, 5, filters={"source": "danube.txt"})) == ["danube.txt"]
    assert set(doc_ids(store.search(query, 5, mode="keyword", filters={"tags": ["tax", "pets"]}))) <= {
        "cats.md",
        "tax.txt",
    }
    with pytest.raises(ValueError, match="unknown search filter 'colour'"):
        store.search(query, 5, filters={"colour": "red"})


def test_copies_of_one_passage_fill_one_place(store: ChunkStore) -> None:
    query = "Which rivers flow into the North Sea?"
    kept = [document.page_content for document, _ in store.search(query, 3)]
    assert kept.count(RHINE) == 1 and len(kept) == len(set(kept)) == 3
    every = [
        document.page_content for document, _ in store.search(query, 3, options=SearchOptions(duplicate_similarity=1.0))
    ]
    assert every.count(RHINE) == 2


def test_convex_fusion_keeps_the_margins() -> None:
    # The keyword side's clear winner beats the vector side's near-tie, at equal weights.
    fused = fuse_scores([{"a": 0.50, "b": 0.49, "c": 0.10}, {"b": 9.0, "c": 1.0, "a": 0.0}])
    assert list(fused) == ["b", "a", "c"] and fused["b"] == pytest.approx(0.5 * 0.975 + 0.5)


def test_stopwords_do_not_reach_the_full_text_query() -> None:
    assert fts_query("Who was the general at the Battle of Antietam?") == '"general" OR "battle" OR "antietam"'
    assert fts_query("who was the") == '"who" OR "was" OR "the"'


def test_unrelated_question_finds_nothing_and_the_agent_says_so(tmp_path: Path, store: ChunkStore) -> None:
    assert store.search("quantum chromodynamics of gluon plasma", 5) == []
    settings = Settings(db=f"sqlite:///{tmp_path / 'agent.db'}", llm="extractive")
    services_for(settings).store.add_texts([text for *_, text in TEXTS], [{"source": s} for s, *_ in TEXTS])
    result = ask(build_agent(settings), "What is the rest mass of a charm quark in quantum chromodynamics?")
    assert result["status"] == "answered"
    assert result["answer"] == NOT_FOUND and result["sources"] == []
