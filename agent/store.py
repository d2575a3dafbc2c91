"""Chunks with vectors (sqlite-vec) and full text (FTS5) in the railgraph file, searched by hybrid fusion.

``ChunkStore`` is a LangChain ``VectorStore``, so LangChain's indexing API (``index()`` with a record manager)
adds, replaces and deletes chunks through it, and it works as a retriever anywhere in LangChain.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import numpy as np
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import VectorStore

from agent.db import Database
from agent.fusion import fuse_rankings

SearchMode = Literal["hybrid", "vector", "keyword"]

_WORD = re.compile(r"\w+", re.UNICODE)
_COLUMNS = "c.rowid, c.id, c.doc_id, c.source, c.page, c.start_index, c.end_index, c.title, c.content, c.metadata"


def fts_query(text: str) -> str:
    """An FTS5 query matching any word of ``text``; each word is quoted so user text is never FTS syntax."""
    words = dict.fromkeys(word.lower() for word in _WORD.findall(text) if len(word) > 1)
    return " OR ".join(f'"{word}"' for word in words)


class ChunkStore(VectorStore):
    """Hybrid (vector + keyword) chunk store in the railgraph SQLite file."""

    def __init__(self, db: Database, embeddings: Embeddings) -> None:
        self.db = db
        self._embeddings = embeddings

    @property
    def embeddings(self) -> Embeddings:
        return self._embeddings

    def add_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        texts = list(texts)
        metadatas = metadatas or [{} for _ in texts]
        ids = ids or [str(uuid.uuid4()) for _ in texts]
        vectors = self._embeddings.embed_documents(texts)
        with self.db.transaction() as conn:
            self._delete_ids(conn, ids)
            for chunk_id, text, metadata, vector in zip(ids, texts, metadatas, vectors, strict=True):
                cursor = conn.execute(
                    "INSERT INTO chunks (id, doc_id, source, page, start_index, end_index, title, content, metadata)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        chunk_id,
                        metadata.get("doc_id") or metadata.get("source") or chunk_id,
                        metadata.get("source", ""),
                        metadata.get("page"),
                        metadata.get("start_index"),
                        metadata.get("end_index"),
                        metadata.get("title"),
                        text,
                        json.dumps(metadata, default=str),
                    ),
                )
                rowid = cursor.lastrowid
                conn.execute(
                    "INSERT INTO chunks_vec (rowid, embedding) VALUES (?, ?)",
                    (rowid, np.asarray(vector, dtype=np.float32).tobytes()),
                )
                conn.execute(
                    "INSERT INTO chunks_fts (rowid, title, content) VALUES (?, ?, ?)",
                    (rowid, metadata.get("title") or "", text),
                )
        return ids

    @staticmethod
    def _delete_ids(conn: Any, ids: Sequence[str]) -> int:
        deleted = 0
        for chunk_id in ids:
            row = conn.execute("SELECT rowid FROM chunks WHERE id = ?", (chunk_id,)).fetchone()
            if row is None:
                continue
            for table in ("chunks_vec", "chunks_fts", "chunks"):
                conn.execute(f"DELETE FROM {table} WHERE rowid = ?", (row[0],))
            deleted += 1
        return deleted

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool:
        """Delete chunks by id (all chunks when ``ids`` is None)."""
        with self.db.transaction() as conn:
            if ids is None:
                for table in ("chunks_vec", "chunks_fts", "chunks"):
                    conn.execute(f"DELETE FROM {table}")
            else:
                self._delete_ids(conn, ids)
        return True

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        marks = ",".join("?" * len(ids))
        rows = self.db.query(f"SELECT {_COLUMNS} FROM chunks c WHERE c.id IN ({marks})", tuple(ids))
        return [self._document(row) for row in rows]

    def count(self) -> int:
        """Number of chunks stored."""
        return self.db.query("SELECT count(*) FROM chunks")[0][0]

    def search(self, query: str, k: int = 5, *, mode: SearchMode = "hybrid") -> list[tuple[Document, float]]:
        """The ``k`` best chunks for ``query`` with their fused (or single-side) scores, best first.

        Each document's metadata gains ``vector_rank`` and ``keyword_rank`` (None where that side missed it).
        """
        depth = max(k * 4, 20)
        vector_ranks = self._vector_ranks(query, depth) if mode != "keyword" else {}
        keyword_ranks = self._keyword_ranks(query, depth) if mode != "vector" else {}
        scores = fuse_rankings([vector_ranks, keyword_ranks])
        best = list(scores)[:k]
        if not best:
            return []
        marks = ",".join("?" * len(best))
        rows = {
            row[0]: row
            for row in self.db.query(f"SELECT {_COLUMNS} FROM chunks c WHERE c.rowid IN ({marks})", tuple(best))
        }
        results = []
        for rowid in best:
            document = self._document(rows[rowid])
            document.metadata["vector_rank"] = vector_ranks.get(rowid)
            document.metadata["keyword_rank"] = keyword_ranks.get(rowid)
            results.append((document, scores[rowid]))
        return results

    def _vector_ranks(self, query: str, depth: int) -> dict[int, int]:
        vector = np.asarray(self._embeddings.embed_query(query), dtype=np.float32).tobytes()
        rows = self.db.query(
            "SELECT rowid FROM chunks_vec WHERE embedding MATCH ? AND k = ? ORDER BY distance",
            (vector, depth),
        )
        return {row[0]: rank for rank, row in enumerate(rows, start=1)}

    def _keyword_ranks(self, query: str, depth: int) -> dict[int, int]:
        match = fts_query(query)
        if not match:
            return {}
        rows = self.db.query(
            "SELECT rowid FROM chunks_fts WHERE chunks_fts MATCH ? ORDER BY bm25(chunks_fts) LIMIT ?",
            (match, depth),
        )
        return {row[0]: rank for rank, row in enumerate(rows, start=1)}

    @staticmethod
    def _document(row: Any) -> Document:
        metadata = json.loads(row[9])
        metadata.update(doc_id=row[2], source=row[3], page=row[4], start_index=row[5], end_index=row[6], title=row[7])
        return Document(id=row[1], page_content=row[8], metadata=metadata)

    def similarity_search_with_score(self, query: str, k: int = 4, **kwargs: Any) -> list[tuple[Document, float]]:
        return self.search(query, k, mode=kwargs.get("mode", "hybrid"))

    def similarity_search(self, query: str, k: int = 4, **kwargs: Any) -> list[Document]:
        return [document for document, _ in self.similarity_search_with_score(query, k, **kwargs)]

    @classmethod
    def from_texts(
        cls,
        texts: list[str],
        embedding: Embeddings,
        metadatas: list[dict] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> ChunkStore:
        """A store in ``kwargs["db"]`` (a ``Database``; an in-memory one when absent) holding ``texts``."""
        store = cls(kwargs.get("db") or Database(":memory:"), embedding)
        store.add_texts(texts, metadatas, ids=ids)
        return store
