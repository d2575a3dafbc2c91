"""Settings for every railgraph command and for the graph itself.

One typed class, read from ``RAILGRAPH_*`` environment variables, an optional ``railgraph.toml`` in
the working directory, and, per call, from ``config["configurable"]`` of a LangGraph run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from langchain_core.runnables import RunnableConfig
from pydantic import Field, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from agent.pgdb import POSTGRES_SCHEMES, is_postgres_url, redact

ApprovalPolicy = Literal["never", "always", "flagged"]
UnsupportedPolicy = Literal["remove", "review", "refuse"]

SQLITE_PREFIX = "sqlite:///"
RAILS_CONFIG_DIR = Path(__file__).resolve().parent.parent / "rails"


class Settings(BaseSettings):
    """Everything a user can configure; each field is also the env var ``RAILGRAPH_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="RAILGRAPH_", toml_file="railgraph.toml", extra="ignore")

    db: str = Field("sqlite:///railgraph.db", description="Database URL holding chunks, threads and reviews.")
    llm: str = Field(
        "auto",
        description="Chat model: auto, extractive, ollama:<model>, llamacpp:<path.gguf> or provider:model.",
    )
    ollama_host: str = Field(
        "http://127.0.0.1:11434",
        validation_alias="OLLAMA_HOST",
        description="Where to look for an Ollama server (read from OLLAMA_HOST).",
    )
    ollama_model: str = Field("llama3.2", description="Model used when an Ollama server is auto-detected.")
    approval: ApprovalPolicy = Field("never", description="Which drafts wait for a human reviewer.")
    review_min_score: float = Field(
        0.65,
        description=(
            "Under approval=flagged, a draft whose best source scores below this goes to review (low confidence)."
            " The score is the search's own: hybrid convex fusion gives 0..1, about 0.75-1 when both sides agree."
        ),
    )
    review_topics: list[str] = Field(
        default_factory=list,
        description="Under approval=flagged, questions naming one of these (whole words, any case) go to review;"
        ' a JSON list in RAILGRAPH_REVIEW_TOPICS, e.g. ["salary", "legal advice"].',
    )
    reviewer: str | None = Field(None, description="Reviewer name recorded with decisions (default: your login).")
    unsupported_policy: UnsupportedPolicy = Field(
        "remove",
        description=(
            "Answer sentences the sources do not support: remove them, send the draft to review, or refuse the answer."
        ),
    )
    top_k: int = Field(5, ge=1, le=50, description="Chunks retrieved per question.")
    search_mode: Literal["hybrid", "vector", "keyword"] = Field(
        "hybrid", description="Retrieval: hybrid (vector + full text, fused), vector or keyword alone."
    )
    fusion: Literal["convex", "rrf"] = Field(
        "convex", description="Hybrid fusion: convex (weighted normalised scores) or rrf (reciprocal rank fusion)."
    )
    fusion_vector_weight: float = Field(1.0, ge=0, description="Weight of the vector side in hybrid fusion.")
    fusion_keyword_weight: float = Field(1.0, ge=0, description="Weight of the full-text side in hybrid fusion.")
    fusion_fill_scores: bool = Field(
        True,
        description=(
            "Convex fusion scores a chunk found by one side on the other too (its cosine similarity, its full-text"
            " score), rather than as that side's worst."
        ),
    )
    sentence_scores: bool = Field(
        True,
        description=(
            "With filled fusion scores, a chunk's vector side is its most similar sentence (vectors stored at ingest)"
            " rather than its whole text."
        ),
    )
    short_chunk_chars: int = Field(
        200,
        ge=1,
        description="Hybrid search (convex fusion) discounts chunks shorter than this many characters (captions).",
    )
    short_chunk_penalty: float = Field(
        0.4,
        ge=0,
        le=1,
        description="Share of its fused score an empty chunk would lose; shorter chunks lose more (0 turns it off).",
    )
    rrf_k: int = Field(60, ge=1, description="Reciprocal rank fusion constant: larger flattens the top ranks.")
    bm25_title_weight: float = Field(2.0, ge=0, description="BM25 weight of a title match relative to the text.")
    duplicate_similarity: float = Field(
        0.95, ge=0, le=1, description="Chunks this similar to a better one are dropped as copies (1 = keep all)."
    )
    relevance_floor: float = Field(
        0.2, ge=-1, le=1, description="Least cosine similarity of the nearest chunk; below it nothing is retrieved."
    )
    chunk_size: int = Field(1000, ge=100, description="Characters per chunk when splitting documents.")
    chunk_overlap: int = Field(150, ge=0, description="Characters shared by neighbouring chunks.")
    max_question_chars: int = Field(
        20_000, ge=100, description="Longer questions are refused before any model sees them."
    )
    history_tokens: int = Field(
        1500,
        ge=0,
        description=(
            "Token budget of the earlier messages shown to the chat model and the query rewriter (the latest ones"
            " that fit); with a chat model, a running summary stands in for the older ones. The thread keeps all."
        ),
    )
    keep_checkpoints: int = Field(
        1,
        ge=0,
        description=(
            "Time travel depth: checkpoints kept per thread, the latest ones (0 keeps every one; storage then grows"
            " with the square of the turns)."
        ),
    )
    user: str | None = Field(
        None, description="User id whose long-term memories a turn reads and writes (default: your login)."
    )
    max_tokens: int = Field(512, ge=16, description="Most tokens the chat model may generate per answer.")
    rails_config: Path = Field(RAILS_CONFIG_DIR, description="NeMo Guardrails config folder.")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Explicit arguments beat the environment, which beats railgraph.toml.
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))

    @classmethod
    def from_runnable_config(cls, config: RunnableConfig | None = None) -> Settings:
        """Settings for one graph run: a ``Settings`` object or field overrides in ``configurable``."""
        configurable: dict[str, Any] = (config or {}).get("configurable", {})
        given = configurable.get("settings")
        if isinstance(given, Settings):
            return given
        overrides = {name: configurable[name] for name in cls.model_fields if name in configurable}
        return cls(**overrides)

    @field_validator("db")
    @classmethod
    def _known_database_url(cls, url: str) -> str:
        if not url.startswith((SQLITE_PREFIX, *POSTGRES_SCHEMES)) or url in (SQLITE_PREFIX, *POSTGRES_SCHEMES):
            raise ValueError(
                f"{redact(url)!r} is not a database URL: use sqlite:///path/to/file.db"
                " or postgresql://user:password@host:port/database"
            )
        return url

    @property
    def backend(self) -> Literal["sqlite", "postgres"]:
        """Which database ``db`` names: one SQLite file, or a Postgres server."""
        return "postgres" if is_postgres_url(self.db) else "sqlite"

    @property
    def sqlite_path(self) -> Path:
        """The file behind a ``sqlite:///`` URL; a ValueError for a Postgres URL (it has no file)."""
        if self.backend != "sqlite":
            raise ValueError(f"RAILGRAPH_DB={redact(self.db)} is a Postgres database, not a SQLite file")
        return Path(self.db[len(SQLITE_PREFIX) :]).expanduser()
