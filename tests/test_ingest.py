"""Incremental ingest into the real SQLite store through LangChain's indexing API."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from agent.db import Database
from agent.embeddings import default_embeddings
from agent.store import ChunkStore
from loaders.ingest import ingest, record_manager


@pytest.fixture
def store(tmp_path: Path) -> ChunkStore:
    return ChunkStore(Database(tmp_path / "railgraph.db"), default_embeddings())


def test_reingest_of_unchanged_files_adds_and_deletes_nothing(store: ChunkStore, documents_dir: Path) -> None:
    # csv-with-long-lines.csv gives 150 chunks: more than LangChain's default indexing batch of 100.
    files = [
        documents_dir / "unstructured_example_docs" / name for name in ("csv-with-long-lines.csv", "fake-text.txt")
    ]
    records = record_manager(store.db.path)
    first = ingest(files, store, records)
    assert first.added == first.chunks > 100 and store.count() == first.added
    second = ingest(files, store, records)
    assert (second.added, second.deleted, second.skipped) == (0, 0, first.added)
    assert store.count() == first.added


def test_a_changed_file_replaces_exactly_its_old_chunks(store: ChunkStore, tmp_path: Path, documents_dir: Path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    shutil.copy(documents_dir / "unstructured_example_docs" / "norwich-city.txt", folder / "norwich.txt")
    note = folder / "note.txt"
    note.write_text("The office moved to Oslo in 2021.\n\nThe canteen opens at eight.\n")
    records = record_manager(store.db.path)
    before = ingest([folder], store, records)
    norwich_chunks = before.chunks - 1

    note.write_text("The office moved to Bergen in 2023.\n")
    after = ingest([folder], store, records)
    assert (after.added, after.deleted, after.skipped) == (1, 1, norwich_chunks)
    texts = [document.page_content for document, _ in store.search("Where did the office move?", 3)]
    assert any("Bergen" in text for text in texts) and not any("Oslo" in text for text in texts)


def test_one_unreadable_file_does_not_stop_the_others(store: ChunkStore, tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "good.md").write_text("# Notes\n\nThe launch date is the fourth of May.\n")
    (folder / "empty.txt").write_bytes(b"")
    (folder / "broken.pdf").write_bytes(b"%PDF-1.7\n garbage")
    report = ingest([folder], store, record_manager(store.db.path))
    assert report.added == 1
    assert sorted(Path(failure["source"]).name for failure in report.failed) == ["broken.pdf", "empty.txt"]
