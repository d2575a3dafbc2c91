"""Conversation memory: LangGraph checkpoints in the railgraph SQLite file.

LangGraph's ``SqliteSaver`` is synchronous and its ``AsyncSqliteSaver`` needs an event loop of its own.
``SqliteCheckpointer`` serves both: the sync methods as they are, the async ones in a worker thread, so a
single compiled graph answers ``invoke``, ``stream``, ``ainvoke`` and ``astream_events`` alike.

LangGraph writes a checkpoint after every step, each holding the whole state, so a thread's storage would grow with
the square of its turns. ``SqliteCheckpointer`` keeps only the latest ``keep`` checkpoints of each thread (and
namespace) and the writes they still need; the messages themselves are all in the latest checkpoint.

Also here: the long-term memory store (``open_memory_store``), and how much of a thread the chat model is shown:
the latest earlier messages that fit RAILGRAPH_HISTORY_TOKENS (``history_window``); with a chat model, a running
summary (``summarize``) stands in for the older ones. The stored thread is never cut.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import sqlean
from langchain_core.language_models import BaseChatModel, BaseLanguageModel
from langchain_core.messages import AnyMessage, BaseMessage, HumanMessage, SystemMessage, trim_messages
from langchain_core.messages.utils import count_tokens_approximately
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import ChannelVersions, Checkpoint, CheckpointMetadata, CheckpointTuple
from langgraph.checkpoint.postgres import PostgresSaver
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.store.base import BaseStore
from langgraph.store.postgres import PostgresStore
from langgraph.store.sqlite import SqliteStore
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from agent.configuration import Settings
from agent.db import connect
from agent.pgdb import connect as _pg_connect
from agent.pgdb import psycopg_url
from agent.rewrite import quiet, transcript

# The running summary's length cap; history_window leaves it this much of the budget.
SUMMARY_TOKENS = 200
SUMMARY_PROMPT = (
    "Summarise the conversation below for an assistant that will not see it: the user's questions, the facts given"
    " in the answers, names and numbers. Plain sentences, at most 120 words. Start from the summary so far, if any."
)


class SqliteCheckpointer(SqliteSaver):
    """``SqliteSaver`` with working async methods (each runs its sync twin in a thread) that keeps only the latest
    ``keep`` checkpoints of each thread and namespace (0: all of them)."""

    def __init__(self, conn: Any, *, keep: int = 0) -> None:
        super().__init__(conn)
        self.keep = keep

    @classmethod
    def open(cls, path: Path | str, *, keep: int = 0) -> SqliteCheckpointer:
        """A checkpointer on the SQLite file at ``path`` (WAL mode, shared safely between threads)."""
        saver = cls(connect(path), keep=keep)
        saver.setup()
        return saver

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Save the checkpoint, then drop the thread's checkpoints older than the latest ``keep``.

        A crash between the two leaves old checkpoints behind, which the thread's next checkpoint removes.
        """
        saved = super().put(config, checkpoint, metadata, new_versions)
        if self.keep:
            with self.cursor() as cur:
                self._drop_older(cur, saved["configurable"]["thread_id"], saved["configurable"]["checkpoint_ns"])
        return saved

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """LangGraph's pruning API: ``keep_latest`` keeps each namespace's latest checkpoint, ``delete`` none."""
        if isinstance(thread_ids, str):
            raise TypeError("thread_ids must be a sequence of thread ids, not a str")
        if strategy not in {"keep_latest", "delete"}:
            raise ValueError(f"unknown prune strategy {strategy!r}: use keep_latest or delete")
        for thread_id in map(str, thread_ids):
            if strategy == "delete":
                self.delete_thread(thread_id)
                continue
            with self.cursor() as cur:
                namespaces = cur.execute(
                    "SELECT DISTINCT checkpoint_ns FROM checkpoints WHERE thread_id = ?", (thread_id,)
                ).fetchall()
                for (namespace,) in namespaces:
                    self._drop_older(cur, thread_id, namespace, keep=1)

    def thread_bytes(self, thread_id: str) -> int:
        """Bytes the thread's checkpoints, their metadata and its writes take (blob lengths, not pages)."""
        with self.cursor(transaction=False) as cur:
            checkpoints = cur.execute(
                "SELECT coalesce(sum(length(checkpoint) + length(metadata)), 0) FROM checkpoints WHERE thread_id = ?",
                (thread_id,),
            ).fetchone()[0]
            writes = cur.execute(
                "SELECT coalesce(sum(length(value)), 0) FROM writes WHERE thread_id = ?", (thread_id,)
            ).fetchone()[0]
        return int(checkpoints + writes)

    def _drop_older(self, cur: Any, thread_id: str, namespace: str, keep: int | None = None) -> None:
        """Delete the namespace's checkpoints older than its latest ``keep``, and the writes made against them.

        Checkpoint ids grow with time, so "older" is "smaller id". The writes of the kept checkpoints stay, among
        them a pending interrupt that a reviewer's decision resumes. Writes go by the same id bound, not by "of no
        kept checkpoint": LangGraph saves a step's writes in the background, at times before the checkpoint they
        belong to is saved, and those must survive.
        """
        row = cur.execute(
            "SELECT checkpoint_id FROM checkpoints WHERE thread_id = ? AND checkpoint_ns = ?"
            " ORDER BY checkpoint_id DESC LIMIT 1 OFFSET ?",
            (thread_id, namespace, (keep or self.keep) - 1),
        ).fetchone()
        if row is None:
            return
        bound = (thread_id, namespace, row[0])
        cur.execute("DELETE FROM checkpoints WHERE thread_id = ? AND checkpoint_ns = ? AND checkpoint_id < ?", bound)
        cur.execute("DELETE FROM writes WHERE thread_id = ? AND checkpoint_ns = ? AND checkpoint_id < ?", bound)

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


def open_memory_store(settings: Settings) -> BaseStore:
    """LangGraph's long-term memory store in the database ``settings.db`` names (it creates its own tables)."""
    if settings.backend == "postgres":
        return open_postgres_store(settings.db)
    conn = connect(settings.sqlite_path)
    # SqliteStore begins and commits its own transactions, as on the autocommit connection it opens itself.
    conn.isolation_level = None
    store = SqliteStore(conn)
    store.setup()
    return store


def token_counter(model: BaseChatModel | None) -> Callable[[list[BaseMessage]], int] | BaseLanguageModel:
    """The model itself when it counts its own tokens, else an approximate count (about 4 characters a token).

    LangChain's fallback tokenizer is GPT-2's, downloaded on first use, which no offline setup here can do.
    """
    if model is not None:
        kind = type(model)
        for name in ("get_num_tokens_from_messages", "get_num_tokens", "get_token_ids"):
            if getattr(kind, name) is not getattr(BaseLanguageModel, name):
                return model
    return count_tokens_approximately


def history_window(
    earlier: Sequence[AnyMessage],
    budget: int,
    counter: Callable[[list[BaseMessage]], int] | BaseLanguageModel,
    *,
    summary_room: int = 0,
) -> tuple[list[AnyMessage], int]:
    """The latest ``earlier`` messages that fit ``budget`` tokens, starting on a user message, and how many of the
    oldest ones that leaves out. When some are left out, ``summary_room`` tokens of the budget stay free for a
    summary of them."""
    if budget <= 0 or not earlier:
        return [], len(earlier)
    kept = trim_messages(earlier, max_tokens=budget, token_counter=counter, strategy="last", start_on="human")
    if len(kept) < len(earlier) and summary_room:
        room = max(budget - summary_room, 0)
        kept = trim_messages(earlier, max_tokens=room, token_counter=counter, strategy="last", start_on="human")
    return list(kept), len(earlier) - len(kept)


def summarize(model: BaseChatModel, summary: str, dropped: Sequence[AnyMessage], config: RunnableConfig) -> str:
    """The running ``summary`` extended with the ``dropped`` messages, in at most SUMMARY_TOKENS tokens."""
    so_far = f"Summary so far: {summary}\n\n" if summary else ""
    prompt = [SystemMessage(SUMMARY_PROMPT), HumanMessage(f"{so_far}Conversation:\n{transcript(dropped)}")]
    reply = quiet(model, SUMMARY_TOKENS).invoke(prompt, config).text.strip()
    # A model ignoring its token cap must not overflow the room history_window left (about 4 characters a token).
    return reply[: SUMMARY_TOKENS * 3]


# --- Postgres (RAILGRAPH_DB=postgresql://...): LangGraph's own Postgres checkpointer and store ---------------------


class PostgresCheckpointer(PostgresSaver):
    """``PostgresSaver`` with working async methods, so one compiled graph serves sync and async runs alike.

    LangGraph's ``AsyncPostgresSaver`` is bound to one event loop; like ``SqliteCheckpointer``, this runs each
    async method's sync twin in a thread instead (the methods are ``SqliteCheckpointer``'s own: they only call
    ``self``'s sync methods, which ``PostgresSaver`` serialises on its connection with its lock).
    """

    aget_tuple = SqliteCheckpointer.aget_tuple
    alist = SqliteCheckpointer.alist
    aput = SqliteCheckpointer.aput
    aput_writes = SqliteCheckpointer.aput_writes
    adelete_thread = SqliteCheckpointer.adelete_thread

    def __init__(self, conn: Any, *, keep: int = 0) -> None:
        super().__init__(conn)
        self.keep = keep

    @classmethod
    def open(cls, url: str, *, keep: int = 0) -> PostgresCheckpointer:
        """A checkpointer on the Postgres database at ``url`` keeping the latest ``keep`` checkpoints of each thread
        and namespace (0: all); its tables are created or migrated if needed."""
        # The settings PostgresSaver's own from_conn_string uses: it reads rows as dicts and commits per statement.
        conn = _pg_connect(url)
        conn.row_factory = dict_row
        conn.prepare_threshold = 0
        saver = cls(conn, keep=keep)
        saver.setup()
        return saver

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Save the checkpoint, then drop the namespace's checkpoints older than the latest ``keep``, as
        ``SqliteCheckpointer.put`` does; a crash between the two leaves old ones for the next checkpoint to remove."""
        saved = super().put(config, checkpoint, metadata, new_versions)
        if self.keep:
            where = {
                "thread": saved["configurable"]["thread_id"],
                "ns": saved["configurable"]["checkpoint_ns"],
                "offset": self.keep - 1,
            }
            with self._cursor() as cur, cur.connection.transaction():
                for statement in _PG_DROP_OLDER:
                    cur.execute(statement, where)
        return saved


# The id below which a namespace's checkpoints are older than its latest ``keep`` (checkpoint ids grow with time).
_PG_KEEP_BOUND = (
    "(SELECT checkpoint_id FROM checkpoints WHERE thread_id = %(thread)s AND checkpoint_ns = %(ns)s"
    " ORDER BY checkpoint_id DESC LIMIT 1 OFFSET %(offset)s)"
)
_PG_DROP_OLDER = (
    # The writes made against the dropped checkpoints; the kept ones' writes (a pending interrupt) stay.
    "DELETE FROM checkpoint_writes WHERE thread_id = %(thread)s AND checkpoint_ns = %(ns)s"
    f" AND checkpoint_id < {_PG_KEEP_BOUND}",
    "DELETE FROM checkpoints WHERE thread_id = %(thread)s AND checkpoint_ns = %(ns)s"
    f" AND checkpoint_id < {_PG_KEEP_BOUND}",
    # Channel values live in blobs, one per channel version, shared by the checkpoints that hold that version.
    # Versions grow, so a blob older than every version the kept checkpoints hold of its channel is no one's; a
    # checkpoint being saved meanwhile only adds newer ones.
    "DELETE FROM checkpoint_blobs b WHERE b.thread_id = %(thread)s AND b.checkpoint_ns = %(ns)s AND b.version < ("
    " SELECT min(v.value) FROM checkpoints c CROSS JOIN LATERAL jsonb_each_text(c.checkpoint -> 'channel_versions') v"
    " WHERE c.thread_id = b.thread_id AND c.checkpoint_ns = b.checkpoint_ns AND v.key = b.channel)",
)


def open_postgres_store(url: str) -> PostgresStore:
    """LangGraph's long-term memory ``PostgresStore`` on the database at ``url``, its tables created if needed."""
    # A small pool: unlike the checkpointer, the store takes no lock of its own around its shared connection.
    pool = ConnectionPool(
        psycopg_url(url),
        min_size=1,
        max_size=4,
        kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row},
        open=True,
    )
    store = PostgresStore(pool)
    store.setup()
    return store


def open_checkpointer(settings: Settings) -> SqliteCheckpointer | PostgresCheckpointer:
    """The checkpointer of the database ``settings.db`` names: its SQLite file, or its Postgres server."""
    if settings.backend == "postgres":
        return PostgresCheckpointer.open(settings.db, keep=settings.keep_checkpoints)
    return SqliteCheckpointer.open(settings.sqlite_path, keep=settings.keep_checkpoints)
