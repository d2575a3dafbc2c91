"""Conversation memory: LangGraph checkpoints in the railgraph SQLite file.

LangGraph's ``SqliteSaver`` is synchronous and its ``AsyncSqliteSaver`` needs an event loop of its own.
``SqliteCheckpointer`` serves both: the sync methods as they are, the async ones in a worker thread, so a
single compiled graph answers ``invoke``, ``stream``, ``ainvoke`` and ``astream_events`` alike.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import sqlean
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import ChannelVersions, Checkpoint, CheckpointMetadata, CheckpointTuple
from langgraph.checkpoint.sqlite import SqliteSaver

from agent.db import connect


class SqliteCheckpointer(SqliteSaver):
    """``SqliteSaver`` with working async methods (each runs its sync twin in a thread)."""

    @classmethod
    def open(cls, path: Path | str) -> SqliteCheckpointer:
        """A checkpointer on the SQLite file at ``path`` (WAL mode, shared safely between threads)."""
        saver = cls(connect(path))
        saver.setup()
        return saver

    def setup(self) -> None:
        try:
            super().setup()
        except sqlean.OperationalError as error:
            # SqliteSaver's column migration expects ``sqlite3``'s exception class; sqlean raises its own.
            if "duplicate column name" not in str(error):
                raise
            self.is_setup = True

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
