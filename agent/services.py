"""The long-lived parts a graph run needs (database, chunk store, rails, chat model), built once per settings."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from langchain_core.runnables import RunnableConfig

from agent.configuration import Settings
from agent.db import Database
from agent.embeddings import MiniLMEmbeddings, default_embeddings
from agent.models import ChatModelChoice, resolve_chat_model
from agent.pgdb import PgDatabase
from agent.pgstore import PgChunkStore
from agent.review import ReviewQueue
from agent.store import ChunkStore, SearchOptions
from rails import Guard


def open_store(
    settings: Settings, embeddings: MiniLMEmbeddings
) -> tuple[Database | PgDatabase, ChunkStore | PgChunkStore]:
    """The database ``settings.db`` names (SQLite file or Postgres) and the chunk store on it.

    The store works through the database's own connection, so an ingest unit's chunk writes and record updates
    share one transaction; ``DatabaseUnavailable`` says when a Postgres server cannot be reached.
    """
    options = SearchOptions.from_settings(settings)
    if settings.backend == "postgres":
        pg = PgDatabase(settings.db)
        return pg, PgChunkStore(pg, embeddings, options=options)
    db = Database(settings.sqlite_path)
    return db, ChunkStore(db, embeddings, options)


@dataclass
class Services:
    """Database, chunk store, review queue, rails and chat model for one set of settings.

    The rails and the chat model are built on first use: ``railgraph review list`` needs neither.
    """

    settings: Settings
    db: Database | PgDatabase
    embeddings: MiniLMEmbeddings
    store: ChunkStore | PgChunkStore
    reviews: ReviewQueue
    _guard: Guard | None = field(default=None, repr=False)
    _chat: ChatModelChoice | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    # Apart from _lock: building the guard may resolve the chat model.
    _chat_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def create(cls, settings: Settings, *, chat: ChatModelChoice | None = None, guard: Guard | None = None) -> Services:
        embeddings = default_embeddings()
        db, store = open_store(settings, embeddings)
        return cls(
            settings=settings,
            db=db,
            embeddings=embeddings,
            store=store,
            reviews=ReviewQueue(db),
            _guard=guard,
            _chat=chat,
        )

    @property
    def guard(self) -> Guard:
        with self._lock:
            if self._guard is None:
                # The chat model serves the LLM rails (self check input/output/facts) when config.yml turns them on.
                self._guard = Guard(self.settings.rails_config, llm_factory=lambda: self.chat.model)
            return self._guard

    @property
    def chat(self) -> ChatModelChoice:
        with self._chat_lock:
            if self._chat is None:
                self._chat = resolve_chat_model(
                    self.settings.llm,
                    ollama_host=self.settings.ollama_host,
                    ollama_model=self.settings.ollama_model,
                    max_tokens=self.settings.max_tokens,
                )
            return self._chat

    def close(self) -> None:
        self.db.close()


_cache: dict[str, Services] = {}
_cache_lock = threading.Lock()


def services_for(settings: Settings) -> Services:
    """The process-wide ``Services`` for these settings (opened once, shared by every run)."""
    key = settings.model_dump_json()
    with _cache_lock:
        if key not in _cache:
            _cache[key] = Services.create(settings)
        return _cache[key]


def get_services(config: RunnableConfig | None) -> Services:
    """The services of a graph run: the ones bound by ``build_agent``, else those of the run's settings."""
    configurable: dict[str, Any] = (config or {}).get("configurable", {})
    bound = configurable.get("services")
    if isinstance(bound, Services):
        return bound
    return services_for(Settings.from_runnable_config(config))
