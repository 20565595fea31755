"""The history writer: moves finished tasks from the Redis stream `qb:history` into the
database's history table.

The record scripts add a finished task's id to the stream in the same call that
finishes it, so the worker's path gains no round trip. A `HistoryWriter` (in each API
process, or `queuebench history` on its own) reads the stream as one consumer of the
group `history`, fetches the records in one pipeline, upserts them in one statement per
batch, and acknowledges them. Several writers share the work; one that died leaves its
entries pending, and another claims them after `claim_idle` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, StatementError

from core.history.store import HistoryStore
from core.settings import Settings
from core.store.keys import HISTORY_STREAM, REJECTED_STREAM
from core.store.records import RecordStore, connect

log = logging.getLogger("queuebench.history")

GROUP = "history"
# Entries whose record the database refuses (or that cannot be read) are set aside in
# REJECTED_STREAM with the error, so one bad record never stops the history.
REJECTED_MAXLEN = 10_000
Entry = tuple[bytes | str, dict[Any, Any] | None]


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
