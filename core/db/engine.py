"""Async engines and sessions from `DATABASE_URL`.

An asyncpg connection belongs to the event loop that made it, and the thread-based
workers (Celery, Dramatiq) run tasks on one loop per worker thread (core/worker/runner.py),
so there is one engine per (running loop, url), made on first use. A loop that is
gone takes its engines with it (the cache is keyed weakly by loop).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

# Seconds a connection attempt may take before the database counts as down.
CONNECT_TIMEOUT = 5.0
# Seconds an SQLite writer waits for another process's lock (API and workers share the file).
SQLITE_BUSY_TIMEOUT = 30.0

_engines: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, AsyncEngine]] = (
    weakref.WeakKeyDictionary()
)


def is_sqlite(url: str | URL) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def safe_url(url: str | URL) -> str:
    """The url as it may be printed: without its password."""
    return make_url(url).render_as_string(hide_password=True)


def make_engine(url: str) -> AsyncEngine:
    """A new engine for `url`; use `engine(url)` for the loop's shared one."""
    if is_sqlite(url):
        made = create_async_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT})
        event.listen(made.sync_engine, "connect", _sqlite_pragmas)
        return made
    return create_async_engine(url, pool_pre_ping=True, connect_args=_connect_args(url))


def _connect_args(url: str) -> dict[str, Any]:
    driver = make_url(url).get_driver_name()
    return {"timeout": CONNECT_TIMEOUT} if driver == "asyncpg" else {}


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the API read while a worker writes; the busy timeout makes a second
    # writer wait for the lock instead of failing at once.
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT * 1000)}")
    _wal(cursor)
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _wal(cursor: Any) -> None:
    # WAL is kept in the file, so only a new file is switched, and switching takes the
    # file's exclusive lock without SQLite's busy handler: connections that open a new
    # file together (the API and workers' first start, one loop per worker thread)
    # get "database is locked" at once and must try again.
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT
    while True:
        try:
            cursor.execute("PRAGMA journal_mode")
            if cursor.fetchone()[0].lower() != "wal":
                cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def engine(url: str) -> AsyncEngine:
    """The running loop's engine for `url`."""
    per_loop = _engines.setdefault(asyncio.get_running_loop(), {})
    made = per_loop.get(url)
    if made is None:
        made = per_loop[url] = make_engine(url)
    return made


def sessions(url: str) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine(url), expire_on_commit=False)


@asynccontextmanager
async def session(url: str) -> AsyncIterator[AsyncSession]:
    """A session on the running loop's engine of `url`. Commit is the caller's; an
    exception rolls back."""
    async with sessions(url)() as made:
        yield made


async def ping(url: str, timeout: float = CONNECT_TIMEOUT) -> bool:
    """Whether the database answers a query within `timeout` seconds."""
    try:
        async with asyncio.timeout(timeout), engine(url).connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception:  # down, refused, timed out: health says false, never raises
        return False
    return True


async def dispose_all() -> None:
    """Close the running loop's engines (at shutdown, so no connection leaks)."""
    for made in _engines.pop(asyncio.get_running_loop(), {}).values():
        await made.dispose()
