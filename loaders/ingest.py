"""Incremental, crash-safe ingest: source units -> Documents -> chunks -> the chunk store.

A chunk's id is a hash of its text and metadata, and a record manager remembers which ids each source unit (a
file, a page, a row; see ``loaders.sources``) holds. So:

- chunks already recorded for their unit are neither embedded nor written again, and a changed unit gains its
  new chunks and loses exactly its old ones;
- the new chunks of several units are embedded in one model call, before anything is written;
- on railgraph's stores (SQLite or Postgres), the chunk inserts, deletes and record updates of the units embedded
  together then commit in one transaction, and the embedding is never inside it: a crash leaves every unit wholly
  old or wholly new, a re-run converges, and readers never wait on the model;
- with ``sync``, the units inside the run's scopes that the run did not see lose their chunks; a unit that
  failed to load this time was seen, and keeps them, and a scope in which every unit tried failed (a site that
  is down, a query that fails) is left as it is.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from langchain_core.documents import Document
from langchain_core.indexing import RecordManager
from langchain_core.vectorstores import VectorStore

from agent.pgstore import PgChunkStore
from agent.records import DatabaseRecordManager
from agent.store import ChunkStore, embed_chunks, embedded_text
from loaders import LoadError, iter_files, load_file, split_documents
from loaders.sources import SourceUnit

RECORD_NAMESPACE = "railgraph/chunks"
# The stores that keep their ingest records in their own database and take precomputed vectors.
RAILGRAPH_STORES = (ChunkStore, PgChunkStore)
# New chunks embedded per model call. The first call takes EMBED_BATCH_FIRST, so the first units commit and the
# progress bar moves within seconds; each next call doubles, up to EMBED_BATCH_CHUNKS: the model sorts a call's
# texts by length before cutting them into forward passes (``MiniLMEmbeddings.batch_size``), so a larger call pads
# less, and a crash costs at most one call to redo.
EMBED_BATCH_FIRST = 64
EMBED_BATCH_CHUNKS = 1024


@dataclass
class IngestReport:
    """What an ingest did, in chunks; ``to_json()`` is the ``ingest --json`` contract of DESIGN.md.

    ``updated`` counts chunks rewritten under an id they already had; ids are hashes of the content, so a
    changed chunk is one added and one deleted, and ``updated`` stays 0 (it is kept for the contract).
    """

    added: int = 0
    updated: int = 0
    skipped: int = 0
    deleted: int = 0
    failed: list[dict[str, str]] = field(default_factory=list)
    units: int = 0
    chunks: int = 0

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        return {key: data[key] for key in ("added", "updated", "skipped", "deleted", "failed")}


def chunk_key(chunk: Document) -> str:
    """A chunk's id: SHA-256 over the hashes of its text and of its metadata.

    It is the key LangChain's ``index()`` gives with ``key_encoder="sha256"``, so the records and chunks of
    databases written through it stay valid.
    """
    content = hashlib.sha256(chunk.page_content.encode("utf-8")).hexdigest()
    metadata = hashlib.sha256(json.dumps(chunk.metadata, sort_keys=True, default=str).encode("utf-8")).hexdigest()
    return hashlib.sha256((content + metadata).encode("utf-8")).hexdigest()


def _raise(error: LoadError) -> list[Document]:
    raise error


def guarded(units: Iterable[SourceUnit], source: str) -> Iterator[SourceUnit]:
    """``units``, where a ``LoadError`` raised by the iteration itself (``sql_units`` runs its query as iteration
    starts) ends them with one unit ``source`` whose ``load()`` raises it: the ingest reports it and goes on to
    the other sources, and a scope given as ``source`` is then left as it is by a synced run."""
    try:
        yield from units
    except LoadError as error:
        yield SourceUnit(source, partial(_raise, error))


def file_units(
    paths: Sequence[Path],
    *,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    pdf_password: str | None = None,
    json_selector: str | None = None,
) -> Iterator[SourceUnit]:
    """A unit per file under ``paths`` (see ``iter_files``), loaded by ``load_file``; its id is the resolved path."""
    options: dict[str, Any] = {"pdf_password": pdf_password}
    if json_selector is not None:
        options["json_selector"] = json_selector
    for path in iter_files(paths, include=include, exclude=exclude):
        yield SourceUnit(str(path.resolve()), partial(load_file, path, **options))


@dataclass
class _Pending:
    """A loaded unit waiting for its new chunks' vectors."""

    source: str
    chunks: list[Document]
    keys: list[str]
    new: list[int]
    vectors: list[np.ndarray] = field(default_factory=list)
    sentence_vectors: list[np.ndarray | None] = field(default_factory=list)


class _Writer:
    """Embeds and writes units' chunks, one transaction per batch of units where the store and records allow it."""

    def __init__(self, store: VectorStore, records: RecordManager | None) -> None:
        if isinstance(store, RAILGRAPH_STORES):
            if records is not None:
                raise ValueError(
                    f"a {type(store).__name__} keeps its ingest records in its own database: pass no record manager"
                )
            self.records: RecordManager = DatabaseRecordManager(RECORD_NAMESPACE, store.db)
        elif records is None:
            raise ValueError(f"{type(store).__name__} needs the record manager of its database")
        else:
            self.records = records
        self.store = store

    def transaction(self) -> AbstractContextManager[Any]:
        """One transaction of the store's database, which the chunk and record writes inside it join."""
        return self.store.db.transaction() if isinstance(self.store, RAILGRAPH_STORES) else nullcontext()

    def embed(self, pending: list[_Pending]) -> None:
        """Vectors for the new chunks of ``pending``, in one model call (a store without a way to take them embeds
        on its own when written)."""
        if not isinstance(self.store, RAILGRAPH_STORES):
            return
        texts = [
            embedded_text(unit.chunks[i].page_content, unit.chunks[i].metadata) for unit in pending for i in unit.new
        ]
        vectors, sentences = embed_chunks(self.store.embeddings, texts) if texts else ([], [])
        chunk_vectors, sentence_vectors = iter(vectors), iter(sentences)
        for unit in pending:
            unit.vectors = [next(chunk_vectors) for _ in unit.new]
            unit.sentence_vectors = [next(sentence_vectors) for _ in unit.new]

    def write(self, units: list[_Pending]) -> int:
        """Replace the recorded chunks of ``units`` by their current ones, all in one transaction where the store
        allows it; the number of chunks deleted."""
        if not units:
            return 0
        with self.transaction():
            # Chunk keys hash the source too, so no two units share one: their stale keys can be found together.
            recorded = self.records.list_keys(group_ids=[unit.source for unit in units])
            stale = sorted(set(recorded) - {key for unit in units for key in unit.keys})
            new_chunks = [unit.chunks[i] for unit in units for i in unit.new]
            new_keys = [unit.keys[i] for unit in units for i in unit.new]
            if new_chunks:
                if isinstance(self.store, RAILGRAPH_STORES):
                    self.store.add_texts(
                        [chunk.page_content for chunk in new_chunks],
                        [chunk.metadata for chunk in new_chunks],
                        ids=new_keys,
                        vectors=[vector for unit in units for vector in unit.vectors],
                        sentence_vectors=[matrix for unit in units for matrix in unit.sentence_vectors],
                    )
                else:
                    self.store.add_documents(new_chunks, ids=new_keys)
                self.records.update(new_keys, group_ids=[unit.source for unit in units for _ in unit.new])
            self.delete(stale)
        return len(stale)

    def delete(self, keys: list[str]) -> None:
        if keys:
            self.store.delete(keys)
            self.records.delete_keys(keys)


def ingest(
    sources: Iterable[SourceUnit],
    store: VectorStore,
    records: RecordManager | None = None,
    *,
    scopes: Sequence[str] = (),
    sync: bool = False,
    chunk_size: int = 1000,
    chunk_overlap: int = 150,
    batch_chunks: int = EMBED_BATCH_CHUNKS,
    on_unit: Callable[[str, IngestReport], None] | None = None,
) -> IngestReport:
    """Index every unit of ``sources``; a unit that cannot be loaded is reported in ``failed``, never fatal.

    The new chunks of several units are embedded in one call: ``EMBED_BATCH_FIRST`` chunks at first, twice as
    many each time after, up to ``batch_chunks``. ``store`` is railgraph's ``ChunkStore`` or ``PgChunkStore`` (its
    records then live in its own database, in the same transactions as its chunks) or any LangChain ``VectorStore``
    with the ``records`` of its database (each write then commits on its own, and the store embeds its chunks).

    With ``sync``, the chunks of every recorded unit whose id starts with one of ``scopes`` and that this run did
    not see are deleted, except in a scope where units failed to load and none loaded (sync needs railgraph's
    records, which can list units by scope). ``on_unit(source, report)`` follows each unit that is written,
    skipped as unchanged, or failed.
    """
    writer = _Writer(store, records)
    if sync and not isinstance(writer.records, DatabaseRecordManager):
        raise ValueError("sync needs railgraph's own records, which can list the units inside a scope")
    report = IngestReport()
    seen: set[str] = set()
    failed: set[str] = set()
    pending: list[_Pending] = []
    pending_new = 0
    batch = min(EMBED_BATCH_FIRST, batch_chunks)

    def done(source: str) -> None:
        if on_unit is not None:
            on_unit(source, report)

    def flush() -> None:
        nonlocal pending_new, batch
        # The model and the writes take turns: a thread embedding while this one writes and loads was measured
        # slower (the two contend for the GIL between the model's small operations).
        writer.embed(pending)
        # The units embedded together are written together, in one transaction: a commit and a few statements per
        # model call rather than per file (3,174 small files: railgraph's own time, the model's aside, fell from
        # 1.8 s to 1.0 s), and each unit is still wholly old or wholly new to every reader and after a crash.
        report.deleted += writer.write(pending)
        for unit in pending:
            report.added += len(unit.new)
            report.skipped += len(unit.keys) - len(unit.new)
            done(unit.source)
        pending.clear()
        pending_new = 0
        batch = min(batch * 2, batch_chunks)

    for source in sources:
        report.units += 1
        seen.add(source.source)
        try:
            documents = source.load()
        except LoadError as error:
            failed.add(source.source)
            report.failed.append({"source": source.source, "error": str(error)})
            done(source.source)
            continue
        chunks = split_documents(documents, chunk_size=chunk_size, chunk_overlap=chunk_overlap)
        keys = [chunk_key(chunk) for chunk in chunks]
        report.chunks += len(chunks)
        recorded = set(writer.records.list_keys(group_ids=[source.source]))
        if recorded == set(keys):
            report.skipped += len(keys)
            done(source.source)
            continue
        new = [i for i, key in enumerate(keys) if key not in recorded]
        pending.append(_Pending(source.source, chunks, keys, new))
        pending_new += len(new)
        if pending_new >= batch:
            flush()
    flush()
    if sync:
        loaded = seen - failed
        # Only failures in a scope: the source itself is probably down, not every unit in it gone.
        synced = [
            scope
            for scope in scopes
            if any(source.startswith(scope) for source in loaded)
            or not any(source.startswith(scope) for source in failed)
        ]
        report.deleted += _delete_unseen(writer, synced, seen)
    return report


def _delete_unseen(writer: _Writer, scopes: Sequence[str], seen: set[str]) -> int:
    """Delete the chunks of the recorded units inside ``scopes`` that are not in ``seen``, a unit per transaction."""
    records = writer.records
    assert isinstance(records, DatabaseRecordManager)  # checked by ingest() before any work
    deleted = 0
    for scope in scopes:
        for unseen in sorted(set(records.groups_in(scope)) - seen):
            with writer.transaction():
                keys = records.list_keys(group_ids=[unseen])
                writer.delete(keys)
            deleted += len(keys)
    return deleted
