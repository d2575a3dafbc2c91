"""Hybrid retrieval on the real store and the real MiniLM: fusion weights, filters, duplicates, relevance floor."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agent import Settings, build_agent
from agent.db import MIGRATIONS, Database
from agent.embeddings import default_embeddings
from agent.evaluation import corpus_documents, ingest_corpus, read_questions
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


@pytest.fixture(scope="module")
def xquad(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> tuple[ChunkStore, list[str]]:
    """All XQuAD paragraphs, split as an ingest splits them, and every other one of its distinct dev questions."""
    settings = Settings()
    source = shared_data / "rag" / "xquad"
    chunks = ChunkStore(Database(tmp_path_factory.mktemp("xquad") / "chunks.db"), default_embeddings())
    ingest_corpus(
        chunks,
        corpus_documents(source / "corpus.jsonl"),
        chunk_size=settings.chunk_size,
        chunk_overlap=settings.chunk_overlap,
    )
    questions = [question.question for question in read_questions(source / "questions_dev.jsonl")]
    return chunks, list(dict.fromkeys(questions))[::2]


def exact_nearest(store: ChunkStore, query: str, k: int) -> list[tuple[str, float]]:
    """Ids and cosine distances of the ``k`` nearest chunks, by a full scan of every float vector."""
    vector = np.asarray(store.embeddings.embed_query(query), dtype=np.float32).tobytes()
    rows = store.db.query(
        "SELECT c.id, vec_distance_cosine(q.embedding, ?) AS distance FROM chunks_quantized q"
        " JOIN chunks c ON c.rowid = q.rowid ORDER BY distance LIMIT ?",
        (vector, k),
    )
    return [(row[0], row[1]) for row in rows]


def test_quantised_vector_search_finds_what_exact_search_finds(
    xquad: tuple[ChunkStore, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    store, questions = xquad
    every = SearchOptions(duplicate_similarity=1.0, relevance_floor=0.0)

    def agreement() -> float:
        same = 0
        for question in questions:
            found = [
                (document.id, document.metadata["vector_distance"])
                for document, _ in store.search(question, 5, mode="vector", options=every)
            ]
            exact = exact_nearest(store, question, 5)
            if [chunk_id for chunk_id, _ in found] == [chunk_id for chunk_id, _ in exact]:
                # Ranked and scored by exact cosine distance, not by the Hamming distance that chose them.
                assert [distance for _, distance in found] == pytest.approx([distance for _, distance in exact])
                same += 1
        return same / len(questions)

    # A store with fewer chunks than the candidates it draws is searched exactly.
    assert agreement() == 1.0
    # With the candidates cut to 80 of the store's few hundred chunks, the sign bits really choose.
    monkeypatch.setattr("agent.store._CANDIDATE_FACTOR", 4)
    assert store.count() > 4 * 20
    assert agreement() >= 0.97


def table_counts(db: Database) -> dict[str, int]:
    """Rows in each table that holds one row per chunk."""
    tables = ("chunks", "chunks_quantized", "chunks_fts")
    return {table: db.query(f"SELECT count(*) FROM {table}")[0][0] for table in tables}


def test_deleting_and_re_adding_chunks_keeps_every_table_in_step(tmp_path: Path) -> None:
    store = ChunkStore(Database(tmp_path / "chunks.db"), default_embeddings())
    store.add_texts(
        [text for *_, text in TEXTS], [{"source": source} for source, *_ in TEXTS], ids=[source for source, *_ in TEXTS]
    )
    question = "Which river ends in the Black Sea?"
    assert doc_ids(store.search(question, 1, mode="vector")) == ["danube.txt"]
    # The Danube has the highest rowid, which SQLite hands to the next chunk added: a leftover row of the deleted
    # chunk in any table would collide with it or be returned as the new chunk.
    store.delete(["danube.txt"])
    assert "danube.txt" not in doc_ids(store.search(question, 5, mode="vector"))
    store.add_texts(
        ["The Volga is the longest river in Europe and flows into the Caspian Sea."],
        [{"source": "volga.md"}],
        ids=["volga.md"],
    )
    store.add_texts([RHINE.replace("North Sea", "North Sea at Rotterdam")], [{"source": "rhine.md"}], ids=["rhine.md"])
    assert doc_ids(store.search("Which river flows into the Caspian Sea?", 1, mode="vector")) == ["volga.md"]
    assert set(table_counts(store.db).values()) == {len(TEXTS)}
    store.delete()
    assert set(table_counts(store.db).values()) == {0}
    assert store.search(question, 5, mode="vector") == []


def test_vector_search_sees_what_another_connection_adds_and_deletes(tmp_path: Path) -> None:
    # The reader keeps every chunk's sign bits in memory between searches; a write through another connection (an
    # ingest in another process) must reach its next search, even one that changes no count of rows.
    embeddings = default_embeddings()
    reader = ChunkStore(Database(tmp_path / "chunks.db"), embeddings)
    writer = ChunkStore(Database(tmp_path / "chunks.db"), embeddings)
    others = [(source, text) for source, *_, text in TEXTS if source != "danube.txt"]
    writer.add_texts(
        [text for _, text in others], [{"source": source} for source, _ in others], ids=[s for s, _ in others]
    )
    question = "Which river ends in the Black Sea?"
    assert "danube.txt" not in doc_ids(reader.search(question, 5, mode="vector"))
    writer.add_texts([TEXTS[-1][-1]], [{"source": "danube.txt"}], ids=["danube.txt"])
    assert doc_ids(reader.search(question, 1, mode="vector")) == ["danube.txt"]
    # The same number of chunks, one replaced: the Danube's rowid goes to the Volga.
    writer.delete(["danube.txt"])
    volga = "The Volga is the longest river in Europe and flows into the Caspian Sea."
    writer.add_texts([volga], [{"source": "volga.md"}], ids=["volga.md"])
    assert doc_ids(reader.search("Which river flows into the Caspian Sea?", 1, mode="vector")) == ["volga.md"]
    assert "danube.txt" not in doc_ids(reader.search(question, 5, mode="vector"))


def test_a_database_of_the_previous_schema_upgrades_with_its_vectors_searchable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    embeddings = default_embeddings()
    texts = [text for *_, text in TEXTS]
    # A file as the release before quantised search left it: chunks written the way its add_texts wrote them.
    previous = next(number for number, script in enumerate(MIGRATIONS) if "chunks_quantized" in script)
    monkeypatch.setattr("agent.db.MIGRATIONS", MIGRATIONS[:previous])
    old = Database(tmp_path / "chunks.db")
    with old.transaction() as conn:
        for rowid, ((source, *_), text, vector) in enumerate(
            zip(TEXTS, texts, embeddings.embed_documents(texts), strict=True), start=1
        ):
            conn.execute(
                "INSERT INTO chunks (rowid, id, doc_id, source, content) VALUES (?, ?, ?, ?, ?)",
                (rowid, source, source, source, text),
            )
            conn.execute(
                "INSERT INTO chunks_vec (rowid, embedding) VALUES (?, ?)",
                (rowid, np.asarray(vector, dtype=np.float32).tobytes()),
            )
            conn.execute("INSERT INTO chunks_fts (rowid, title, content) VALUES (?, '', ?)", (rowid, text))
    old.close()
    monkeypatch.undo()

    store = ChunkStore(Database(tmp_path / "chunks.db"), embeddings)
    assert store.db.query("PRAGMA user_version")[0][0] == len(MIGRATIONS)
    assert set(table_counts(store.db).values()) == {len(TEXTS)}
    question = "Which river ends in the Black Sea?"
    (best, _), *_ = store.search(question, 5, mode="vector")
    assert best.metadata["doc_id"] == "danube.txt"
    # The same chunks at the same distances as an exact search (the two Rhine copies tie, in either order).
    found = store.search(question, 5, mode="vector", options=SearchOptions(duplicate_similarity=1.0))
    exact = exact_nearest(store, question, 5)
    assert {document.id for document, _ in found} == {chunk_id for chunk_id, _ in exact}
    assert [document.metadata["vector_distance"] for document, _ in found] == pytest.approx([d for _, d in exact])
