"""Bounded resources: task records in Redis are bounded by count (RECORDS_KEPT), not
by rate x RECORD_TTL, and `GET /tasks` reads a bounded number of records whatever its
filter or offset. In-process, against a Redis database of their own (the record
scripts and the listing are core's, the same for every backend)."""

from __future__ import annotations

import itertools
import subprocess
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
import redis
from redis.asyncio import Redis

from core.cli.procs import free_port, wait_until
from core.db import dispose_all
from core.history.store import SCAN_LIMIT, HistoryStore, TaskFilter, newest_first, recent
from core.history.writer import HistoryWriter
from core.states import TaskState
from core.store.keys import INDEX_KEY, TASK_KEY
from core.store.records import RecordStore, TaskRecord

KEPT = 50


@pytest_asyncio.fixture(loop_scope="session")
async def spare(spare_redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(spare_redis_url)
    await client.flushdb()
    yield client
    await client.flushdb()
    await client.aclose()


_ids = itertools.count()


async def create(store: RecordStore, n: int, *, state: TaskState | None = TaskState.SUCCESS,
                 name: str = "noop") -> list[str]:
    """n records submitted one after the other, each finished in `state` (None: left
    PENDING) before the next is submitted."""
    ids = []
    for _ in range(n):
        i = next(_ids)
        task_id = f"t{i:07d}"
        await store.create(TaskRecord(id=task_id, name=name, backend="arq", args=[i],
                                      submitted_at=1_700_000_000 + i))
        if state is not None:
            await store.finish(task_id, state, result=i)
        ids.append(task_id)
    return ids


async def records(redis: Redis) -> set[str]:
    prefix = len(TASK_KEY.format(""))
    return {k.decode()[prefix:] async for k in redis.scan_iter(TASK_KEY.format("*"))}


async def test_without_history_redis_keeps_records_kept_records_however_many_ran(
        spare: Redis) -> None:
    store = RecordStore(spare, history=False, kept=KEPT)
    ids = await create(store, 4 * KEPT)
    assert await records(spare) == set(ids[-KEPT:])
    assert await spare.zcard(INDEX_KEY) == KEPT


async def test_a_trimmed_record_that_is_not_final_is_kept_for_its_worker(spare: Redis) -> None:
    store = RecordStore(spare, history=False, kept=KEPT)
    [queued] = await create(store, 1, state=None)
    await create(store, 2 * KEPT)
    assert await spare.zscore(INDEX_KEY, queued) is None  # out of the index
    kept = await store.get(queued)
    assert kept is not None and kept.state is TaskState.PENDING  # a worker may still run it
    assert await spare.ttl(TASK_KEY.format(queued)) > 0  # RECORD_TTL still bounds it


async def test_with_history_a_record_goes_only_once_the_history_has_it(
        spare: Redis, history_db: str) -> None:
    store = RecordStore(spare, kept=KEPT)
    history = HistoryStore(history_db)
    ids = await create(store, 2 * KEPT)
    # No writer has stored them: Redis is their only copy, none is deleted.
    assert await records(spare) == set(ids)
    writer = HistoryWriter(store, history, block=0.1)
    await writer.ensure_group()
    while await writer.step():
        pass
    assert await records(spare) == set(ids[-KEPT:])  # the trimmed ones, once stored
    assert {r.id for r in await history.get_many(ids)} == set(ids)
    # Stored and released, the newest are deleted by later submits' trims.
    more = await create(store, KEPT)
    while await writer.step():
        pass
    assert await records(spare) == set(more)
    await dispose_all()


@pytest_asyncio.fixture(loop_scope="session")
async def private() -> AsyncIterator[Redis]:
    """A redis-server of the test's own: its command counts are the test's alone."""
    port = free_port()
    server = subprocess.Popen(["redis-server", "--port", str(port), "--save", "",
                               "--appendonly", "no"], stdout=subprocess.DEVNULL)
    client = Redis(port=port)
    try:
        wait_until(lambda: _up(port), timeout=10,
                   what="private redis-server")
        yield client
    finally:
        await client.aclose()
        server.terminate()
        server.wait(10)


def _up(port: int) -> bool:
    try:
        return bool(redis.Redis(port=port).ping())
    except redis.ConnectionError:
        return False


async def _reads(redis: Redis) -> int:
    """Record reads (HGETALL, HMGET) Redis served since the last reset."""
    stats = await redis.info("commandstats")
    return sum(stats.get(f"cmdstat_{c}", {}).get("calls", 0) for c in ("hgetall", "hmget"))


@pytest.mark.parametrize("with_history", [False, True])
async def test_listing_reads_a_bounded_number_of_records(
        private: Redis, history_db: str, with_history: bool) -> None:
    total = 3 * SCAN_LIMIT
    store = RecordStore(private, history=with_history, kept=10 * total)
    history = HistoryStore(history_db) if with_history else None
    await store.create_many([(TaskRecord(id=f"b{i:06d}", name="noop", backend="arq",
                                         state=TaskState.SUCCESS, submitted_at=1e9 + i),
                              None, None, None) for i in range(total)])
    cases = [(TaskFilter(state=TaskState.EXPIRED), 50, 0),  # matches nothing
             (TaskFilter(name="cpu"), 1000, 0),
             (TaskFilter(), 50, total - 60)]  # a deep page
    for where, limit, offset in cases:
        await private.config_resetstat()
        await recent(store, history, where, limit, offset)
        assert await _reads(private) <= SCAN_LIMIT + limit, (where, offset)
    await dispose_all()


async def test_listing_pages_the_union_of_history_and_redis_exactly(
        spare: Redis, history_db: str) -> None:
    """The page arithmetic (the table's offset shifted by Redis's live records) gives
    what merging everything and slicing would, for every offset and filter."""
    store = RecordStore(spare, kept=1000)
    history = HistoryStore(history_db)
    writer = HistoryWriter(store, history, block=0.1)
    await writer.ensure_group()
    await create(store, 12)
    await create(store, 6, state=TaskState.FAILURE, name="fail")
    await create(store, 3, state=None)  # live, among the stored ones
    while await writer.step():
        pass
    await create(store, 9)  # final, not stored yet
    await create(store, 4, state=None, name="fail")
    await create(store, 5, state=TaskState.FAILURE, name="fail")
    everything = {r.id: r for r in await store.get_many(sorted(await records(spare)))}
    everything.update((r.id, r) for r in await history.get_many(list(everything))
                      if r.id not in everything)
    assert any(r.released for r in everything.values())
    assert any(not r.released for r in everything.values())
    for where in (TaskFilter(), TaskFilter(name="fail"), TaskFilter(state=TaskState.PENDING),
                  TaskFilter(state=TaskState.SUCCESS)):
        union = sorted((r for r in everything.values() if where.matches(r)),
                       key=newest_first, reverse=True)
        for offset in range(len(union) + 3):
            for limit in (1, 4):
                page = await recent(store, history, where, limit, offset)
                assert [r.id for r in page] == [r.id for r in union[offset:offset + limit]], (
                    where, offset, limit)
    await dispose_all()
