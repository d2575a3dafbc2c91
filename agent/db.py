"""The one SQLite file behind railgraph: connections and every schema migration, in one place.

Chunks, vectors (with sqlite-vec's functions), full text (FTS5), the ingest records, the review queue and the audit
columns live here; LangGraph's checkpointer adds its own tables to the same file.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlean
import sqlite_vec

from agent.embeddings import EMBEDDING_DIM

# Values per ``IN (...)`` list: far below SQLite's limit on parameters (32,766) and cheap for Postgres to plan.
VALUES_PER_STATEMENT = 500


def in_batches(values: Sequence[Any]) -> Iterator[list[Any]]:
    """``values`` in lists of at most ``VALUES_PER_STATEMENT``, one ``IN (...)`` statement each."""
    for start in range(0, len(values), VALUES_PER_STATEMENT):
        yield list(values[start : start + VALUES_PER_STATEMENT])


def in_list(values: Sequence[Any]) -> str:
    """``(?, ?, ...)``: the placeholders of an ``IN`` list of ``values`` (``?`` serves SQLite and ``PgDatabase``)."""
    return f"({', '.join('?' for _ in values)})"


# Each entry upgrades the schema by one version (PRAGMA user_version); never edit a released entry.
MIGRATIONS: list[str] = [
    f"""
    CREATE TABLE chunks (
        rowid INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        doc_id TEXT NOT NULL,
        source TEXT NOT NULL,
        page INTEGER,
        start_index INTEGER,
        end_index INTEGER,
        title TEXT,
        content TEXT NOT NULL,
        metadata TEXT NOT NULL DEFAULT '{{}}'
    );
    CREATE INDEX chunks_doc_id ON chunks(doc_id);
    CREATE VIRTUAL TABLE chunks_vec USING vec0(embedding float[{EMBEDDING_DIM}] distance_metric=cosine);
    CREATE VIRTUAL TABLE chunks_fts USING fts5(title, content, tokenize='porter unicode61');
    CREATE TABLE reviews (
        id TEXT PRIMARY KEY,
        thread_id TEXT NOT NULL,
        question TEXT NOT NULL,
        draft TEXT NOT NULL,
        payload TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'pending',
        reviewer TEXT,
        final_text TEXT,
        reason TEXT,
        created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now')),
        decided_at TEXT
    );
    CREATE INDEX reviews_status ON reviews(status, created_at);
    """,
    # Ingest records (agent/records.py): which chunk keys each source unit holds, in the same file as the chunks
    # so that both change in one transaction. Files written by LangChain's SQLRecordManager keep their records.
    """
    CREATE TABLE ingest_records (
        namespace TEXT NOT NULL,
        key TEXT NOT NULL,
        group_id TEXT,
        updated_at REAL NOT NULL,
        PRIMARY KEY (namespace, key)
    );
    CREATE INDEX ingest_records_group ON ingest_records(namespace, group_id);
    CREATE INDEX ingest_records_updated ON ingest_records(namespace, updated_at);
    CREATE TABLE IF NOT EXISTS upsertion_record (
        uuid TEXT, key TEXT, namespace TEXT NOT NULL, group_id TEXT, updated_at REAL
    );
    INSERT OR REPLACE INTO ingest_records (namespace, key, group_id, updated_at)
        SELECT namespace, key, group_id, coalesce(updated_at, 0) FROM upsertion_record WHERE key IS NOT NULL;
    DROP TABLE upsertion_record;
    """,
    # Fast vector search (ChunkStore._vector_hits): each chunk's vector as sign bits, scanned whole by Hamming
    # distance for candidates, and its float vector again to re-rank them (and to scan filtered chunks) exactly. vec0
    # serves neither cheaply: its KNN cost grows with k, and it reads one vector by rowid by walking a 1.5 MB blob.
    # The index on bits is never searched: it is the compact copy that the Hamming scan reads.
    """
    CREATE TABLE chunks_quantized (
        rowid INTEGER PRIMARY KEY,
        bits BLOB NOT NULL,
        embedding BLOB NOT NULL
    );
    CREATE INDEX chunks_quantized_bits ON chunks_quantized(bits);
    INSERT INTO chunks_quantized (rowid, bits, embedding)
        SELECT rowid, vec_quantize_binary(embedding), embedding FROM chunks_vec;
    """,
    # The review flow (agent/review.py): why a draft went to review; the resume lease (who resumes the thread
    # after a decision, so a crashed reviewer's decision is resumed later, once); and the append-only audit log,
    # written in the same transaction as each decision. The triggers make "append-only" the database's rule.
    """
    ALTER TABLE reviews ADD COLUMN flags TEXT NOT NULL DEFAULT '[]';
    ALTER TABLE reviews ADD COLUMN resume_claimed_at TEXT;
    ALTER TABLE reviews ADD COLUMN resumed_at TEXT;
    CREATE TABLE review_audit (
        id INTEGER PRIMARY KEY,
        review_id TEXT NOT NULL,
        thread_id TEXT NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        at TEXT NOT NULL,
        before_text TEXT,
        after_text TEXT,
        reason TEXT
    );
    CREATE INDEX review_audit_review ON review_audit(review_id, id);
    CREATE INDEX review_audit_at ON review_audit(at);
    CREATE TRIGGER review_audit_no_update BEFORE UPDATE ON review_audit
        BEGIN SELECT RAISE(ABORT, 'review_audit is append-only'); END;
    CREATE TRIGGER review_audit_no_delete BEFORE DELETE ON review_audit
        BEGIN SELECT RAISE(ABORT, 'review_audit is append-only'); END;
    """,
    # chunks_quantized holds every float vector (and its sign bits) that search reads: vec0's copy was written on
    # every ingest and never read, a third of an ingest's own write time and 1.5 KB per chunk.
    """
    DROP TABLE chunks_vec;
    """,
    # Each chunk's sentence vectors (agent.embeddings.MiniLMEmbeddings.encode_with_sentences, stored by
    # agent.store.sentence_blob): hybrid search scores a candidate by its best sentence
    # (SearchOptions.sentence_scores). NULL for chunks written before this version or by other embeddings: they
    # keep their whole-text vector.
    """
    ALTER TABLE chunks_quantized ADD COLUMN sentences BLOB;
    """,
    # ChunkStore keeps every chunk's sign bits in memory for the Hamming scan and reads this stamp to know its copy
    # is current: every change to chunks_quantized, by any connection, replaces it. A random number rather than a
    # counter, so that a rolled-back write followed by another can never bring back the value a copy was taken at.
    """
    CREATE TABLE chunk_vectors_stamp (stamp INTEGER NOT NULL);
    INSERT INTO chunk_vectors_stamp VALUES (random());
    CREATE TRIGGER chunks_quantized_inserted AFTER INSERT ON chunks_quantized
        BEGIN UPDATE chunk_vectors_stamp SET stamp = random(); END;
    CREATE TRIGGER chunks_quantized_updated AFTER UPDATE ON chunks_quantized
        BEGIN UPDATE chunk_vectors_stamp SET stamp = random(); END;
    CREATE TRIGGER chunks_quantized_deleted AFTER DELETE ON chunks_quantized
        BEGIN UPDATE chunk_vectors_stamp SET stamp = random(); END;
    """,
]


def _statements(script: str) -> Iterator[str]:
    """The statements of a migration script: split at semicolons, except those inside a trigger's body."""
    pending = ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlean.complete_statement(pending):
            if pending.strip(" \n;"):
                yield pending
            pending = ""


def connect(path: Path | str) -> Any:
    """A connection through sqlean, the one SQLite library railgraph uses in a process.

    Two SQLite libraries in one process (Python's ``sqlite3`` and sqlean) must never open the same file:
    POSIX locks belong to the process, so one library closing its descriptor drops the other's locks, and
    committed rows were seen to vanish. The checkpointer and the record manager connect through here too.
    """
    conn = sqlean.connect(str(path), check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    # In WAL mode NORMAL still never corrupts the file; it skips an fsync per commit (a checkpoint is
    # written after every node), at the risk of losing the last commits on power loss, not on a crash.
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


class Database:
    """A thread-safe connection to the railgraph SQLite file, with sqlite-vec loaded.

    ``sqlean`` is used instead of the standard ``sqlite3`` because many Python builds cannot load SQLite
    extensions; sqlean bundles a recent SQLite that can.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        if str(self.path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = connect(self.path)
        # Transactions are explicit (``transaction()``), so Python must not open any implicitly.
        self._conn.isolation_level = None
        self._conn.enable_load_extension(True)
        sqlite_vec.load(self._conn)
        self._conn.enable_load_extension(False)
        self._lock = threading.RLock()
        # How many transaction() calls the thread holding the lock is inside; nested ones join the outermost.
        self._depth = 0
        self._migrate()

    def _migrate(self) -> None:
        with self.transaction() as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                for statement in _statements(script):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {number}")

    @contextmanager
    def transaction(self, *, write: bool = True) -> Iterator[Any]:
        """One transaction: all of it lands, or none of it.

        ``write`` takes the write lock up front (``BEGIN IMMEDIATE``), so a transaction that reads and then
        writes never fails half-way on a lock; ``write=False`` is a read snapshot (``BEGIN``): every query in
        it sees the database as of its first read, whatever other connections commit meanwhile.

        A nested call joins the outer transaction: its writes commit when the outermost call ends, so several
        components' writes (chunks, ingest records) land together. It runs inside a savepoint, so an error it
        raises undoes its own writes even when the caller catches the error and goes on.
        """
        with self._lock:
            if self._depth:
                savepoint = f"nested_{self._depth}"
                self._conn.execute(f"SAVEPOINT {savepoint}")
                self._depth += 1
                try:
                    yield self._conn
                except BaseException:
                    self._conn.execute(f"ROLLBACK TO {savepoint}")
                    raise
                finally:
                    self._depth -= 1
                    self._conn.execute(f"RELEASE {savepoint}")
                return
            self._conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            self._depth = 1
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            finally:
                self._depth = 0
            self._conn.execute("COMMIT")

    def query(self, sql: str, params: tuple[Any, ...] | dict[str, Any] = ()) -> list[sqlite3.Row]:
        """Rows of one read query, as tuples."""
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def close(self) -> None:
        with self._lock:
            self._conn.close()
