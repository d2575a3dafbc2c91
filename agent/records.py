"""LangChain's ``RecordManager`` on railgraph's own database (SQLite or Postgres): which chunk keys each unit holds.

Its writes go through the database's ``transaction()``, so when an ingest wraps one unit's chunk writes and record
updates in a transaction of the same database, they commit together or not at all: a crash can never leave
records that name missing chunks, or chunks that no record names. Its SQL is dialect-neutral (``?`` placeholders,
``ON CONFLICT``, times computed here), so one class serves ``Database`` and ``PgDatabase`` alike.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from langchain_core.indexing import RecordManager

from agent.db import Database, in_batches, in_list
from agent.pgdb import PgDatabase


class DatabaseRecordManager(RecordManager):
    """Ingest records in the ``ingest_records`` table of a railgraph database (created by its migrations)."""

    def __init__(self, namespace: str, db: Database | PgDatabase) -> None:
        super().__init__(namespace)
        self.db = db

    def create_schema(self) -> None:
        """Nothing to do: the table is one of the database's migrations."""

    async def acreate_schema(self) -> None:
        """Nothing to do: the table is one of the database's migrations."""

    def get_time(self) -> float:
        """Seconds since the epoch, by this process's clock: every writer of the records stamps them with it, on
        either database (files written by LangChain's ``SQLRecordManager`` hold the same unit)."""
        return time.time()

    async def aget_time(self) -> float:
        return self.get_time()

    def update(
        self,
        keys: Sequence[str],
        *,
        group_ids: Sequence[str | None] | None = None,
        time_at_least: float | None = None,
    ) -> None:
        """Record ``keys`` (each with its group id, the unit it belongs to) as written now."""
        group_ids = list(group_ids) if group_ids is not None else [None] * len(keys)
        if len(group_ids) != len(keys):
            raise ValueError(f"{len(keys)} keys but {len(group_ids)} group ids")
        now = self.get_time()
        if time_at_least is not None and now < time_at_least:
            # LangChain's contract: an update must never be stamped before the time its caller read.
            raise AssertionError(f"the clock ({now}) is behind time_at_least ({time_at_least})")
        if not keys:
            return
        with self.db.transaction() as conn:
            conn.executemany(
                "INSERT INTO ingest_records (namespace, key, group_id, updated_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (namespace, key)"
                " DO UPDATE SET group_id = excluded.group_id, updated_at = excluded.updated_at",
                [(self.namespace, key, group_id, now) for key, group_id in zip(keys, group_ids, strict=True)],
            )

    async def aupdate(
        self,
        keys: Sequence[str],
        *,
        group_ids: Sequence[str | None] | None = None,
        time_at_least: float | None = None,
    ) -> None:
        await asyncio.to_thread(self.update, keys, group_ids=group_ids, time_at_least=time_at_least)

    def exists(self, keys: Sequence[str]) -> list[bool]:
        """Whether each key is recorded, in the order given."""
        found: set[str] = set()
        for batch in in_batches(keys):
            rows = self.db.query(
                f"SELECT key FROM ingest_records WHERE namespace = ? AND key IN {in_list(batch)}",
                (self.namespace, *batch),
            )
            found.update(row[0] for row in rows)
        return [key in found for key in keys]

    async def aexists(self, keys: Sequence[str]) -> list[bool]:
        return await asyncio.to_thread(self.exists, keys)

    def list_keys(
        self,
        *,
        before: float | None = None,
        after: float | None = None,
        group_ids: Sequence[str] | None = None,
        limit: int | None = None,
    ) -> list[str]:
        """Recorded keys, optionally only those updated in a time window or belonging to ``group_ids``."""
        sql = "SELECT key FROM ingest_records WHERE namespace = ?"
        params: list[object] = [self.namespace]
        if before is not None:
            sql += " AND updated_at < ?"
            params.append(before)
        if after is not None:
            sql += " AND updated_at > ?"
            params.append(after)
        if group_ids is not None:
            groups = list(group_ids)
            if not groups:
                return []
            # One unit's group, or those of one embedding batch (at most EMBED_BATCH_CHUNKS): one IN list.
            sql += f" AND group_id IN {in_list(groups)}"
            params.extend(groups)
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return [row[0] for row in self.db.query(sql, tuple(params))]

    async def alist_keys(
        self,
        *,
        before: float | None = None,
        after: float | None = None,
        group_ids: Sequence[str] | None = None,
        limit: int | None = None,
    ) -> list[str]:
        return await asyncio.to_thread(self.list_keys, before=before, after=after, group_ids=group_ids, limit=limit)

    def delete_keys(self, keys: Sequence[str]) -> None:
        """Forget ``keys``."""
        with self.db.transaction() as conn:
            for batch in in_batches(keys):
                conn.execute(
                    f"DELETE FROM ingest_records WHERE namespace = ? AND key IN {in_list(batch)}",
                    (self.namespace, *batch),
                )

    async def adelete_keys(self, keys: Sequence[str]) -> None:
        await asyncio.to_thread(self.delete_keys, keys)

    def groups_in(self, scope: str) -> list[str]:
        """The group ids (unit ids) that start with ``scope``: the units an ingest of that scope has recorded."""
        rows = self.db.query(
            "SELECT DISTINCT group_id FROM ingest_records"
            " WHERE namespace = ? AND substr(group_id, 1, length(CAST(? AS TEXT))) = ?",
            (self.namespace, scope, scope),
        )
        return [row[0] for row in rows]
