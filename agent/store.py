"""Chunks with vectors (sqlite-vec) and full text (FTS5) in the railgraph file, searched by hybrid fusion.

``ChunkStore`` is a LangChain ``VectorStore``, so LangChain's indexing API (``index()`` with a record manager)
adds, replaces and deletes chunks through it, and it works as a retriever anywhere in LangChain.
"""

from __future__ import annotations

import json
import re
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePath
from typing import TYPE_CHECKING, Any, Generic, Literal

import numpy as np
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import VectorStore

from agent.db import Database, in_batches, in_list
from agent.embeddings import EMBEDDING_DIM, MiniLMEmbeddings
from agent.fusion import RRF_K, Key, fuse_rankings, fuse_scores

if TYPE_CHECKING:
    from agent.configuration import Settings

SearchMode = Literal["hybrid", "vector", "keyword"]
SEARCH_MODES: tuple[SearchMode, ...] = ("hybrid", "vector", "keyword")
Fusion = Literal["convex", "rrf"]

_WORD = re.compile(r"\w+", re.UNICODE)
_COLUMNS = "c.rowid, c.id, c.doc_id, c.source, c.page, c.start_index, c.end_index, c.title, c.content, c.metadata"
# Function words carry no evidence about which chunk answers a question; in an OR query they only pull in
# (and, through BM25's length normalisation, reorder) chunks that share nothing but grammar with it.
_STOPWORD_TEXT = (
    "a about above after again all also am an and any are as at be been before being below between both but by "
    "can could did do does doing down during each few for from further had has have having he her here hers him "
    "his how i if in into is it its itself just me more most my no nor not now of off on once only or other our "
    "out over own same she should so some such than that the their theirs them then there these they this those "
    "through to too under until up very was we were what when where which while who whom whose why will with "
    "would you your"
)
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())


def fts_query(text: str) -> str:
    """An FTS5 query matching any content word of ``text``; each word is quoted so user text is never FTS syntax.

    Stopwords are dropped unless the text has nothing else (a query of only "the who" still searches).
    """
    words = dict.fromkeys(word.lower() for word in _WORD.findall(text) if len(word) > 1)
    content = [word for word in words if word not in _STOPWORDS] or list(words)
    return " OR ".join(f'"{word}"' for word in content)


def embedded_text(text: str, metadata: Mapping[str, Any]) -> str:
    """What a chunk's vector is computed from: its ``title`` (article, page heading) and ``headings``, then its text.

    Every writer of vectors (both chunk stores, the ingest, the benchmarks) calls this with the chunk's metadata,
    so no path can leave the headings out.

    A chunk cut from the middle of a document often never names its subject; the title puts it back, so
    "When did the Panthers ...?" reaches a chunk about Super Bowl 50 that only says "the team". The section
    headings above it (metadata ``headings``, "Install > From source") do the same within one document. A title
    that is only the file name of the chunk's ``source`` is left out.
    """
    title = metadata.get("title")
    if title and title == PurePath(str(metadata.get("source") or "")).name:
        # A file name stands in for a missing title ("mw-12.txt", "scan_0023.pdf"): it names the file, not the
        # content, and would pull every vector of such files towards its tokens. Keyword search still matches it
        # (it is the chunk's title in the full-text index).
        title = None
    context = " > ".join(part for part in (title, metadata.get("headings")) if part)
    return f"{context}\n{text}" if context else text


def embed_chunks(embeddings: Embeddings, texts: list[str]) -> tuple[list[np.ndarray], list[np.ndarray | None]]:
    """The vectors of chunks' ``embedded_text``s and, where the embeddings can pool them (the packaged MiniLM), each
    chunk's sentence vectors from the same pass; None for embeddings that cannot."""
    if isinstance(embeddings, MiniLMEmbeddings):
        vectors, sentences = embeddings.encode_with_sentences(texts)
        return list(vectors), list(sentences)
    return [np.asarray(vector, dtype=np.float32) for vector in embeddings.embed_documents(texts)], [None] * len(texts)


def sentence_blob(matrix: np.ndarray | None) -> bytes | None:
    """How a chunk's sentence vectors are stored: float16 bytes, row after row (None: it has none).

    Half precision halves what they add to the file (768 bytes a sentence, about 2.6 KB for a mini-Wikipedia
    passage) and moves a cosine by under 0.001, far less than the gaps that decide a ranking.
    """
    return None if matrix is None or not len(matrix) else np.asarray(matrix, dtype=np.float16).tobytes()


def sentence_matrix(blob: bytes) -> np.ndarray:
    """The ``(sentences, EMBEDDING_DIM)`` float32 matrix stored as ``sentence_blob``."""
    return np.frombuffer(blob, dtype=np.float16).reshape(-1, EMBEDDING_DIM).astype(np.float32)


@dataclass(frozen=True)
class SearchOptions:
    """How ``ChunkStore.search`` ranks: fusion weights, BM25 column weights, diversity and the relevance floor."""

    # "convex": weighted sum of each side's min-max normalised score; "rrf": reciprocal rank fusion.
    fusion: Fusion = "convex"
    vector_weight: float = 1.0
    # Full text is the stronger ranker on entity-heavy questions (names, dates, numbers): 1.5 was chosen on XQuAD
    # against whole-text vectors. Scored by their best sentence, the vectors pull level: 1.0 did better on both
    # halves of mini-Wikipedia's questions and on XQuAD (see README, retrieval quality).
    keyword_weight: float = 1.0
    rrf_k: int = RRF_K
    # BM25 weight of a match in the title column relative to one in the content (bm25(chunks_fts, title, content)).
    title_weight: float = 2.0
    # A chunk whose vector is at least this similar to a better-ranked one is left out as a copy of it
    # (1.0 keeps every chunk).
    duplicate_similarity: float = 0.95
    # Below this cosine similarity between the query and its nearest chunk nothing is returned: the
    # question is about something the documents do not cover, and answering from noise would mislead.
    relevance_floor: float = 0.2
    # Candidates taken from each side before fusion, as a multiple of k (at least 20).
    depth_factor: int = 4
    # Convex fusion scores every candidate on both sides: a chunk only one side found gets its real cosine
    # similarity or full-text score on the other (0 there only when it shares no word with the query), rather
    # than counting as the worst of that side's candidates.
    fill_scores: bool = True
    # With filled scores, the vector side scores a candidate by its most similar sentence (stored at ingest, see
    # ``embed_chunks``) instead of its whole-text vector: one sentence answers a question, and the rest of the
    # chunk dilutes its vector. mini-Wikipedia hybrid recall@5 / MRR 0.873 / 0.774 without, see README.
    sentence_scores: bool = True
    # Hybrid search with convex fusion discounts a chunk shorter than ``short_chunk_chars`` characters: its fused
    # score is multiplied by ``1 - short_chunk_penalty * (1 - length / short_chunk_chars)``. Captions, headings and
    # list lines ("Theodore Roosevelt at age 11") match a question's subject closely on both sides, since there is
    # nothing else in them, yet rarely hold its answer. Chosen on mini-Wikipedia's odd qids and checked on the even
    # ones and on XQuAD (see README, retrieval quality); a penalty of 0 turns the discount off. RRF scores are left
    # alone: neighbouring ranks differ by about 1% there, so any such factor would decide the order by length alone.
    short_chunk_chars: int = 200
    short_chunk_penalty: float = 0.4

    @classmethod
    def from_settings(cls, settings: Settings) -> SearchOptions:
        """The options configured by ``RAILGRAPH_FUSION_*``, ``RAILGRAPH_RRF_K`` and friends."""
        return cls(
            fusion=settings.fusion,
            vector_weight=settings.fusion_vector_weight,
            keyword_weight=settings.fusion_keyword_weight,
            rrf_k=settings.rrf_k,
            title_weight=settings.bm25_title_weight,
            duplicate_similarity=settings.duplicate_similarity,
            relevance_floor=settings.relevance_floor,
            fill_scores=settings.fusion_fill_scores,
            sentence_scores=settings.sentence_scores,
            short_chunk_chars=settings.short_chunk_chars,
            short_chunk_penalty=settings.short_chunk_penalty,
        )


Filters = Mapping[str, str | Sequence[str]]
FILTER_FIELDS = ("source", "doc_id", "type", "tags")
# The SQL expression each plain filter field reads on SQLite (type lives in the metadata JSON).
_FILTER_FIELDS = {
    "source": "c.source",
    "doc_id": "c.doc_id",
    "type": "json_extract(c.metadata, '$.type')",
}


def filter_values(filters: Filters | None) -> dict[str, list[str]]:
    """``filters`` as ``{field: [values]}`` without the fields given no value; an unknown field is a ValueError.

    Every store builds its SQL from this, so a filter means (and is refused) the same on each.
    """
    values: dict[str, list[str]] = {}
    for name, value in (filters or {}).items():
        if name not in FILTER_FIELDS:
            raise ValueError(f"unknown search filter {name!r}: use one of {', '.join(FILTER_FIELDS)}")
        listed = [value] if isinstance(value, str) else list(value)
        if listed:
            values[name] = listed
    return values


def filter_sql(filters: Filters | None) -> tuple[str, list[Any]]:
    """A SQL condition on ``chunks c`` (and its parameters) for ``{"source"|"doc_id"|"type"|"tags": value(s)}``.

    Several values of one field match any of them; several fields must all match. ``tags`` matches chunks
    whose metadata ``tags`` list holds any of the given tags.
    """
    clauses: list[str] = []
    params: list[Any] = []
    for name, values in filter_values(filters).items():
        marks = ",".join("?" * len(values))
        if name == "tags":
            clauses.append(f"EXISTS (SELECT 1 FROM json_each(c.metadata, '$.tags') t WHERE t.value IN ({marks}))")
        else:
            clauses.append(f"{_FILTER_FIELDS[name]} IN ({marks})")
        params.extend(values)
    return (" AND ".join(clauses) or "1"), params


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of ``a`` and the unit vector ``b``."""
    return float(a @ b) / (float(np.linalg.norm(a)) or 1.0)


class HybridSearchStore(VectorStore, ABC, Generic[Key]):
    """What every railgraph chunk store offers: ``search`` by mode, and LangChain's search API on top of it.

    The ranking is the same on every store and lives here; a store answers the questions it needs, each keyed by
    the store's own chunk key (SQLite rowid, Postgres id): the nearest and the best full-text chunks passing a
    filter, the stored vectors and the documents of given keys.
    """

    options: SearchOptions
    # The sign that makes the store's full-text score higher for better matches (bm25 falls, ts_rank rises).
    keyword_score_sign: float = 1.0

    def search(
        self,
        query: str,
        k: int = 5,
        *,
        mode: SearchMode = "hybrid",
        filters: Filters | None = None,
        options: SearchOptions | None = None,
    ) -> list[tuple[Document, float]]:
        """The ``k`` best chunks for ``query`` with their fused (or single-side) scores, best first.

        ``filters`` (``source``, ``doc_id``, ``type``, ``tags``) restrict both sides inside the SQL query;
        ``options`` default to the store's own. Each document's metadata gains ``vector_rank``/``vector_distance``
        (cosine distance) and ``keyword_rank``/``keyword_score`` (the store's full-text score: FTS5 bm25, lower is
        better; Postgres ts_rank, higher is better): a rank is None where that side's candidates missed the chunk,
        and so is its score unless hybrid convex fusion filled it in (``SearchOptions.fill_scores``: every
        candidate's distance, and the full-text score of every candidate sharing a word with the query). Nothing is
        returned when the query's nearest chunk is less similar than the relevance floor (vector and hybrid modes;
        keyword mode has no similarity to judge by).
        """
        if mode not in SEARCH_MODES:
            raise ValueError(f"unknown search mode {mode!r}: use one of {', '.join(SEARCH_MODES)}")
        options = options or self.options
        depth = max(k * options.depth_factor, 20)
        where, params = self._filter_sql(filters)
        vector = np.asarray(self.embeddings.embed_query(query), dtype=np.float32) if mode != "keyword" else None
        vector_hits = self._vector_hits(vector, depth, where, params) if vector is not None else {}
        fill = mode == "hybrid" and options.fusion == "convex" and options.fill_scores
        keyword_hits, keyword_scores = (
            self._keyword_hits(query, depth, where, params, options.title_weight, list(vector_hits) if fill else [])
            if mode != "vector"
            else ({}, {})
        )
        if vector_hits and 1.0 - min(vector_hits.values()) < options.relevance_floor:
            return []
        vector_ranks = {key: rank for rank, key in enumerate(vector_hits, start=1)}
        keyword_ranks = {key: rank for rank, key in enumerate(keyword_hits, start=1)}
        vectors: dict[Key, np.ndarray] | None = None
        distances = vector_hits
        keyword_scores.update(keyword_hits)
        weights = [options.vector_weight, options.keyword_weight]
        if options.fusion == "rrf":
            scores = fuse_rankings([vector_ranks, keyword_ranks], weights=weights, k=options.rrf_k)
        else:
            if fill and vector is not None:
                vectors, distances = self._fill_distances(vector, vector_hits, keyword_hits, options.sentence_scores)
            # Similarity and the oriented full-text score, so that higher is better on both sides. Filled, every
            # candidate is on both sides, and one sharing no word with the query scores 0, below every match.
            keyword_side = (
                {key: self.keyword_score_sign * keyword_scores.get(key, 0.0) for key in distances}
                if vectors is not None
                else {key: self.keyword_score_sign * score for key, score in keyword_hits.items()}
            )
            scores = fuse_scores(
                [{key: 1.0 - distance for key, distance in distances.items()}, keyword_side], weights=weights
            )
            if mode == "hybrid" and options.short_chunk_penalty > 0:
                scores = self._discount_short_chunks(scores, options)
        best = self._diversify(scores, k, options.duplicate_similarity, vectors)
        if not best:
            return []
        documents = self._documents(best)
        results = []
        for key in best:
            document = documents[key]
            document.metadata.update(
                vector_rank=vector_ranks.get(key),
                vector_distance=distances.get(key),
                keyword_rank=keyword_ranks.get(key),
                keyword_score=keyword_scores.get(key),
            )
            results.append((document, scores[key]))
        return results

    def _fill_distances(
        self,
        vector: np.ndarray,
        vector_hits: dict[Key, float],
        keyword_hits: dict[Key, float],
        by_sentence: bool = False,
    ) -> tuple[dict[Key, np.ndarray], dict[Key, float]]:
        """The stored vectors of every candidate and the cosine distance of each to the query's ``vector``; with
        ``by_sentence``, the distance of its nearest stored sentence vector where it has them.

        With ``SearchOptions.fill_scores`` each side scores every candidate: without it, a chunk that one side
        ranks just past its ``depth`` candidates counts as that side's worst, however close it came (a paragraph
        BM25 ranks first and the 25th nearest by meaning loses to the 19th nearest that shares nothing with the
        query). Here the vector side's part: the distances come from the stored vectors, which the near-duplicate
        cut reads anyway; the full-text scores of the vector side's candidates come with the keyword query.
        """
        candidates = list(dict.fromkeys([*vector_hits, *keyword_hits]))
        vectors, sentence_vectors = self._vectors(candidates, sentences=by_sentence)
        unit = vector / (float(np.linalg.norm(vector)) or 1.0)
        distances = {
            key: vector_hits[key] if key in vector_hits else 1.0 - _cosine(vectors[key], unit) for key in candidates
        }
        for key, sentences in sentence_vectors.items():
            distances[key] = 1.0 - float((sentences @ unit).max())
        return vectors, distances

    def _discount_short_chunks(self, scores: dict[Key, float], options: SearchOptions) -> dict[Key, float]:
        """``scores`` (fused, so not below 0) with each chunk shorter than ``options.short_chunk_chars`` discounted in
        proportion to how much shorter it is (``SearchOptions.short_chunk_penalty``), best first again."""
        lengths = self._lengths(list(scores))
        discounted = {
            key: score * (1.0 - options.short_chunk_penalty * max(0.0, 1.0 - lengths[key] / options.short_chunk_chars))
            for key, score in scores.items()
        }
        return dict(sorted(discounted.items(), key=lambda item: item[1], reverse=True))

    def _diversify(
        self,
        scores: dict[Key, float],
        k: int,
        duplicate_similarity: float,
        vectors: dict[Key, np.ndarray] | None = None,
    ) -> list[Key]:
        """Up to ``k`` keys in fused order, skipping any chunk nearly identical to one already taken.

        Near-duplicates (the same paragraph in two files, a re-uploaded page, overlapping neighbours) would
        otherwise fill the sources with one passage; cosine similarity of their vectors finds them. This is
        a hard cut rather than MMR's weighted trade-off: fused RRF scores of neighbouring ranks differ by
        about 1%, so any weighted diversity term reorders distinct relevant chunks too. ``vectors``, when given,
        are the candidates' stored vectors, already read.
        """
        candidates = list(scores)
        if duplicate_similarity >= 1.0 or len(candidates) <= 1:
            return candidates[:k]
        if vectors is None:
            vectors, _ = self._vectors(candidates)
        picked: list[Key] = []
        for key in candidates:
            vector = vectors.get(key)
            if vector is None or any(float(vector @ vectors[other]) >= duplicate_similarity for other in picked):
                continue
            picked.append(key)
            if len(picked) == k:
                break
        return picked

    @staticmethod
    @abstractmethod
    def _filter_sql(filters: Filters | None) -> tuple[str, list[Any]]:
        """The store's SQL condition (and parameters) for ``filters``; see ``filter_values``."""

    @abstractmethod
    def _vector_hits(self, vector: np.ndarray, depth: int, where: str, params: list[Any]) -> dict[Key, float]:
        """``{key: cosine distance}`` of the ``depth`` chunks nearest the query's ``vector`` passing the filter, nearest
        first."""

    @abstractmethod
    def _keyword_hits(
        self, query: str, depth: int, where: str, params: list[Any], title_weight: float, scored: Sequence[Key]
    ) -> tuple[dict[Key, float], dict[Key, float]]:
        """``{key: full-text score}`` of the ``depth`` best full-text matches passing the filter, best first, and the
        scores of the chunks among ``scored`` that share a word with the query (for ``fill_scores``)."""

    @abstractmethod
    def _vectors(
        self, keys: Sequence[Key], *, sentences: bool = False
    ) -> tuple[dict[Key, np.ndarray], dict[Key, np.ndarray]]:
        """The stored (unit-length) vectors of ``keys`` and, with ``sentences``, the stored ``(sentences, dim)``
        sentence vectors of those that have any (else an empty dict), read together."""

    @abstractmethod
    def _lengths(self, keys: Sequence[Key]) -> dict[Key, int]:
        """The length in characters of each of ``keys``' text."""

    @abstractmethod
    def _documents(self, keys: Sequence[Key]) -> dict[Key, Document]:
        """The documents of ``keys``."""

    def similarity_search_with_score(self, query: str, k: int = 4, **kwargs: Any) -> list[tuple[Document, float]]:
        return self.search(query, k, mode=kwargs.get("mode", "hybrid"), filters=kwargs.get("filter"))

    def similarity_search(self, query: str, k: int = 4, **kwargs: Any) -> list[Document]:
        return [document for document, _ in self.similarity_search_with_score(query, k, **kwargs)]


# Hamming candidates per result re-ranked by exact cosine in unfiltered vector search. The scan costs the same for
# any number kept and the re-rank little (about 6 ms for 960 at 100k chunks), and fewer lose true neighbours: at
# 48x, recall@10 against exact search is 0.99 on 100k near-duplicate chunks (bench/retrieval_latency.py), 0.9998
# on mini-Wikipedia's dev questions and 1.0 on XQuAD's; at 8x it is 0.92 and 0.99.
_CANDIDATE_FACTOR = 48


def _words(bits: bytes) -> np.ndarray:
    """Sign bits as 64-bit words, zero-padded to a whole word (padding is equal everywhere: it adds no distance)."""
    return np.frombuffer(bits.ljust(-(-len(bits) // 8) * 8, b"\0"), dtype=np.uint64)


@dataclass(frozen=True)
class SignBits:
    """Every chunk's sign bits (``vec_quantize_binary`` of its vector) in memory, as of one ``chunk_vectors_stamp``.

    The Hamming scan that picks vector candidates is a few vectorised numpy operations over this copy: about 2 ms
    at 100k chunks, where the same scan in SQL, one sqlite-vec call per chunk, took 25-50 ms. The copy holds 56
    bytes per chunk (4.8 MB of bits at 100k) and is read in about 150-250 ms at 100k, once per change to the chunks.
    """

    stamp: int
    rowids: np.ndarray
    # (words per vector, chunks): one row per 64-bit word, so the scan adds up whole rows (a sum along each
    # chunk's few words costs four times as much).
    words: np.ndarray

    @classmethod
    def read(cls, db: Database, stamp: int) -> SignBits:
        """The sign bits of every chunk in ``db`` (read from the bits index, their compact copy)."""
        rows = db.query("SELECT rowid, bits FROM chunks_quantized INDEXED BY chunks_quantized_bits")
        rowids = np.fromiter((rowid for rowid, _ in rows), dtype=np.int64, count=len(rows))
        words = np.ascontiguousarray(np.stack([_words(bits) for _, bits in rows]).T) if rows else np.zeros((0, 0))
        return cls(stamp, rowids, words)

    def nearest(self, bits: bytes, count: int) -> list[int]:
        """Rowids of the ``count`` chunks least Hamming-distant from ``bits`` (all of them when there are fewer),
        in no particular order."""
        if count >= len(self.rowids):
            return self.rowids.tolist()
        distances = np.zeros(len(self.rowids), dtype=np.uint32)
        for chunk_words, query_word in zip(self.words, _words(bits), strict=True):
            distances += np.bitwise_count(chunk_words ^ query_word)
        return self.rowids[np.argpartition(distances, count)[:count]].tolist()


class ChunkStore(HybridSearchStore[int]):
    """Hybrid (vector + keyword) chunk store in the railgraph SQLite file."""

    keyword_score_sign = -1.0
    _filter_sql = staticmethod(filter_sql)

    def __init__(self, db: Database, embeddings: Embeddings, options: SearchOptions | None = None) -> None:
        self.db = db
        self._embeddings = embeddings
        self.options = options or SearchOptions()
        self._sign_bits: SignBits | None = None

    def search(self, query: str, k: int = 5, **kwargs: Any) -> list[tuple[Document, float]]:
        """``HybridSearchStore.search`` in one read snapshot of the database.

        The search runs several queries; an ingest committing between them would otherwise mix a document's old
        and new chunks, or rank rows that are already gone.
        """
        with self.db.transaction(write=False):
            return super().search(query, k, **kwargs)

    @property
    def embeddings(self) -> Embeddings:
        return self._embeddings

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
        """Store ``texts``; an existing id is replaced. ``vectors``, when given, are their ``embedded_text`` vectors
        and ``sentence_vectors`` their sentence vectors (``embed_chunks``).

        An ingest embeds many units' chunks in one model call, before its write transaction, and passes them here.
        """
        texts = list(texts)
        metadatas = metadatas or [{} for _ in texts]
        ids = ids or [str(uuid.uuid4()) for _ in texts]
        if vectors is None:
            vectors, sentence_vectors = embed_chunks(
                self._embeddings,
                [embedded_text(text, metadata) for text, metadata in zip(texts, metadatas, strict=True)],
            )
        sentences = [sentence_blob(matrix) for matrix in sentence_vectors or [None] * len(texts)]
        with self.db.transaction() as conn:
            self._delete_ids(conn, ids)
            conn.executemany(
                "INSERT INTO chunks (id, doc_id, source, page, start_index, end_index, title, content, metadata)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
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
                    )
                    for chunk_id, text, metadata in zip(ids, texts, metadatas, strict=True)
                ],
            )
            rowids = dict(self._rowids(conn, ids))
            blobs = [np.asarray(vector, dtype=np.float32).tobytes() for vector in vectors]
            conn.executemany(
                "INSERT INTO chunks_quantized (rowid, bits, embedding, sentences)"
                " VALUES (?, vec_quantize_binary(?), ?, ?)",
                [
                    (rowids[chunk_id], blob, blob, matrix)
                    for chunk_id, blob, matrix in zip(ids, blobs, sentences, strict=True)
                ],
            )
            conn.executemany(
                "INSERT INTO chunks_fts (rowid, title, content) VALUES (?, ?, ?)",
                [
                    (rowids[chunk_id], metadata.get("title") or "", text)
                    for chunk_id, text, metadata in zip(ids, texts, metadatas, strict=True)
                ],
            )
        return ids

    @staticmethod
    def _rowids(conn: Any, ids: Sequence[str]) -> list[tuple[str, int]]:
        """(id, rowid) of the stored chunks among ``ids``, a few hundred ids per query (SQLite's variable limit)."""
        found = []
        for batch in in_batches(ids):
            found += conn.execute(f"SELECT id, rowid FROM chunks WHERE id IN {in_list(batch)}", batch).fetchall()
        return found

    @staticmethod
    def _delete_ids(conn: Any, ids: Sequence[str]) -> int:
        rowids = [(rowid,) for _, rowid in ChunkStore._rowids(conn, ids)]
        for table in ("chunks_quantized", "chunks_fts", "chunks"):
            conn.executemany(f"DELETE FROM {table} WHERE rowid = ?", rowids)
        return len(rowids)

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool:
        """Delete chunks by id (all chunks when ``ids`` is None)."""
        with self.db.transaction() as conn:
            if ids is None:
                for table in ("chunks_quantized", "chunks_fts", "chunks"):
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

    def _current_sign_bits(self) -> SignBits:
        """The in-memory sign bits of every chunk, read again when the chunks have changed since (by any connection).

        Called inside ``search``'s read snapshot, the stamp and the bits it reads are of the same state.
        """
        stamp = self.db.query("SELECT stamp FROM chunk_vectors_stamp")[0][0]
        if self._sign_bits is None or self._sign_bits.stamp != stamp:
            self._sign_bits = SignBits.read(self.db, stamp)
        return self._sign_bits

    def _vectors(
        self, keys: Sequence[int], *, sentences: bool = False
    ) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
        # The plain table, not vec0: vec0 reads one vector by walking a chunk blob (0.13 ms each) and scans the whole
        # table for `rowid IN (...)`.
        rows = self.db.query(
            f"SELECT rowid, embedding, {'sentences' if sentences else 'NULL'} FROM chunks_quantized"
            f" WHERE rowid IN {in_list(keys)}",
            tuple(keys),
        )
        vectors = {rowid: np.frombuffer(blob, dtype=np.float32) for rowid, blob, _ in rows}
        return vectors, {rowid: sentence_matrix(matrix) for rowid, _, matrix in rows if matrix is not None}

    def _lengths(self, keys: Sequence[int]) -> dict[int, int]:
        rows = self.db.query(f"SELECT rowid, length(content) FROM chunks WHERE rowid IN {in_list(keys)}", tuple(keys))
        return {rowid: length for rowid, length in rows}

    def _documents(self, keys: Sequence[int]) -> dict[int, Document]:
        marks = ",".join("?" * len(keys))
        rows = self.db.query(f"SELECT {_COLUMNS} FROM chunks c WHERE c.rowid IN ({marks})", tuple(keys))
        return {row[0]: self._document(row) for row in rows}

    def _vector_hits(self, vector: np.ndarray, depth: int, where: str, params: list[Any]) -> dict[int, float]:
        """``{rowid: cosine distance}`` of the ``depth`` chunks nearest ``vector`` passing the filter, nearest first."""
        blob = np.asarray(vector, dtype=np.float32).tobytes()
        if where == "1":
            # Candidates by Hamming distance between sign bits, re-ranked by exact cosine: exact outright while the
            # store holds no more chunks than there are candidates, so small stores need no path of their own.
            query_bits = self.db.query("SELECT vec_quantize_binary(?)", (blob,))[0][0]
            candidates = self._current_sign_bits().nearest(query_bits, depth * _CANDIDATE_FACTOR)
            rows: list[Any] = []
            for batch in in_batches(sorted(candidates)):
                rows += self.db.query(
                    "SELECT rowid, vec_distance_cosine(embedding, ?) AS distance FROM chunks_quantized"
                    f" WHERE rowid IN {in_list(batch)}",
                    (blob, *batch),
                )
            rows = sorted(rows, key=lambda row: row[1])[:depth]
        else:
            # A KNN cannot see the chunks table, so over-fetching and dropping could return too few; an exact scan
            # over only the filtered chunks is complete, and cheap: the plain table hands out a vector by rowid.
            rows = self.db.query(
                "SELECT q.rowid, vec_distance_cosine(q.embedding, ?) AS distance"
                f" FROM chunks c JOIN chunks_quantized q ON q.rowid = c.rowid WHERE {where} ORDER BY distance LIMIT ?",
                (blob, *params, depth),
            )
        return {row[0]: float(row[1]) for row in rows}

    def _keyword_hits(
        self, query: str, depth: int, where: str, params: list[Any], title_weight: float, scored: Sequence[int]
    ) -> tuple[dict[int, float], dict[int, float]]:
        """``{rowid: bm25}`` of the ``depth`` best full-text matches passing the filter, best first, and of those
        among ``scored`` that match."""
        match = fts_query(query)
        if not match:
            return {}, {}
        # The join to chunks is only needed for a filter; without one it costs more than the search.
        join = "" if where == "1" else " JOIN chunks c ON c.rowid = f.rowid"
        matches = (
            f"SELECT f.rowid, bm25(chunks_fts, ?, 1.0) AS score FROM chunks_fts f{join}"
            f" WHERE chunks_fts MATCH ? AND {where}"
        )
        if not scored:
            rows = self.db.query(f"{matches} ORDER BY score LIMIT ?", (title_weight, match, *params, depth))
            return {row[0]: float(row[1]) for row in rows}, {}
        # One full-text scan serves both: FTS5 evaluates the whole query for any MATCH, even one restricted by rowid,
        # so a second query for the scored chunks would cost as much as the first.
        rows = self.db.query(
            f"WITH matches AS MATERIALIZED ({matches})"
            " SELECT rowid, score, 1 FROM (SELECT rowid, score FROM matches ORDER BY score LIMIT ?)"
            f" UNION ALL SELECT rowid, score, 0 FROM matches WHERE rowid IN {in_list(scored)}",
            (title_weight, match, *params, depth, *scored),
        )
        best = sorted((row for row in rows if row[2]), key=lambda row: row[1])
        return {row[0]: float(row[1]) for row in best}, {row[0]: float(row[1]) for row in rows if not row[2]}

    @staticmethod
    def _document(row: Any) -> Document:
        metadata = json.loads(row[9])
        metadata.update(doc_id=row[2], source=row[3], page=row[4], start_index=row[5], end_index=row[6], title=row[7])
        return Document(id=row[1], page_content=row[8], metadata=metadata)

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
