"""Conversation memory: LangGraph checkpoints in the railgraph SQLite file.

LangGraph's ``SqliteSaver`` is synchronous and its ``AsyncSqliteSaver`` needs an event loop of its own.
``SqliteCheckpointer`` serves both: the sync methods as they are, the async ones in a worker thread, so a
single compiled graph answers ``invoke``, ``stream``, ``ainvoke`` and ``astream_events`` alike.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import ChannelVersions, Checkpoint, CheckpointMetadata, CheckpointTuple
from langgraph.checkpoint.sqlite import SqliteSaver


class SqliteCheckpointer(SqliteSaver):
    """``SqliteSaver`` with working async methods (each runs its sync twin in a thread)."""

    @classmethod
    def open(cls, path: Path | str) -> SqliteCheckpointer:
        """A checkpointer on the SQLite file at ``path`` (WAL mode, shared safely between threads)."""
        conn = sqlite3.connect(str(path), check_same_thread=False, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        saver = cls(conn)
        saver.setup()
        return saver

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return await asyncio.to_thread(self.get_tuple, config)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        items = await asyncio.to_thread(lambda: list(self.list(config, filter=filter, before=before, limit=limit)))
        for item in items:
            yield item

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return await asyncio.to_thread(self.put, config, checkpoint, metadata, new_versions)

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        await asyncio.to_thread(self.put_writes, config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        await asyncio.to_thread(self.delete_thread, thread_id)
