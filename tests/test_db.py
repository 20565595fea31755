"""The database layer on SQLite and PostgreSQL: migrations up from empty and down
again, the commands that migrate and check, one engine per event loop, health."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from typing import Any

import httpx
import pytest
from alembic import command
from sqlalchemy import inspect, text

from core.cli.procs import ROOT
from core.db import dispose_all, engine, migrate, session
from core.db.engine import make_engine
from tests.support_db import DATABASE_KINDS, Stack

TABLES = {"task_history", "users", "notifications"}
per_kind = pytest.mark.parametrize("empty_database", DATABASE_KINDS, indirect=True)


def tables_of(url: str) -> set[str]:
    async def names() -> set[str]:
        made = make_engine(url)
        try:
            async with made.connect() as conn:
                return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
        finally:
            await made.dispose()

    return asyncio.run(names())


def queuebench(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "core.cli.main", *args], cwd=ROOT,
                          env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=120)


@per_kind
def test_migrations_go_up_from_empty_and_down_again(empty_database: str) -> None:
    migrate.upgrade(empty_database)
    assert tables_of(empty_database) == TABLES | {"alembic_version"}
    assert migrate.current(empty_database) == migrate.heads()
    migrate.downgrade(empty_database, "base")
    assert tables_of(empty_database) == {"alembic_version"}
    assert migrate.current(empty_database) == set()


@per_kind
def test_the_models_and_the_migrations_agree(empty_database: str) -> None:
    migrate.upgrade(empty_database)
    command.check(migrate.alembic_config(empty_database))  # raises on any difference


@per_kind
def test_plain_alembic_upgrade_head_reads_database_url(empty_database: str) -> None:
    done = subprocess.run([sys.executable, "-m", "alembic", "upgrade", "head"], cwd=ROOT,
                          env={**os.environ, "DATABASE_URL": empty_database},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert migrate.current(empty_database) == migrate.heads()


@per_kind
def test_queuebench_db_upgrade_current_and_downgrade(empty_database: str) -> None:
    env = {"DATABASE_URL": empty_database}
    assert "not migrated" in queuebench("db", "current", **env).stdout
    assert queuebench("db", "upgrade", **env).returncode == 0
    head = migrate.heads().pop()
    assert queuebench("db", "current", **env).stdout.strip() == f"{head} (head)"
    assert queuebench("db", "downgrade", "base", **env).returncode == 0
    assert TABLES.isdisjoint(tables_of(empty_database))


@per_kind
def test_serve_refuses_an_unmigrated_database_in_one_line(
        empty_database: str, redis_url: str, backend_name: str) -> None:
    done = queuebench("serve", "--backend", backend_name, "--port", "1",
                      DATABASE_URL=empty_database, REDIS_URL=redis_url)
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(f"queuebench: error: DATABASE_URL={migrate.safe_url(empty_database)}"
                           ": database is not migrated")
    assert line.endswith("; run: queuebench db upgrade")


def test_serve_names_an_unreachable_database_in_one_line(redis_url: str,
                                                         backend_name: str) -> None:
    url = "postgresql+asyncpg://queuebench:secret@127.0.0.1:1/nowhere"
    done = queuebench("serve", "--backend", backend_name, "--port", "1",
                      DATABASE_URL=url, REDIS_URL=redis_url)
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("queuebench: error: DATABASE_URL=postgresql+asyncpg://"
                           "queuebench:***@127.0.0.1:1/nowhere: database does not answer")
    assert "secret" not in line


@per_kind
def test_each_event_loop_gets_its_own_engine(empty_database: str) -> None:
    """The thread-based workers run one loop per thread: each must get an engine of
    its own (asyncpg connections are bound to their loop), and keep reusing it."""
    seen: dict[int, tuple[Any, Any]] = {}

    async def twice() -> tuple[Any, Any]:
        async with session(empty_database) as db:
            assert (await db.execute(text("SELECT 1"))).scalar() == 1
        first = engine(empty_database)
        async with session(empty_database) as db:
            await db.execute(text("SELECT 1"))
        second = engine(empty_database)
        await dispose_all()
        return first, second

    def in_thread(n: int) -> None:
        seen[n] = asyncio.run(twice())

    threads = [threading.Thread(target=in_thread, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(seen) == 3
    assert all(first is second for first, second in seen.values())
    assert len({id(first) for first, _ in seen.values()}) == 3


async def test_health_says_the_database_answers(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.url) as http:
        body = (await http.get("/health")).json()
    assert body["database"] is True
