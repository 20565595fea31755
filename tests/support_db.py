"""Databases for the tests: SQLite files and throwaway PostgreSQL databases, migrated.

`prepare_database(url)` is what tests/conftest.py runs before it starts a server.
The fixtures here (loaded as a plugin by tests/conftest.py) give the tests of the
database layer, the history and the users app one `database_url` per database
kind, and a worker and server of the backend under test that use it.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from core.cli.procs import Proc, Server
from core.db import migrate
from core.db.engine import make_engine

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
# Any database of the server will do: the tests make and drop their own beside it.
POSTGRES_ADMIN = os.environ.get("QB_TEST_POSTGRES",
                                "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
DATABASE_KINDS = ("sqlite", "postgres")

# The stacks of these tests use Redis databases of their own, records apart from the
# broker, so a test may FLUSHDB the records while the broker (and a Celery worker's
# queue bindings) stays. tests/conftest.py says which database is whose.
STACK_REDIS_DBS = {"celery": (1, 2), "arq": (3, 4), "dramatiq": (6, 7), "taskiq": (8, 9)}


def prepare_database(url: str) -> None:
    """Bring the database at `url` to the current schema (Alembic, to head)."""
    migrate.upgrade(url, "head")


def _admin(statement: str) -> None:
    async def run() -> None:
        engine = make_engine(POSTGRES_ADMIN).execution_options(isolation_level="AUTOCOMMIT")
        try:
            async with engine.connect() as conn:
                await conn.execute(text(statement))
        finally:
            await engine.dispose()

    asyncio.run(run())


def postgres_available() -> str | None:
    """None when PostgreSQL answers, else why not."""
    try:
        _admin("SELECT 1")
    except Exception as exc:  # refused, auth: the reason goes into the skip or failure
        return f"PostgreSQL at {migrate.safe_url(POSTGRES_ADMIN)} does not answer: {exc}"
    return None


def create_postgres_database(prefix: str) -> str:
    """A new, empty database on the test server; its url."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    _admin(f'CREATE DATABASE "{name}"')
    return make_url(POSTGRES_ADMIN).set(database=name).render_as_string(hide_password=False)


def drop_postgres_database(url: str) -> None:
    _admin(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')


def need_postgres() -> None:
    """Skip locally, fail in CI (CI=true), when PostgreSQL is down."""
    reason = postgres_available()
    if reason is None:
        return
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: a missing service fails the run)")
    pytest.skip(reason)


@pytest.fixture
def history_db(tmp_path: Path) -> str:
    """A migrated SQLite history of the test's own."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'history.db'}"
    prepare_database(url)
    return url


@pytest.fixture
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of the kind `request.param` names: for migration tests."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
        return
    need_postgres()
    url = create_postgres_database("qb_empty")
    try:
        yield url
    finally:
        drop_postgres_database(url)


@pytest.fixture(scope="session", params=DATABASE_KINDS)
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
                 backend_name: str) -> Iterator[str]:
    """A migrated database of each kind, for this backend's session."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('stack') / 'queuebench.db'}"
        prepare_database(url)
        yield url
        return
    need_postgres()
    url = create_postgres_database(f"qb_{backend_name}")
    try:
        prepare_database(url)
        yield url
    finally:
        drop_postgres_database(url)


@dataclass
class Stack:
    """A worker and a server of the backend under test on one database."""

    database_url: str
    redis_url: str
    broker_url: str
    server: Server
    worker: Proc

    @property
    def url(self) -> str:
        return self.server.url


@pytest.fixture(scope="session")
def stack(database_url: str, backend_name: str, start_worker: Callable[..., Proc],
          start_server: Callable[..., Server]) -> Iterator[Stack]:
    import redis

    records, broker = STACK_REDIS_DBS[backend_name]
    base = os.environ.get("QB_TEST_REDIS", "redis://127.0.0.1:6379").rstrip("/")
    redis_url, broker_url = f"{base}/{records}", f"{base}/{broker}"
    for url in (redis_url, broker_url):
        redis.Redis.from_url(url).flushdb()
    env = {"DATABASE_URL": database_url, "REDIS_URL": redis_url, "BROKER_URL": broker_url}
    worker = start_worker(**env)
    server = start_server(**env)
    yield Stack(database_url, redis_url, broker_url, server, worker)
    server.stop()
    worker.stop()
