"""Rows of a SQL query as sources: a SQLAlchemy URL and a query in, one ``SourceUnit`` per row out.

LangChain's ``SQLDatabaseLoader`` runs the query (it works with SQLAlchemy 2); this module chooses each row's text
and metadata, gives the row a stable id under the query's scope, and turns every failure into one ``LoadError``
line. Passwords never appear in ids or messages. The connection is read-only on SQLite and PostgreSQL (psycopg),
so an ingest cannot change the database it reads.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from datetime import date, time
from pathlib import Path
from typing import Any

from langchain_community.document_loaders import SQLDatabaseLoader
from langchain_community.utilities import SQLDatabase
from langchain_core.documents import Document
from sqlalchemy import URL, create_engine, event, make_url
from sqlalchemy.engine import Engine
from sqlalchemy.exc import ArgumentError, DBAPIError

from loaders.files import LoadError, document_id, fields_text
from loaders.sources import SourceUnit

__all__ = ["sql_scope", "sql_units"]

# Query parameters that can carry a secret (libpq takes ``?password=``); they are left out like the password.
_SECRET_PARAMETER = re.compile(r"pass|secret|token|key", re.IGNORECASE)
# The password of a URL that SQLAlchemy cannot parse, so that even that one is shown without it.
_RAW_PASSWORD = re.compile(r"(://[^:/@]*:)[^@]*@")
_MASK = "***"
# Metadata keys that every Document has; a metadata column may set "title" but not these.
_RESERVED = frozenset({"source", "doc_id", "type", "page"})
_URL_HINT = "give a SQLAlchemy URL such as sqlite:///path/to/file.db or postgresql://user:password@host/database"


def _shown(url: URL) -> str:
    """The URL as ids and messages show it: the password masked, secret-looking query parameters left out."""
    secrets = [name for name in url.query if _SECRET_PARAMETER.search(name)]
    return url.difference_update_query(secrets).render_as_string(hide_password=True)


def _sqlite_file(url: URL) -> str | None:
    """The file a SQLite URL names by path; None for other databases, in-memory ones and ``?uri=true`` forms."""
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:") or url.query.get("uri"):
        return None
    return url.database


def _parse(url: str) -> URL:
    """The parsed URL, a SQLite file's path made absolute (so the scope does not depend on the working folder)."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise LoadError(_RAW_PASSWORD.sub(rf"\1{_MASK}@", url), f"invalid database URL ({exc})", _URL_HINT) from exc
    if (path := _sqlite_file(parsed)) is not None:
        parsed = parsed.set(database=str(Path(path).expanduser().resolve()))
    return parsed


def _scope(url: URL, query: str) -> str:
    key = hashlib.sha256(" ".join(query.split()).encode("utf-8")).hexdigest()[:16]
    return f"{_shown(url)}#query={key}/"


def sql_scope(url: str, query: str) -> str:
    """The id prefix shared by every unit of ``url`` + ``query``, ending in "/": ``{url}#query={hash}/``.

    The URL is shown without its password; the query's hash ignores how its whitespace is laid out.

    Raises:
        LoadError: when ``url`` is not a SQLAlchemy URL.
    """
    return _scope(_parse(url), query)


def _engine(url: URL, shown: str) -> Engine:
    """An engine whose connections cannot write, on SQLite and on PostgreSQL through libpq (psycopg)."""
    backend = url.get_backend_name()
    if (path := _sqlite_file(url)) is not None and not Path(path).is_file():
        # SQLite would create an empty file and then report "no such table".
        raise LoadError(shown, f"database file not found: {path}", "check the path in the URL")
    try:
        if backend == "postgresql" and url.get_driver_name() in ("psycopg", "psycopg2"):
            # libpq's startup options: every transaction of the session is read-only.
            engine = create_engine(url, connect_args={"options": "-c default_transaction_read_only=on"})
        else:
            engine = create_engine(url)
    except (ArgumentError, ImportError) as exc:
        raise LoadError(
            shown,
            f"cannot use this database URL ({type(exc).__name__}: {exc})",
            f"install the database's SQLAlchemy driver, or {_URL_HINT}",
        ) from exc
    if backend == "sqlite":
        event.listen(engine, "connect", lambda connection, _record: connection.execute("PRAGMA query_only = ON"))
    return engine


def _driver_message(exc: Exception, url: URL) -> str:
    """The database's own words for a failure, without SQLAlchemy's wrapping and never with the password."""
    message = str(exc.orig) if isinstance(exc, DBAPIError) and exc.orig is not None else f"{type(exc).__name__}: {exc}"
    return message.replace(url.password, _MASK) if url.password else message


def _plain(value: Any) -> Any:
    """A metadata value that JSON (and so LangChain's indexing hash) can hold."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, date | time):
        return value.isoformat()
    return str(value)


def _text(value: Any) -> str:
    return "" if value is None else str(_plain(value))


class _Rows:
    """Row -> text and metadata for SQLDatabaseLoader, checking the chosen columns against the first row."""

    def __init__(
        self,
        shown: str,
        content_columns: Sequence[str] | None,
        metadata_columns: Sequence[str],
        id_column: str | None,
    ) -> None:
        self.shown = shown
        self.chosen_content = None if content_columns is None else list(content_columns)
        self.metadata_columns = list(metadata_columns)
        self.id_column = id_column
        self.content_columns: list[str] = []  # set from the first row

    def _check(self, row: Mapping[str, Any]) -> None:
        columns = list(row.keys())
        chosen = [
            *((name, "content_columns") for name in self.chosen_content or ()),
            *((name, "metadata_columns") for name in self.metadata_columns),
            *(((self.id_column, "id_column"),) if self.id_column is not None else ()),
        ]
        for name, option in chosen:
            if name not in columns:
                raise LoadError(
                    self.shown,
                    f"column {name!r} ({option}) is not in the query's result, whose columns are {', '.join(columns)}",
                    "choose one of those columns, or add it to the query's SELECT",
                )
        content = self.chosen_content
        if content is None:
            content = [name for name in columns if name not in self.metadata_columns]
        if not content:
            raise LoadError(
                self.shown,
                "no column is left for the text: every column is a metadata column",
                "choose content_columns, or fewer metadata_columns",
            )
        self.content_columns = content

    def content(self, row: Mapping[str, Any]) -> str:
        """One content column: its value; several: "column: value" lines; "" when they are all empty."""
        if not self.content_columns:
            self._check(row)
        values = [_text(row[name]) for name in self.content_columns]
        if not any(value.strip() for value in values):
            return ""
        return values[0] if len(values) == 1 else fields_text(zip(self.content_columns, values, strict=True))

    def metadata(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """The metadata columns' values, and the id column's, under their own names."""
        if not self.content_columns:
            self._check(row)
        names = [*self.metadata_columns, *([self.id_column] if self.id_column is not None else [])]
        return {name: _plain(row[name]) for name in names}


def _title(url: URL, metadata: Mapping[str, Any], id_column: str | None) -> str:
    """A chosen "title" column's value, else the database's name and the row's id (stable, unlike a row number)."""
    if str(metadata.get("title") or "").strip():
        return " ".join(str(metadata["title"]).split())
    name = Path(url.database).name if url.get_backend_name() == "sqlite" and url.database else url.database
    database = name or url.host or url.get_backend_name()
    return f"{database}: {id_column} {metadata[id_column]}" if id_column is not None else database


def _row_documents(
    url: URL,
    query: str,
    content_columns: Sequence[str] | None,
    metadata_columns: Sequence[str],
    id_column: str | None,
) -> list[Document]:
    """Every row of the query as a Document with its final metadata; any failure is one LoadError."""
    shown = _shown(url)
    clashes = sorted(_RESERVED.intersection(metadata_columns))
    if clashes:
        raise LoadError(
            shown,
            f"metadata column(s) {', '.join(clashes)} would overwrite the metadata every Document has",
            "rename them in the query (SELECT source AS origin ...)",
        )
    rows = _Rows(shown, content_columns, metadata_columns, id_column)
    engine = _engine(url, shown)
    try:
        try:
            # lazy_table_reflection: the query is all it runs; reflecting every table would cost a scan of the schema.
            database = SQLDatabase(engine, lazy_table_reflection=True)
        except DBAPIError as exc:
            raise LoadError(
                shown,
                f"cannot connect to the database ({_driver_message(exc, url)})",
                "check that the server is running and the URL's host, port, database, user and password",
            ) from exc
        loader = SQLDatabaseLoader(query, database, page_content_mapper=rows.content, metadata_mapper=rows.metadata)
        try:
            loaded = loader.load()
        except LoadError:
            raise
        except Exception as exc:
            raise LoadError(
                shown,
                f"the query failed ({_driver_message(exc, url)})",
                "check the SQL (a read-only SELECT), e.g. in the database's own shell",
            ) from exc
    finally:
        engine.dispose()

    scope = _scope(url, query)
    documents: list[Document] = []
    seen: dict[str, int] = {}
    for number, loaded_doc in enumerate(loaded, 1):
        if not loaded_doc.page_content:  # every content column empty: nothing to index
            continue
        metadata = loaded_doc.metadata
        if id_column is not None:
            if metadata[id_column] is None:
                raise LoadError(
                    shown, f"row {number} has no value in the id column {id_column!r}", "choose a NOT NULL id_column"
                )
            row_id = str(metadata[id_column])
            if row_id in seen:
                raise LoadError(
                    shown,
                    f"the id column {id_column!r} is not unique: {row_id!r} is in rows {seen[row_id]} and {number}",
                    "choose a unique id_column, such as the table's primary key",
                )
        else:
            values = json.dumps([loaded_doc.page_content, metadata], sort_keys=True)
            row_id = hashlib.sha256(values.encode("utf-8")).hexdigest()[:16]
            if row_id in seen:  # the same content and metadata again: one copy is enough
                continue
        seen[row_id] = number
        title = _title(url, metadata, id_column)
        if id_column is not None and id_column not in metadata_columns:
            del metadata[id_column]
        source = f"{scope}{row_id}"
        metadata.update(source=source, doc_id=document_id(source), title=title, type="sql", page=None)
        documents.append(Document(page_content=loaded_doc.page_content, metadata=metadata))
    return documents


def sql_units(
    url: str,
    query: str,
    *,
    content_columns: Sequence[str] | None = None,
    metadata_columns: Sequence[str] = (),
    id_column: str | None = None,
) -> Iterator[SourceUnit]:
    """A ``SourceUnit`` per row of ``query`` on the database at ``url`` (a SQLAlchemy URL), each one Document.

    The Document's text is the ``content_columns`` (default: every column that is not a metadata column): one
    column's value as it is, several as "column: value" lines; rows whose content is empty are left out. Its
    metadata is the ``metadata_columns`` (a column named ``title`` also titles the Document) plus ``source``
    (``f"{sql_scope(url, query)}{row id}"``, the row id being ``id_column``'s value, else a hash of the row's
    content and metadata, so identical rows count once), ``doc_id``, ``title`` (else the database's name and the
    row's id), ``type`` ("sql") and ``page`` (None).

    The query runs, and every row is read, when iteration starts: a bad URL, an unreachable server, bad SQL, an
    unknown column, or an id column with empty or repeated values raises one ``LoadError`` (source: the URL
    without its password) before any unit is yielded.
    """
    documents = _row_documents(_parse(url), query, content_columns, metadata_columns, id_column)
    for document in documents:
        yield SourceUnit(document.metadata["source"], lambda document=document: [document])
