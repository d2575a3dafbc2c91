"""Incremental ingest: files -> LangChain loaders -> chunks -> the chunk store, through LangChain's indexing API.

The record manager (LangChain's ``SQLRecordManager``, in the same database) remembers a hash of every chunk, so
re-ingesting an unchanged file adds nothing and a changed file replaces exactly its old chunks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from langchain_classic.indexes import SQLRecordManager
from langchain_core.indexing import index
from langchain_core.vectorstores import VectorStore
from sqlalchemy import create_engine
from sqlalchemy.pool import StaticPool

from agent.db import connect
from loaders import LoadError, iter_files, load_file, split_documents

RECORD_NAMESPACE = "railgraph/chunks"


@dataclass
class IngestReport:
    """What an ingest did; ``to_json()`` is the ``ingest --json`` contract of DESIGN.md."""

    added: int = 0
    updated: int = 0
    skipped: int = 0
    deleted: int = 0
    failed: list[dict[str, str]] = field(default_factory=list)
    files: int = 0
    chunks: int = 0

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        return {key: data[key] for key in ("added", "updated", "skipped", "deleted", "failed")}


def record_manager(path: Path) -> SQLRecordManager:
    """LangChain's record manager in the railgraph SQLite file (its tables are created when missing)."""
    # SQLAlchemy connects through sqlean, like the rest of railgraph (see agent.db.connect for why).
    engine = create_engine("sqlite://", creator=lambda: connect(path), poolclass=StaticPool)
    manager = SQLRecordManager(RECORD_NAMESPACE, engine=engine)
    manager.create_schema()
    return manager


def ingest(
    paths: Sequence[Path],
    store: VectorStore,
    records: SQLRecordManager,
    *,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    pdf_password: str | None = None,
    chunk_size: int = 1000,
    chunk_overlap: int = 150,
    on_file: Callable[[Path, IngestReport], None] | None = None,
) -> IngestReport:
    """Index every readable file under ``paths``; a file that cannot be read is reported, never fatal.

    Each file is indexed on its own with ``cleanup="incremental"``, so its chunks are replaced as a unit.
    """
    report = IngestReport()
    for path in iter_files(paths, include=include, exclude=exclude):
        report.files += 1
        try:
            documents = load_file(path, pdf_password=pdf_password)
        except LoadError as error:
            report.failed.append({"source": error.source, "error": str(error)})
        else:
            chunks = split_documents(documents, chunk_size=chunk_size, chunk_overlap=chunk_overlap)
            # One batch per file: with incremental cleanup, a file split over several batches would have
            # its later chunks deleted after the first batch and added again on every re-ingest.
            result = index(
                chunks,
                records,
                store,
                cleanup="incremental",
                source_id_key="source",
                key_encoder="sha256",
                batch_size=max(len(chunks), 1),
            )
            report.added += result["num_added"]
            report.updated += result["num_updated"]
            report.skipped += result["num_skipped"]
            report.deleted += result["num_deleted"]
            report.chunks += len(chunks)
        if on_file is not None:
            on_file(path, report)
    return report
