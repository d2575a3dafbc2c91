"""Chunks with vectors (pgvector, HNSW) and full text (``tsvector``, GIN) on Postgres, searched by hybrid fusion.

``PgChunkStore`` is the scale-out twin of ``agent.store.ChunkStore`` (DESIGN.md, "One database URL"): the same
``VectorStore`` interface, the same metadata columns and filters, the same ranking (``HybridSearchStore.search``:
fusion, near-duplicate cut, relevance floor), so LangChain's ``index()`` and every retriever work with either.
Several stateless agent workers can share one Postgres.

The keyword side ranks with ``ts_rank`` over the question's lexemes (``to_tsvector``, so user text is never query
syntax) and, to keep a 100k-chunk search in milliseconds, ranks chunks sharing two of them before falling back to
chunks sharing any one.
"""

from __future__ import annotations

import itertools
import json
import re
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import psycopg
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings

from agent.embeddings import EMBEDDING_DIM
from agent.pgdb import PgDatabase, redact
from agent.store import (
    Filters,
    HybridSearchStore,
    SearchOptions,
    embed_chunks,
    embedded_text,
    filter_values,
    sentence_blob,
    sentence_matrix,
)

VECTOR_INDEX = "chunks_embedding_hnsw"
TEXT_INDEX = "chunks_tsv_gin"
# HNSW candidate list per query. pgvector's default of 40 found 85% of the exact top 10 at 100k chunks, 100 found
# 93% for about a millisecond more (bench/retrieval_latency.py).
DEFAULT_EF_SEARCH = 100

# An escaped NUL (after an even number of backslashes), which jsonb rejects.
_JSON_NUL = re.compile(r"(?<!\\)((?:\\\\)*)\\u0000")
# Pairs of query words are ORed only up to this many distinct words (n words make n(n-1)/2 pairs).
MAX_PAIRED_LEXEMES = 16
# ts_rank (term frequency with the A/B weights) rather than ts_rank_cd (cover density): on mini-Wikipedia it
# puts a gold passage in the top 5 for 80% of questions against 62%, at half the cost per matching chunk.
_KEYWORD_SQL = (
    "SELECT id, ts_rank(CAST(%s AS real[]), tsv, q) AS score FROM chunks, CAST(%s AS tsquery) AS q"
    " WHERE tsv @@ CAST(%s AS tsquery) AND {where} ORDER BY score DESC, id LIMIT %s"
)
# The condition each filter field puts on a chunk (type and tags live in the metadata JSON).
_FILTER_SQL = {
    "source": "source = ANY(%s)",
    "doc_id": "doc_id = ANY(%s)",
    "type": "metadata->>'type' = ANY(%s)",
    "tags": "metadata->'tags' ?| CAST(%s AS text[])",
}
_COLUMNS = "id, doc_id, source, page, start_index, end_index, title, content, metadata"


def schema_sql(dimensions: int = EMBEDDING_DIM) -> list[str]:
    """The statements that create the chunk table and its indexes when missing (safe to run every start)."""
    return [
        "CREATE EXTENSION IF NOT EXISTS vector",
        f"""
        CREATE TABLE IF NOT EXISTS chunks (
            id text PRIMARY KEY,
            doc_id text NOT NULL,
            source text NOT NULL,
            page integer,
            start_index integer,
            end_index integer,
            title text,
            content text NOT NULL,
            metadata jsonb NOT NULL DEFAULT '{{}}',
            embedding vector({dimensions}) NOT NULL,
            -- Generated, so no writer can let text and index drift apart; a title hit (A) outranks a body hit (B).
            tsv tsvector GENERATED ALWAYS AS (
                setweight(to_tsvector('english', coalesce(title, '')), 'A')
                || setweight(to_tsvector('english', content), 'B')
            ) STORED
        )
        """,
        # Each chunk's sentence vectors (agent.store.sentence_blob); added after the table's first release.
        "ALTER TABLE chunks ADD COLUMN IF NOT EXISTS sentences bytea",
        # ts_rank reads the tsv of every chunk matching the question. A long chunk's row is over the 2 kB toast
        # threshold, and by default Postgres then moves its largest column out of line, often tsv, so each match cost
        # a TOAST lookup too: keyword search 8.7 -> 5.7 ms p50 at 100k chunks once the vectors go out of line first.
        # Rows written before this keep their layout until rewritten.
        "ALTER TABLE chunks ALTER COLUMN tsv SET STORAGE MAIN",
        "CREATE INDEX IF NOT EXISTS chunks_doc_id ON chunks (doc_id)",
        # One index per search filter, so a selective filter is planned as an exact scan of its few chunks.
        "CREATE INDEX IF NOT EXISTS chunks_source ON chunks (source)",
        "CREATE INDEX IF NOT EXISTS chunks_type ON chunks ((metadata->>'type'))",
        "CREATE INDEX IF NOT EXISTS chunks_tags ON chunks USING gin ((metadata->'tags'))",
        f"CREATE INDEX IF NOT EXISTS {VECTOR_INDEX} ON chunks USING hnsw (embedding vector_cosine_ops)",
        f"CREATE INDEX IF NOT EXISTS {TEXT_INDEX} ON chunks USING gin (tsv)",
    ]


def tsquery_text(lexemes: Sequence[str], *, pairs: bool = False) -> str:
    """A ``tsquery`` (text form, for a ``::tsquery`` cast) matching any of ``lexemes``, or any two with ``pairs``.

    The lexemes come from ``to_tsvector`` over the user's text, so user text is never query syntax: each is quoted
    (quotes and backslashes escaped) and the cast takes quoted lexemes verbatim, without stemming them again.
    """
    quoted = ["'" + lexeme.replace("\\", "\\\\").replace("'", "''") + "'" for lexeme in lexemes]
    if pairs:
        return " | ".join(f"({a} & {b})" for a, b in itertools.combinations(quoted, 2))
    return " | ".join(quoted)


def vector_literal(vector: Sequence[float]) -> str:
    """pgvector's text form of a vector; text keeps psycopg free of a binary dumper for the ``vector`` type."""
    return "[" + ",".join(f"{float(x):.7g}" for x in vector) + "]"


def filter_sql(filters: Filters | None) -> tuple[str, list[Any]]:
    """A condition on ``chunks`` (and its parameters) for ``filters``, meaning what ``agent.store.filter_sql`` does."""
    values = filter_values(filters)
    return " AND ".join(_FILTER_SQL[name] for name in values) or "TRUE", list(values.values())


def rank_weights(title_weight: float) -> list[float]:
    """``ts_rank``'s weights of the D, C, B, A labels for a title (A) match worth ``title_weight`` content (B) ones.

    ts_rank refuses weights above 1, so the larger of the two is 1; D and C label nothing in ``tsv``.
    """
    title = max(title_weight, 0.0)
    scale = max(title, 1.0)
    return [0.0, 0.0, 1.0 / scale, title / scale]


def _no_nul(text: str | None) -> str | None:
    # Postgres text cannot hold NUL (SQLite can, and PDF extraction sometimes yields it); dropping it loses nothing.
    return None if text is None else text.replace("\x00", "")


class PgChunkStore(HybridSearchStore[str]):
    """Hybrid (vector + keyword) chunk store in Postgres, the same interface as ``ChunkStore``.

    The connection of its ``PgDatabase`` serves the store; the database's lock makes it safe to share between
    threads (psycopg would serialise the statements anyway, but a transaction must not interleave with another
    thread's).
    """

    _filter_sql = staticmethod(filter_sql)

    def __init__(
        self,
        db: PgDatabase | str,
        embeddings: Embeddings,
        *,
        dimensions: int = EMBEDDING_DIM,
        ef_search: int = DEFAULT_EF_SEARCH,
        options: SearchOptions | None = None,
    ) -> None:
        """Open the store on railgraph's database ``db`` (or a ``postgresql://`` URL) and create its schema if missing.

        On a ``PgDatabase`` the store shares its connection, so chunk writes inside ``db.transaction()`` commit
        with the other writes there (an ingest unit's records). ``dimensions`` must match ``embeddings``; an existing
        table with another size is an error, not a surprise at the first insert. ``options`` are how ``search``
        ranks when not told otherwise.
        """
        self.db = db if isinstance(db, PgDatabase) else PgDatabase(db)
        self.url = self.db.url
        self._embeddings = embeddings
        self.options = options or SearchOptions()
        self.dimensions = dimensions
        self.ef_search = ef_search
        self._lock = self.db.lock
        # Autocommit: reads take no locks for longer than a statement; writes open explicit transactions.
        self._conn = self.db.raw
        try:
            self._create_schema()
            # With a filter, HNSW's candidates are filtered after the search and could all fail it; an iterative
            # scan searches on until enough pass (rows may come slightly out of order: _vector_hits sorts them).
            with self._lock:
                self._conn.execute("SET hnsw.iterative_scan = relaxed_order")
        except BaseException:
            if not isinstance(db, PgDatabase):
                self.db.close()
            raise

    @property
    def embeddings(self) -> Embeddings:
        return self._embeddings

    def search(self, query: str, k: int = 5, **kwargs: Any) -> list[tuple[Document, float]]:
        """``HybridSearchStore.search`` in one read snapshot of the database, as on SQLite.

        The search runs several queries; an ingest committing between them would otherwise mix a document's old
        and new chunks, or rank rows that are already gone.
        """
        with self.db.transaction(write=False):
            return super().search(query, k, **kwargs)

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        """The store's connection, held exclusively for the block (for bulk loads and maintenance)."""
        with self._lock:
            yield self._conn

    def close(self) -> None:
        """Close the database connection; the store is unusable afterwards."""
        self.db.close()

    def _create_schema(self) -> None:
        with self._lock, self._conn.transaction():
            # Two workers starting at once would race on CREATE EXTENSION/TABLE; the advisory lock serialises them.
            self._conn.execute("SELECT pg_advisory_xact_lock(hashtext('railgraph.pgstore.schema'))")
            for statement in schema_sql(self.dimensions):
                self._conn.execute(statement)
            row = self._conn.execute(
                "SELECT atttypmod FROM pg_attribute WHERE attrelid = 'chunks'::regclass AND attname = 'embedding'"
            ).fetchone()
        if row is not None and row[0] != self.dimensions:
            raise ValueError(
                f"the chunks table in {redact(self.url)} holds {row[0]}-d vectors but the embeddings give"
                f" {self.dimensions}: use the embeddings it was built with, or a new database"
            )

    def add_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict] | None = None,
        *,
        ids: list[str] | None = None,
        vectors: Sequence[Sequence[float]] | None = None,
        sentence_vectors: Sequence[np.ndarray | None] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        """Store ``texts`` (embedded here unless their ``vectors`` and ``sentence_vectors`` are given); an id that
        exists already is replaced."""
        texts = list(texts)
        metadatas = metadatas or [{} for _ in texts]
        if vectors is None:
            vectors, sentence_vectors = embed_chunks(
                self._embeddings,
                [embedded_text(text, metadata) for text, metadata in zip(texts, metadatas, strict=True)],
            )
        return self.add_embeddings(texts, vectors, metadatas, ids=ids, sentence_vectors=sentence_vectors)

    def add_embeddings(
        self,
        texts: Sequence[str],
        vectors: Sequence[Sequence[float]],
        metadatas: Sequence[dict] | None = None,
        *,
        ids: Sequence[str] | None = None,
        sentence_vectors: Sequence[np.ndarray | None] | None = None,
    ) -> list[str]:
        """Store texts whose vectors (and, optionally, sentence vectors) are already known (re-indexing, bulk
        loads); an existing id is replaced.

        Rows go through ``COPY`` into a temporary table and one upsert, which is many times faster than a row per
        statement and keeps the replace atomic.
        """
        metadatas = list(metadatas) if metadatas is not None else [{} for _ in texts]
        ids = list(ids) if ids is not None else [str(uuid.uuid4()) for _ in texts]
        if not len(texts) == len(vectors) == len(metadatas) == len(ids):
            raise ValueError("texts, vectors, metadatas and ids must have the same length")
        if not ids:
            return []
        with self._lock, self._conn.transaction():
            self._conn.execute(
                "CREATE TEMP TABLE IF NOT EXISTS chunks_incoming"
                " (LIKE chunks INCLUDING DEFAULTS EXCLUDING GENERATED) ON COMMIT DELETE ROWS"
            )
            # Inside a caller's transaction (an ingest unit) an earlier call's rows are still here until commit.
            self._conn.execute("TRUNCATE chunks_incoming")
            columns = f"{_COLUMNS}, embedding, sentences"
            sentences = [sentence_blob(matrix) for matrix in sentence_vectors or [None] * len(ids)]
            with self._conn.cursor().copy(f"COPY chunks_incoming ({columns}) FROM STDIN") as copy:
                for chunk_id, text, metadata, vector, matrix in zip(
                    ids, texts, metadatas, vectors, sentences, strict=True
                ):
                    copy.write_row(
                        (
                            chunk_id,
                            metadata.get("doc_id") or metadata.get("source") or chunk_id,
                            metadata.get("source", ""),
                            metadata.get("page"),
                            metadata.get("start_index"),
                            metadata.get("end_index"),
                            _no_nul(metadata.get("title")),
                            _no_nul(text),
                            _JSON_NUL.sub(r"\1", json.dumps(metadata, default=str)),
                            vector_literal(vector),
                            matrix,
                        )
                    )
            updates = ", ".join(f"{column} = excluded.{column}" for column in columns.split(", ")[1:])
            # DISTINCT ON: a batch naming one id twice keeps its last row instead of failing the whole upsert.
            self._conn.execute(
                f"INSERT INTO chunks ({columns})"
                f" SELECT DISTINCT ON (id) {columns} FROM chunks_incoming ORDER BY id"
                f" ON CONFLICT (id) DO UPDATE SET {updates}"
            )
        return ids

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool:
        """Delete chunks by id (all chunks when ``ids`` is None)."""
        with self._lock:
            if ids is None:
                self._conn.execute("DELETE FROM chunks")
            else:
                self._conn.execute("DELETE FROM chunks WHERE id = ANY(%s)", (list(ids),))
        return True

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        """The stored chunks among ``ids``, in the order asked (missing ids are left out)."""
        rows = self._rows(list(ids))
        return [self._document(rows[chunk_id]) for chunk_id in ids if chunk_id in rows]

    def count(self) -> int:
        """Number of chunks stored."""
        with self._lock:
            return self._conn.execute("SELECT count(*) FROM chunks").fetchone()[0]

    def _vector_hits(self, vector: np.ndarray, depth: int, where: str, params: list[Any]) -> dict[str, float]:
        literal = vector_literal(vector)
        with self._lock:
            # HNSW returns at most ef_search rows, so a deeper ranking needs a wider search; SET LOCAL lasts until
            # the end of search()'s snapshot transaction, so the shared connection keeps no stale width.
            self._conn.execute(f"SET LOCAL hnsw.ef_search = {int(max(self.ef_search, depth))}")
            rows = self._conn.execute(
                f"SELECT id, embedding <=> %s::vector AS distance FROM chunks WHERE {where} ORDER BY distance LIMIT %s",
                (literal, *params, depth),
            ).fetchall()
            if len(rows) < depth and where != "TRUE":
                # Fewer than asked: the filter keeps fewer chunks, or the iterative scan gave up (after
                # hnsw.max_scan_tuples, 20,000 by default) before it met them. An exact scan over the matching chunks
                # is complete; the materialised CTE keeps the planner off the vector index.
                rows = self._conn.execute(
                    f"WITH matching AS MATERIALIZED (SELECT id, embedding FROM chunks WHERE {where})"
                    " SELECT id, embedding <=> %s::vector AS distance FROM matching ORDER BY distance LIMIT %s",
                    (*params, literal, depth),
                ).fetchall()
        return {chunk_id: float(distance) for chunk_id, distance in sorted(rows, key=lambda row: row[1])}

    def _keyword_hits(
        self, query: str, depth: int, where: str, params: list[Any], title_weight: float, scored: Sequence[str]
    ) -> tuple[dict[str, float], dict[str, float]]:
        sql = _KEYWORD_SQL.format(where=where)
        weights = rank_weights(title_weight)
        with self._lock:
            lexemes = self._lexemes(query)
            if not lexemes:
                return {}, {}
            any_word = tsquery_text(lexemes)
            rows: list[tuple[Any, ...]] = []
            if 2 < len(lexemes) <= MAX_PAIRED_LEXEMES:
                # Ranking costs microseconds per matching chunk, and a chunk sharing one common word with the
                # question matches: at 100k chunks a five-word question matches ~7k of them. Chunks sharing
                # two words are far fewer and nearly always hold the best-ranked ones (on mini-Wikipedia recall@5
                # and MRR are unchanged), so they are ranked first; the rank itself is still against any word.
                pairs = tsquery_text(lexemes, pairs=True)
                rows = self._conn.execute(sql, (weights, any_word, pairs, *params, depth)).fetchall()
            if len(rows) < depth:
                rows = self._conn.execute(sql, (weights, any_word, any_word, *params, depth)).fetchall()
            extra = (
                # The scored chunks by id: materialised, so the planner cannot take the GIN index and rank every
                # chunk sharing a word with the query.
                self._conn.execute(
                    "WITH picked AS MATERIALIZED (SELECT id, tsv FROM chunks WHERE id = ANY(%s))"
                    " SELECT id, ts_rank(CAST(%s AS real[]), tsv, q) FROM picked, CAST(%s AS tsquery) AS q"
                    " WHERE tsv @@ q",
                    (list(scored), weights, any_word),
                ).fetchall()
                if scored
                else []
            )
        return {row[0]: float(row[1]) for row in rows}, {row[0]: float(row[1]) for row in extra}

    def _lexemes(self, query: str) -> list[str]:
        """The lexemes of ``query``: Postgres's own parser, stemmer and stop words, exactly as for the stored tsv.

        The caller holds the lock.
        """
        return self._conn.execute("SELECT tsvector_to_array(to_tsvector('english', %s))", (query,)).fetchone()[0]

    def _vectors(
        self, keys: Sequence[str], *, sentences: bool = False
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        with self._lock:
            # Binary: pgvector's wire form (dimensions, a reserved word, then big-endian float4s) loads with no parsing.
            rows = self._conn.execute(
                f"SELECT id, embedding, {'sentences' if sentences else 'NULL::bytea'} FROM chunks WHERE id = ANY(%s)",
                (list(keys),),
                binary=True,
            ).fetchall()
        vectors = {row[0]: np.frombuffer(row[1], dtype=">f4", offset=4).astype(np.float32) for row in rows}
        return vectors, {row[0]: sentence_matrix(row[2]) for row in rows if row[2] is not None}

    def _lengths(self, keys: Sequence[str]) -> dict[str, int]:
        with self._lock:
            rows = self._conn.execute("SELECT id, length(content) FROM chunks WHERE id = ANY(%s)", (list(keys),))
            return {key: length for key, length in rows.fetchall()}

    def _documents(self, keys: Sequence[str]) -> dict[str, Document]:
        return {key: self._document(row) for key, row in self._rows(list(keys)).items()}

    def _rows(self, ids: list[str]) -> dict[str, tuple[Any, ...]]:
        if not ids:
            return {}
        with self._lock:
            rows = self._conn.execute(f"SELECT {_COLUMNS} FROM chunks WHERE id = ANY(%s)", (ids,)).fetchall()
        return {row[0]: row for row in rows}

    @staticmethod
    def _document(row: tuple[Any, ...]) -> Document:
        metadata = dict(row[8])
        metadata.update(doc_id=row[1], source=row[2], page=row[3], start_index=row[4], end_index=row[5], title=row[6])
        return Document(id=row[0], page_content=row[7], metadata=metadata)

    @classmethod
    def from_texts(
        cls,
        texts: list[str],
        embedding: Embeddings,
        metadatas: list[dict] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> PgChunkStore:
        """A store at ``kwargs["url"]`` (a ``postgresql://`` URL) holding ``texts``."""
        if "url" not in kwargs:
            raise ValueError("PgChunkStore.from_texts needs url='postgresql://...'")
        store = cls(kwargs["url"], embedding)
        store.add_texts(texts, metadatas, ids=ids)
        return store
