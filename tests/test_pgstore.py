"""The Postgres chunk store (pgvector + tsvector) against a real PostgreSQL 18 server: no mocks."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import pytest
from langchain_classic.indexes import SQLRecordManager
from sqlalchemy import create_engine

from agent.db import Database
from agent.embeddings import default_embeddings
from agent.pgstore import PgChunkStore, tsquery_text
from agent.store import ChunkStore
from loaders.ingest import RECORD_NAMESPACE, ingest

CORPUS = [
    "A sourdough starter is a culture of wild yeast and lactic acid bacteria; feed it flour and water daily, keep it"
    " warm, and bake when it doubles. The recipe came from Pieter Haverkamp.",
    "Haverford College is a liberal arts college in Pennsylvania.",
    "The Hamburg harbour is one of the busiest ports in Europe.",
    "Camping near the river requires a permit from the park office.",
    "Van Kampen wrote a textbook on stochastic processes.",
    "The Haverhill line runs trains from Boston to New Hampshire.",
    "Dutch surnames often begin with van or de.",
    "The cat curled up on the warm windowsill and purred all afternoon.",
    "Glaciers carve U-shaped valleys as they slowly move downhill.",
    "Interest rates set by the central bank influence mortgage costs.",
    "The Treaty of Westphalia ended the Thirty Years' War in 1648.",
    "Photosynthesis turns sunlight, water and carbon dioxide into sugar.",
]
IDS = [f"chunk-{n}" for n in range(len(CORPUS))]
METADATAS = [{"source": f"notes/{n}.txt", "page": n % 3, "start_index": 0, "end_index": 10} for n in range(len(CORPUS))]


@pytest.fixture
def pg_url(pg_server: Any) -> Iterator[str]:
    """A fresh, empty database on the session's server, dropped afterwards, so tests never see each other's rows."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server.get_uri(), autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    yield pg_server.get_uri(database=name)
    with psycopg.connect(pg_server.get_uri(), autocommit=True) as admin:
        admin.execute(f"DROP DATABASE {name} WITH (FORCE)")


@pytest.fixture
def store(pg_url: str) -> Iterator[PgChunkStore]:
    store = PgChunkStore(pg_url, default_embeddings())
    yield store
    store.close()


@pytest.fixture
def filled(store: PgChunkStore) -> PgChunkStore:
    store.add_texts(CORPUS, METADATAS, ids=IDS)
    return store


def test_add_search_replace_delete_round_trip(store: PgChunkStore) -> None:
    metadatas = [{**metadata, "title": "Notes", "tags": ["a"]} for metadata in METADATAS]
    assert store.add_texts(CORPUS, metadatas, ids=IDS) == IDS
    assert store.count() == len(CORPUS)

    (document, score), *_ = store.search("Which treaty ended the Thirty Years' War?", 3)
    assert document.id == "chunk-10" and score > 0
    assert document.metadata["doc_id"] == document.metadata["source"] == "notes/10.txt"
    assert (document.metadata["page"], document.metadata["title"], document.metadata["tags"]) == (1, "Notes", ["a"])
    assert document.metadata["vector_rank"] == document.metadata["keyword_rank"] == 1

    # Adding an existing id replaces that chunk, text and vector both.
    store.add_texts(["Penguins huddle together to survive the Antarctic winter."], [METADATAS[10]], ids=["chunk-10"])
    assert store.count() == len(CORPUS)
    assert store.get_by_ids(["chunk-10"])[0].page_content.startswith("Penguins")
    assert store.search("emperor penguins in the cold", 1, mode="vector")[0][0].id == "chunk-10"
    assert not store.search("Westphalia", 5, mode="keyword")

    assert [document.id for document in store.get_by_ids(["chunk-3", "missing", "chunk-1"])] == ["chunk-3", "chunk-1"]
    store.delete(["chunk-3", "chunk-1"])
    assert store.count() == len(CORPUS) - 2 and store.get_by_ids(["chunk-3"]) == []
    store.delete()
    assert store.count() == 0 and store.search("cat", 3) == []


def test_hybrid_finds_by_keyword_what_vector_misses(filled: PgChunkStore) -> None:
    # Only the sourdough chunk names Pieter Haverkamp, in passing: its vector is about bread, so vector search
    # ranks look-alike names (Haverford, Van Kampen, Dutch surnames) first.
    query = "Pieter Haverkamp"
    assert "chunk-0" not in [document.id for document, _ in filled.search(query, 3, mode="vector")]
    assert [document.id for document, _ in filled.search(query, 3, mode="keyword")] == ["chunk-0"]
    best, *_ = filled.search(query, 3)
    assert best[0].id == "chunk-0" and best[0].metadata["keyword_rank"] == 1


def test_hybrid_finds_by_meaning_what_keywords_miss(filled: PgChunkStore) -> None:
    query = "a feline dozing in the sun"  # shares no word (after stemming) with the cat chunk
    assert filled.search(query, 3, mode="keyword") == []
    best, *_ = filled.search(query, 3)
    assert best[0].id == "chunk-7"
    assert (best[0].metadata["vector_rank"], best[0].metadata["keyword_rank"]) == (1, None)


def test_user_text_is_never_query_syntax(filled: PgChunkStore) -> None:
    assert tsquery_text(["o'brien", "a\\b"]) == "'o''brien' | 'a\\\\b'"
    for query in ['"war" -treaty', "war & !treaty | :*", "war <-> (treaty", "o'brien\\", "'", "the of", "x"]:
        filled.search(query, 3, mode="keyword")  # must not raise a tsquery syntax error
    assert filled.search("the of and", 3, mode="keyword") == []  # stop words only: nothing to match
    assert [document.id for document, _ in filled.search('-"Westphalia"', 3, mode="keyword")] == ["chunk-10"]


def test_keyword_ranking_prefers_chunks_sharing_more_words(filled: PgChunkStore) -> None:
    # Three words, so chunks sharing two of them are ranked first; the one sharing all three comes out on top,
    # and with fewer than `depth` such chunks the single-word matches still follow.
    ranked = [document.id for document, _ in filled.search("war treaty photosynthesis", 5, mode="keyword")]
    assert ranked[0] == "chunk-10" and "chunk-11" in ranked


def test_langchain_index_reingest_adds_nothing(store: PgChunkStore, pg_server: Any, tmp_path: Path) -> None:
    """``loaders.ingest`` (LangChain ``index()`` + ``SQLRecordManager``), with the records on the same Postgres."""
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "office.txt").write_text("The office moved to Oslo in 2021.\n\nThe canteen opens at eight.\n")
    (folder / "bread.md").write_text("# Bread\n\nA sourdough starter needs flour and water every day.\n")
    # The store's database, in SQLAlchemy's spelling: one URL for chunks and records alike.
    engine = create_engine(store.url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        records = SQLRecordManager(RECORD_NAMESPACE, engine=engine)
        records.create_schema()
        first = ingest([folder], store, records)
        assert first.added == first.chunks == store.count() > 0 and not first.failed
        second = ingest([folder], store, records)
        assert (second.added, second.updated, second.deleted, second.skipped) == (0, 0, 0, first.added)

        (folder / "office.txt").write_text("The office moved to Bergen in 2023.\n")
        third = ingest([folder], store, records)
        assert (third.added, third.deleted) == (1, 1) and store.count() == first.added
        texts = [document.page_content for document, _ in store.search("Where did the office move?", 2)]
        assert "Bergen" in texts[0] and not any("Oslo" in text for text in texts)
    finally:
        engine.dispose()


def test_vector_mode_agrees_with_the_sqlite_store(filled: PgChunkStore, tmp_path: Path) -> None:
    sqlite_store = ChunkStore(Database(tmp_path / "railgraph.db"), default_embeddings())
    sqlite_store.add_texts(CORPUS, METADATAS, ids=IDS)
    for query in ["bread baking with wild yeast", "a kitten napping", "ice shaping mountains", "mortgage prices"]:
        pg_best = filled.search(query, 3, mode="vector")[0][0]
        sqlite_best = sqlite_store.search(query, 3, mode="vector")[0][0]
        assert pg_best.id == sqlite_best.id, query
        assert pg_best.metadata["source"] == sqlite_best.metadata["source"]
    sqlite_store.db.close()


def test_one_store_serves_many_threads(filled: PgChunkStore) -> None:
    queries = ["Pieter Haverkamp", "a feline dozing in the sun", "Which treaty ended the war?"] * 8
    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(lambda query: filled.search(query, 1)[0][0].id, queries))
    assert results == ["chunk-0", "chunk-7", "chunk-10"] * 8


def test_an_existing_table_of_another_dimension_is_refused(store: PgChunkStore) -> None:
    with pytest.raises(ValueError, match="384-d vectors"):
        PgChunkStore(store.url, default_embeddings(), dimensions=768)
