"""Alembic, driven from code: `queuebench db ...`, the tests and `serve`'s start check.

The url is handed to env.py in `Config.attributes`, never through alembic.ini, so a
password with `%` in it survives and no url is ever written down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DBAPIError

from core.db.engine import CONNECT_TIMEOUT, is_sqlite, make_engine, safe_url
from core.errors import ConfigError

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
T = TypeVar("T")


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["database_url"] = url
    return config


def _without_loop(fn: Callable[..., T], *args: Any) -> T:
    """Run `fn`, which uses asyncio.run (as env.py does), in a thread of its own when
    this one already runs an event loop (an async test, a notebook)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return fn(*args)
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(fn, *args).result()


def upgrade(url: str, revision: str = "head") -> None:
    check_reachable(url)
    _without_loop(command.upgrade, alembic_config(url), revision)


def scratch_sqlite(path: Path) -> str:
    """A new SQLite database at `path`, migrated to head: what the demo and the benchmark
    give the API, which refuses an unmigrated database."""
    url = f"sqlite+aiosqlite:///{path}"
    upgrade(url)
    return url


def downgrade(url: str, revision: str) -> None:
    check_reachable(url)
    _without_loop(command.downgrade, alembic_config(url), revision)


def check_reachable(url: str) -> None:
    """Raise ConfigError, one line naming DATABASE_URL, unless the database answers.
    Done apart from migrating, so a failing migration still shows its traceback."""
    try:
        _without_loop(asyncio.run, _probe(url))
    except (OSError, TimeoutError, DBAPIError) as exc:  # refused, no such db, bad password
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        raise ConfigError(f"DATABASE_URL={safe_url(url)}: database does not answer "
                          f"({reason[0] if reason else type(exc).__name__})") from None


async def _probe(url: str) -> None:
    made = make_engine(url)
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT * 2), made.connect() as conn:
            await conn.execute(text("SELECT 1"))
    finally:
        await made.dispose()


def heads() -> set[str]:
    """The revisions the code expects (normally one)."""
    return set(ScriptDirectory.from_config(alembic_config("")).get_heads())


def current(url: str) -> set[str]:
    """The revisions the database is at; empty for an unmigrated database."""
    check_reachable(url)
    with _quiet():
        return _without_loop(asyncio.run, _current(url))


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Alembic's INFO lines, but only while it migrates."""
    logger = logging.getLogger("alembic.runtime.migration")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


async def _current(url: str) -> set[str]:
    made = make_engine(url)
    try:
        async with made.connect() as conn:
            return await conn.run_sync(_revisions_of)
    finally:
        await made.dispose()


def _revisions_of(conn: Connection) -> set[str]:
    return set(MigrationContext.configure(conn).get_current_heads())


def check_migrated(url: str) -> None:
    """Raise ConfigError (one line naming DATABASE_URL) unless the database answers
    and is at the code's head revision."""
    name = f"DATABASE_URL={safe_url(url)}"
    if is_sqlite(url) and not _sqlite_file_exists(url):
        # Connecting would create an empty file; say what to run instead.
        raise ConfigError(f"{name}: database is not migrated; run: queuebench db upgrade")
    found = current(url)
    if found != heads():
        at = ", ".join(sorted(found)) or "empty"
        raise ConfigError(f"{name}: database is not migrated (at {at}, code needs "
                          f"{', '.join(sorted(heads()))}); run: queuebench db upgrade")


def _sqlite_file_exists(url: str) -> bool:
    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return True
    return Path(database).exists()
