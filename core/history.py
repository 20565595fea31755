"""Durable task history: every task's final body, kept in the database.

The record scripts (core/records.py) add a finished task's id to the Redis stream
`qb:history` in the same call that finishes it, so the worker's path gains no round
trip. A `HistoryWriter` (in each API process, or `queuebench history` on its own)
reads that stream as one consumer of the group `history`, fetches the records in
one pipeline, upserts them in one statement per batch, and acknowledges them.
Several writers share the work; one that died leaves its entries pending, and
another claims them after `claim_idle` seconds.

Reading: `HistoryStore` answers for tasks Redis no longer has, and `recent` merges
the table with Redis's records (which include the not-yet-finished ones).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError
from sqlalchemy import Select, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, StatementError
from sqlalchemy.sql.dml import Insert

from core.db import TaskHistory, session
from core.records import HISTORY_STREAM, RecordStore, TaskRecord, connect
from core.settings import Settings
from core.states import TaskState

log = logging.getLogger("queuebench.history")

GROUP = "history"
# Entries whose record the database refuses (or that cannot be read): set aside here
# with the error, so one bad record never stops the history.
REJECTED_STREAM = "qb:history:rejected"
REJECTED_MAXLEN = 10_000
Entry = tuple[bytes | str, dict[Any, Any] | None]
# Index entries `GET /tasks` scans at most for the records the history table does not
# hold yet (or, without a history, for a filter's matches): newest first.
SCAN_LIMIT = 2_000


@dataclass(frozen=True)
class TaskFilter:
    """What `GET /tasks` may ask for; `since`/`until` bound the submit time."""

    state: TaskState | None = None
    name: str | None = None
    backend: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def matches(self, record: TaskRecord) -> bool:
        submitted = record.submitted_at or 0.0
        return ((self.state is None or record.state == self.state)
                and (self.name is None or record.name == self.name)
                and (self.backend is None or record.backend == self.backend)
                and (self.since is None or submitted >= self.since.timestamp())
                and (self.until is None or submitted < self.until.timestamp()))

    def where(self, query: Select[Any]) -> Select[Any]:
        if self.state is not None:
            query = query.where(TaskHistory.state == self.state.value)
        if self.name is not None:
            query = query.where(TaskHistory.name == self.name)
        if self.backend is not None:
            query = query.where(TaskHistory.backend == self.backend)
        if self.since is not None:
            query = query.where(TaskHistory.submitted_at >= self.since)
        if self.until is not None:
            query = query.where(TaskHistory.submitted_at < self.until)
        return query


def _time(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


def _ts(when: datetime | None) -> float | None:
    return None if when is None else when.timestamp()


def to_row(record: TaskRecord) -> dict[str, Any]:
    return {
        "id": record.id, "name": record.name, "backend": record.backend,
        "state": record.state.value, "args": record.args, "kwargs": record.kwargs,
        "result": record.result, "error": record.error, "retries": record.retries,
        "submitted_at": _time(record.submitted_at), "started_at": _time(record.started_at),
        "finished_at": _time(record.finished_at), "queue": record.queue,
        "worker": record.worker,
    }


def to_record(row: TaskHistory) -> TaskRecord:
    return TaskRecord(
        id=row.id, name=row.name, backend=row.backend, state=TaskState(row.state),
        args=row.args, kwargs=row.kwargs, result=row.result, error=row.error,
        retries=row.retries, submitted_at=_ts(row.submitted_at),
        started_at=_ts(row.started_at), finished_at=_ts(row.finished_at),
        queue=row.queue, worker=row.worker,
    )


def newest_first(record: TaskRecord) -> tuple[float, str]:
    return (record.submitted_at or 0.0, record.id)


def _upsert(dialect: str) -> Insert:
    """Insert, or on a known id overwrite: a later final body wins."""
    insert = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}[dialect]
    stmt = insert(TaskHistory.__table__)
    columns = [c.name for c in TaskHistory.__table__.columns if c.name != "id"]
    return stmt.on_conflict_do_update(index_elements=["id"],
                                      set_={c: stmt.excluded[c] for c in columns})


class HistoryStore:
    """The history table of one database."""

    def __init__(self, database_url: str) -> None:
        self.url = database_url

    async def get(self, task_id: str) -> TaskRecord | None:
        async with session(self.url) as db:
            row = await db.get(TaskHistory, task_id)
            return to_record(row) if row is not None else None

    async def get_many(self, task_ids: Sequence[str]) -> list[TaskRecord]:
        """The rows of `task_ids` the table has, in one query (any order)."""
        async with session(self.url) as db:
            rows = (await db.scalars(select(TaskHistory).where(
                TaskHistory.id.in_(list(task_ids))))).all()
        return [to_record(row) for row in rows]

    async def find(self, where: TaskFilter, limit: int, offset: int = 0) -> list[TaskRecord]:
        query = where.where(select(TaskHistory)).order_by(
            TaskHistory.submitted_at.desc().nulls_last(), TaskHistory.id.desc())
        async with session(self.url) as db:
            rows = (await db.scalars(query.offset(offset).limit(limit))).all()
        return [to_record(row) for row in rows]

    async def save(self, records: Iterable[TaskRecord]) -> int:
        """Upsert `records` in one statement; how many rows it wrote."""
        rows = [to_row(r) for r in {r.id: r for r in records}.values()]  # one row per id
        if rows:
            async with session(self.url) as db:
                await db.execute(_upsert(db.get_bind().dialect.name), rows)
                await db.commit()
        return len(rows)


async def recent(store: RecordStore, history: HistoryStore | None, where: TaskFilter,
                 limit: int, offset: int = 0) -> list[TaskRecord]:
    """Tasks newest first: the history table's (read through its indexes, the page's
    OFFSET in the database) merged with the records Redis holds that the table does
    not yet (running, queued, finished but not yet stored). Those are looked for
    among the newest SCAN_LIMIT submissions only, reading a few fields of each: a
    filter or an offset never pages the whole index on the event loop."""
    if history is None:
        return await _redis_page(store, where, limit, offset)
    live = [r for r in await store.heads(SCAN_LIMIT) if not r.released and where.matches(r)]
    # The union's page [offset, offset + limit): its stored tasks are among the table's
    # [offset - len(live), offset + limit), as each live task comes before at most
    # that many. A live task newer than the first of those comes before the page.
    first = max(0, offset - len(live))
    stored = await history.find(where, offset + limit - first, offset=first)
    if first and not stored:
        return []  # the table has under `first` matches: the union ends before offset
    before = 0
    if first:
        top = newest_first(stored[0])
        before = sum(newest_first(r) > top for r in live)
        live = [r for r in live if newest_first(r) <= top]
    ids = {r.id for r in live}  # stored just now and not yet released: Redis's copy
    merged = sorted([*(r for r in stored if r.id not in ids), *live], key=newest_first,
                    reverse=True)
    start = offset - first - before
    return await _whole(store, merged[start:start + limit], ids)


async def _redis_page(store: RecordStore, where: TaskFilter, limit: int,
                      offset: int) -> list[TaskRecord]:
    """Without a history: the index's page as it is, or with a filter, the matches
    among the newest SCAN_LIMIT submissions."""
    if where == TaskFilter():
        return await store.recent(offset=offset, count=limit)
    heads = [r for r in await store.heads(SCAN_LIMIT) if where.matches(r)]
    return await store.get_many([r.id for r in heads[offset:offset + limit]])


async def _whole(store: RecordStore, page: list[TaskRecord], heads: set[str],
                 ) -> list[TaskRecord]:
    """The page, its Redis records (`heads`: a few fields each) read whole; one that
    Redis let go meanwhile is left out."""
    whole = {r.id: r for r in await store.get_many([r.id for r in page if r.id in heads])}
    return [whole[r.id] if r.id in heads else r for r in page
            if r.id not in heads or r.id in whole]


class HistoryWriter:
    """Moves finished tasks from the Redis stream into the history table."""

    def __init__(self, store: RecordStore, history: HistoryStore, *, batch: int = 500,
                 block: float = 1.0, claim_idle: float = 30.0, interval: float = 0.0,
                 consumer: str | None = None) -> None:
        self.store = store
        # Once caught up, wait this long before reading on: under load a batch then
        # holds many tasks, and the database sees a few large transactions instead of
        # one per task (each commit costs the workers' CPU on a shared machine).
        self.interval = interval
        self.redis = store.redis
        self.history = history
        self.batch = batch
        self.block_ms = round(block * 1000)
        self.claim_idle_ms = round(claim_idle * 1000)
        self.consumer = consumer or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.written = 0
        self._own_pending = True  # after a start or a failure, our unacked entries first
        self._next_claim = 0.0
        self._claim_from = "0-0"

    @classmethod
    def from_settings(cls, settings: Settings, redis: Redis) -> HistoryWriter:
        store = RecordStore(redis, ttl=settings.record_ttl, kept=settings.records_kept)
        return cls(store, HistoryStore(settings.database_url), batch=settings.history_batch,
                   interval=settings.history_interval)

    async def ensure_group(self) -> None:
        # From id 0: what finished while no writer ran is written too.
        with contextlib.suppress(ResponseError):  # BUSYGROUP: it exists
            await self.redis.xgroup_create(HISTORY_STREAM, GROUP, id="0", mkstream=True)

    async def run(self, stop: asyncio.Event) -> None:
        """Write batches until `stop` is set; a failure is logged and retried."""
        while not stop.is_set():
            try:
                handled = await self.step()
                if 0 < handled < self.batch and self.interval:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), self.interval)
            except Exception as exc:  # database or Redis away: keep the entries, retry
                if isinstance(exc, ResponseError) and str(exc).startswith(("NOGROUP", "UNBLOCKED")):
                    # Redis lost the stream and its group (a restart, FLUSHDB).
                    with contextlib.suppress(RedisError):
                        await self.ensure_group()
                    continue
                log.warning("history writer: %s: %s; retrying", type(exc).__name__, exc)
                self._own_pending = True
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)

    async def step(self) -> int:
        """Write one batch; how many stream entries it handled."""
        entries = await self._claim_abandoned()
        if not entries:
            entries = await self._read()
        await self.write(entries)
        return len(entries)

    async def _read(self) -> list[Entry]:
        """Our own unacknowledged entries while there are any, else new ones."""
        if self._own_pending:
            entries = await self._read_from("0", block=None)
            if entries:
                return entries
            self._own_pending = False
        return await self._read_from(">", block=self.block_ms)

    async def _read_from(self, start: str, block: int | None) -> list[Entry]:
        reply = await self.redis.xreadgroup(GROUP, self.consumer, {HISTORY_STREAM: start},
                                            count=self.batch, block=block)
        return list(reply[0][1]) if reply else []

    async def _claim_abandoned(self) -> list[Entry]:
        """Entries another writer read and never acknowledged (it died)."""
        now = time.monotonic()
        if now < self._next_claim:
            return []
        self._next_claim = now + self.claim_idle_ms / 1000
        reply = await self.redis.xautoclaim(HISTORY_STREAM, GROUP, self.consumer,
                                            self.claim_idle_ms, self._claim_from,
                                            count=self.batch)
        self._claim_from = reply[0]
        if reply[1]:
            self._next_claim = now  # more may wait: claim again next step
        return list(reply[1])

    async def write(self, entries: Sequence[Entry]) -> None:
        """Store the entries' records, then acknowledge and drop the entries, so the
        stream only holds what no writer has stored yet. A batch that fails because
        of its data is halved until each record it can store is stored and each it
        cannot is set aside in REJECTED_STREAM."""
        if not entries:
            return
        try:
            # A record Redis no longer has cannot be stored: nothing to do but ack it.
            records = await self.store.get_many([_task_id(fields) for _, fields in entries])
            self.written += await self.history.save(records)
            await self.store.release([r.id for r in records])  # bounded records (records.py)
        except Exception as exc:
            if not _bad_data(exc):
                raise  # the database or Redis is away: the entries stay, run() retries
            if len(entries) > 1:  # halve until the bad records stand alone
                half = len(entries) // 2
                await self.write(entries[:half])
                await self.write(entries[half:])
                return
            await self._reject(entries[0], exc)
        await self._drop(entries)

    async def _reject(self, entry: Entry, exc: Exception) -> None:
        """Set aside an entry whose record cannot be stored, with the reason."""
        task_id, error = _task_id(entry[1]), _reason(exc)
        log.warning("history writer: task %s not stored, set aside in %s: %s",
                    task_id, REJECTED_STREAM, error)
        await self.redis.xadd(REJECTED_STREAM, {"id": task_id, "error": error},
                              maxlen=REJECTED_MAXLEN, approximate=True)

    async def _drop(self, entries: Sequence[Entry]) -> None:
        entry_ids = [entry_id for entry_id, _ in entries]
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xack(HISTORY_STREAM, GROUP, *entry_ids)
            pipe.xdel(HISTORY_STREAM, *entry_ids)
            await pipe.execute()


def _bad_data(exc: Exception) -> bool:
    """Whether storing failed because of the records themselves, so a retry would fail
    the same way. Anything else (the database or Redis away, a missing table) is not:
    the entries are kept and retried."""
    if isinstance(exc, DBAPIError):
        # asyncpg's errors reach SQLAlchemy as a plain DBAPIError: PostgreSQL's SQLSTATE
        # says whose fault it is (class 22: data exception, 23: integrity violation).
        state = str(getattr(exc.orig, "sqlstate", None) or "")
        return not exc.connection_invalidated and (
            isinstance(exc, DataError | IntegrityError) or state[:2] in ("22", "23"))
    if isinstance(exc, StatementError):  # a value that could not be bound
        return isinstance(exc.orig, ValueError | TypeError)
    return isinstance(exc, ValueError | TypeError | KeyError)  # a record that cannot be read


def _reason(exc: Exception) -> str:
    """The error in a line: the driver's words, without SQLAlchemy's statement dump."""
    orig = getattr(exc, "orig", None)
    return f"{type(exc).__name__}: {orig if orig is not None else exc}"[:1000]


def _task_id(fields: dict[Any, Any] | None) -> str:
    value = (fields or {}).get(b"id") or (fields or {}).get("id") or b""
    return value.decode() if isinstance(value, bytes) else str(value)


@contextlib.asynccontextmanager
async def writing(settings: Settings, redis: Redis) -> AsyncIterator[HistoryWriter | None]:
    """Run a history writer in the background for the body of the block (the API's
    lifespan); nothing when history is off."""
    if not settings.history_enabled:
        yield None
        return
    writer = HistoryWriter.from_settings(settings, redis)
    stop = asyncio.Event()
    try:
        await writer.ensure_group()
    except RedisError as exc:  # the writer's loop retries; the API starts anyway
        log.warning("history writer: %s", exc)
    running = asyncio.create_task(writer.run(stop), name="queuebench-history")
    try:
        yield writer
    finally:
        stop.set()
        try:
            await asyncio.wait_for(running, writer.block_ms / 1000 + 10)
        except TimeoutError:
            log.warning("history writer did not stop in time; its entries stay pending")


async def run_standalone(settings: Settings) -> None:
    """`queuebench history`: the writer alone, until SIGINT or SIGTERM."""
    import signal

    redis = connect(settings.redis_url, settings.redis_max_connections)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    writer = HistoryWriter.from_settings(settings, redis)
    log.info("history writer %s: %s -> database", writer.consumer, HISTORY_STREAM)
    try:
        await writer.ensure_group()
        await writer.run(stop)
    finally:
        await redis.aclose()
        from core.db import dispose_all

        await dispose_all()
