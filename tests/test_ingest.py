"""Incremental, atomic ingest into the real SQLite store, with the real MiniLM embeddings and real documents."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest
import sqlean
from langchain_core.embeddings import Embeddings

from agent.db import Database, connect
from agent.embeddings import default_embeddings
from agent.store import ChunkStore, SearchOptions
from loaders.ingest import EMBED_BATCH_FIRST, IngestReport, file_units, ingest

EXAMPLES = "unstructured_example_docs"
# Small real text files of several types: many units, few chunks each.
TEXT_FILES = (
    "language-docs_eng_spa_mult.md",
    "codeblock.md",
    "fake-text.txt",
    "fake-html.html",
    "fake-html-cp1252.html",
    "example-steelJIS-datasheet.html",
    "simple-table.md",
    "umlauts-utf8.md",
    "example-10k-1p.html",
)


class CountingEmbeddings(Embeddings):
    """The real MiniLM embeddings, counting the calls and texts an ingest asks for (an observation, not a mock)."""

    def __init__(self) -> None:
        self.inner = default_embeddings()
        self.calls = 0
        self.texts = 0

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        self.calls += 1
        self.texts += len(texts)
        return self.inner.embed_documents(texts)

    def embed_query(self, text: str) -> list[float]:
        return self.inner.embed_query(text)


@pytest.fixture
def embeddings() -> CountingEmbeddings:
    return CountingEmbeddings()


@pytest.fixture
def store(tmp_path: Path, embeddings: CountingEmbeddings) -> ChunkStore:
    return ChunkStore(Database(tmp_path / "railgraph.db"), embeddings)


def chunk_set(db: Database) -> Counter[tuple[str, str, int]]:
    """The stored chunks as (source, content, start_index), with how often each is stored."""
    return Counter(db.query("SELECT source, content, start_index FROM chunks"))


def assert_tables_in_step(db: Database) -> None:
    """Every chunk has exactly one vector, one full-text row and one ingest record, and nothing else has any."""
    rowids = {row[0] for row in db.query("SELECT rowid FROM chunks")}
    assert {row[0] for row in db.query("SELECT rowid FROM chunks_quantized")} == rowids
    assert {row[0] for row in db.query("SELECT rowid FROM chunks_fts")} == rowids
    ids = [row[0] for row in db.query("SELECT id FROM chunks")]
    assert sorted(ids) == sorted(row[0] for row in db.query("SELECT key FROM ingest_records"))


def units_committed(path: Path) -> int:
    """How many units an ingest writing ``path`` (in another process) has committed so far."""
    if not path.exists():
        return 0
    # connect(), not Database(): the writer owns the schema, and this must not migrate or lock anything.
    conn = connect(path)
    try:
        return conn.execute("SELECT count(DISTINCT group_id) FROM ingest_records").fetchone()[0]
    except sqlean.OperationalError:
        return 0  # the writer has not created its tables yet
    finally:
        conn.close()


def copies(documents_dir: Path, folder: Path, count: int) -> Path:
    """``count`` copies of the small text files, each copy in its own sub-folder."""
    for n in range(count):
        target = folder / f"copy-{n:02d}"
        target.mkdir(parents=True)
        for name in TEXT_FILES:
            shutil.copy(documents_dir / EXAMPLES / name, target / name)
    return folder


def test_reingest_of_unchanged_files_adds_deletes_and_embeds_nothing(
    store: ChunkStore, embeddings: CountingEmbeddings, documents_dir: Path
) -> None:
    files = [documents_dir / EXAMPLES / name for name in ("csv-with-long-lines.csv", "fake-text.txt")]
    first = ingest(file_units(files), store)
    assert first.added == first.chunks > 100 and store.count() == first.added
    assert embeddings.texts == first.added
    embeddings.texts = 0
    second = ingest(file_units(files), store)
    assert (second.added, second.deleted, second.skipped) == (0, 0, first.added)
    assert embeddings.texts == 0, "unchanged chunks are never embedded again"
    assert store.count() == first.added


def test_many_small_files_share_model_calls(
    store: ChunkStore, embeddings: CountingEmbeddings, tmp_path: Path, documents_dir: Path
) -> None:
    folder = copies(documents_dir, tmp_path / "docs", 5)
    report = ingest(file_units([folder]), store, batch_chunks=256)
    assert report.units == 5 * len(TEXT_FILES) and not report.failed
    assert report.added == embeddings.texts < EMBED_BATCH_FIRST + 256
    assert embeddings.calls == 2, "45 small files are embedded in two calls (64 chunks first, then the rest)"
    assert_tables_in_step(store.db)


def test_a_changed_file_replaces_exactly_its_old_chunks(
    store: ChunkStore, embeddings: CountingEmbeddings, tmp_path: Path, documents_dir: Path
) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    shutil.copy(documents_dir / EXAMPLES / "norwich-city.txt", folder / "norwich.txt")
    note = folder / "note.txt"
    note.write_text("The office moved to Oslo in 2021.\n\nThe canteen opens at eight.\n")
    before = ingest(file_units([folder]), store)
    norwich_chunks = before.chunks - 1

    note.write_text("The office moved to Bergen in 2023.\n")
    embeddings.texts = 0
    after = ingest(file_units([folder]), store)
    assert (after.added, after.deleted, after.skipped) == (1, 1, norwich_chunks)
    assert embeddings.texts == 1, "only the changed chunk is embedded"
    texts = [document.page_content for document, _ in store.search("Where did the office move?", 3)]
    assert any("Bergen" in text for text in texts) and not any("Oslo" in text for text in texts)
    assert_tables_in_step(store.db)


def test_one_unreadable_file_does_not_stop_the_others(store: ChunkStore, tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "good.md").write_text("# Notes\n\nThe launch date is the fourth of May.\n")
    (folder / "empty.txt").write_bytes(b"")
    (folder / "broken.pdf").write_bytes(b"%PDF-1.7\n garbage")
    report = ingest(file_units([folder]), store)
    assert report.added == 1
    assert sorted(Path(failure["source"]).name for failure in report.failed) == ["broken.pdf", "empty.txt"]


def test_sync_deletes_unseen_files_in_scope_only(store: ChunkStore, tmp_path: Path, documents_dir: Path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    for name in ("fake-text.txt", "codeblock.md", "fake-html.html"):
        shutil.copy(documents_dir / EXAMPLES / name, folder / name)
    outside = tmp_path / "elsewhere.md"
    shutil.copy(documents_dir / EXAMPLES / "language-docs_eng_spa_mult.md", outside)
    # A sibling folder whose name starts like the synced one's: outside the scope "docs/".
    sibling = tmp_path / "docs-old"
    sibling.mkdir()
    shutil.copy(documents_dir / EXAMPLES / "umlauts-utf8.md", sibling / "umlauts.md")
    ingest(file_units([folder, outside, sibling]), store)
    sources = {row[0] for row in store.db.query("SELECT DISTINCT source FROM chunks")}
    assert len(sources) == 5

    (folder / "fake-text.txt").unlink()
    # Binary bytes under a text name: this run cannot load it, so its old chunks must stay.
    (folder / "codeblock.md").write_bytes(bytes(range(256)) * 8)
    scope = [f"{folder.resolve()}/"]
    plain = ingest(file_units([folder]), store, scopes=scope)
    assert plain.deleted == 0 and len(plain.failed) == 1, "without sync nothing outside the seen units is deleted"

    synced = ingest(file_units([folder]), store, scopes=scope, sync=True)
    assert synced.deleted == 1 and synced.added == 0
    remaining = {row[0] for row in store.db.query("SELECT DISTINCT source FROM chunks")}
    assert remaining == sources - {str((folder / "fake-text.txt").resolve())}
    assert_tables_in_step(store.db)


def test_a_killed_ingest_leaves_whole_units_and_a_rerun_converges(tmp_path: Path, documents_dir: Path) -> None:
    """SIGKILL a real ``railgraph ingest`` mid-way, then run it again: the result equals one clean run."""
    folder = copies(documents_dir, tmp_path / "docs", 5)
    # Small chunks: several embedding batches, so the kill lands between (or inside) unit commits.
    settings = {"RAILGRAPH_CHUNK_SIZE": "200", "RAILGRAPH_CHUNK_OVERLAP": "0"}
    clean = ChunkStore(Database(tmp_path / "clean.db"), default_embeddings())
    clean_report = ingest(file_units([folder]), clean, chunk_size=200, chunk_overlap=0)
    expected = chunk_set(clean.db)
    sources = {source for source, _, _ in expected}
    assert not clean_report.failed and len(sources) == 5 * len(TEXT_FILES)

    crashed = tmp_path / "crashed.db"
    env = os.environ | settings | {"RAILGRAPH_DB": f"sqlite:///{crashed}"}
    command = [sys.executable, "-m", "agent.cli", "ingest", str(folder), "--json"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while process.poll() is None and not units_committed(crashed):
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    assert process.returncode == -signal.SIGKILL, "the ingest was still running when killed"

    partial = Database(crashed)
    stored = chunk_set(partial)
    present = {source for source, _, _ in stored}
    assert 0 < len(present) < len(sources), "the kill came after some units committed, before all did"
    # Every unit is wholly there (as in the clean run) or not at all.
    assert stored == Counter({key: n for key, n in expected.items() if key[0] in present})
    assert_tables_in_step(partial)
    partial.close()

    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    final = Database(crashed)
    assert chunk_set(final) == expected
    assert max(chunk_set(final).values()) == 1, "no chunk is stored twice"
    assert_tables_in_step(final)


def versions_seen_while(
    write: Callable[[], IngestReport], reader: ChunkStore, source: str
) -> tuple[IngestReport, list[set[str]]]:
    """Run ``write`` while ``reader`` searches ``source`` in a loop (from before the write starts until after it
    ends); its report, and for each search the document versions its chunks come from."""
    seen: list[set[str]] = []
    errors: list[BaseException] = []
    reading = threading.Event()
    written = threading.Event()

    def read() -> None:
        try:
            while True:
                last = written.is_set()
                # Keyword mode makes no model call between searches, so the queries run all through the commits.
                hits = reader.search("lighthouse keeper", 10, mode="keyword", filters={"source": source})
                seen.append({document.page_content.rsplit("(", 1)[1].split(" ")[0] for document, _ in hits})
                reading.set()
                if last:
                    return
        except BaseException as error:
            errors.append(error)
            reading.set()

    thread = threading.Thread(target=read)
    thread.start()
    reading.wait()
    try:
        report = write()
    finally:
        written.set()
        thread.join()
    if errors:
        raise errors[0]
    return report, seen


def test_readers_never_see_a_mix_of_old_and_new_chunks(store: ChunkStore, tmp_path: Path) -> None:
    """Searches on their own connection, in a loop, while a long document is replaced (three times) by an ingest."""

    def document(version: str) -> str:
        return "\n\n".join(
            f"{version} edition, paragraph {n}: the lighthouse keeper on Skerry {n} logs the weather, trims the"
            f" wick and writes down every ship that passes the rocks at night ({version} text)."
            for n in range(80)
        )

    def replace(version: str) -> IngestReport:
        path.write_text(document(version))
        return ingest(file_units([path]), store)

    path = tmp_path / "lighthouse.txt"
    first = replace("v0")
    assert first.added > 10
    # Near-duplicate chunks are kept, so every result holds many chunks of the document.
    reader = ChunkStore(Database(store.db.path), default_embeddings(), SearchOptions(duplicate_similarity=1.0))
    for old, new in [("v0", "v1"), ("v1", "v2"), ("v2", "v3")]:
        report, seen = versions_seen_while(partial(replace, new), reader, str(path.resolve()))
        assert report.added == report.deleted == first.added
        assert all(len(versions) == 1 for versions in seen), [versions for versions in seen if len(versions) != 1]
        assert seen[0] == {old} and seen[-1] == {new}


def test_ingested_chunks_are_embedded_with_their_headings(tmp_path: Path) -> None:
    """The same words under two headings: only the headings in each chunk's vector tell them apart."""
    step = "Run the command below, then restart the service."
    guide = tmp_path / "guide.md"
    guide.write_text(f"# Install from source\n\n{step}\n\n# Uninstall\n\n{step}\n", encoding="utf-8")
    store = ChunkStore(
        Database(tmp_path / "railgraph.db"),
        default_embeddings(),
        SearchOptions(duplicate_similarity=1.0, relevance_floor=0.0),
    )
    assert ingest(file_units([guide]), store).added == 2
    for question, heading in [("How do I uninstall it?", "Uninstall"), ("How do I install from source?", "Install")]:
        best, _ = store.search(question, 2, mode="vector")[0]
        assert best.metadata["headings"].startswith(heading)
