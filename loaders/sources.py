"""What an ingest indexes: source units from files, web pages and database rows.

Every kind of source (a file, a crawled page, a row of a SQL query) becomes a ``SourceUnit``: an id and a way to
load it. The ingest indexes one unit at a time, so a unit's chunks are added, replaced and deleted together, and
one unit that fails to load is reported without stopping the others.

Unit ids are also what ``--sync`` works on: a *scope* is an id prefix (a folder's path with a trailing ``/``, a
site's origin, a database query's key), and a synced ingest deletes the chunks of every unit inside its scopes
that the run did not see.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from langchain_core.documents import Document

__all__ = ["SourceUnit"]


@dataclass(frozen=True)
class SourceUnit:
    """One source to index as a unit.

    ``source`` is the unit's id: a resolved file path, a normalised page URL, or a row key under its query's
    scope. ``load()`` returns its Documents, each with metadata ``source`` (equal to this id), ``doc_id``,
    ``title``, ``type`` and ``page`` (None where pages do not apply), or raises ``loaders.LoadError`` with a
    one-line reason and what to do.
    """

    source: str
    load: Callable[[], list[Document]]
