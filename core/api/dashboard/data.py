"""What the dashboard's pages show, read from Redis: plain functions of a client.

Every read is a bounded number of round trips whatever the number of records: a page
of the task table is one range of the index (`qb:tasks`, scored by submit time) and
one pipeline of that page's records; a filter by state or name reads two fields of
at most SCAN_LIMIT records, newest first, in chunks, and says when it stopped there.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis

from core.store.keys import (
    INDEX_KEY,
    WORKER_TASKS_KEY,
    WORKERS_KEY,
    WORKERS_SEEN_KEY,
)
from core.store.records import RecordStore, TaskRecord, as_str

PAGE_SIZE = 50
CHUNK = 1_000
# Records a filtered page reads at most (two fields each, in Redis): see
# core/store/lua/scan.lua.
SCAN_LIMIT = 10_000


@dataclass(frozen=True)
class TaskQuery:
    state: str | None = None
    name: str | None = None
    since: float | None = None  # submitted at or after (epoch seconds)
    until: float | None = None  # submitted before
    cursor: int = 0  # position in the time window where the page starts
    size: int = PAGE_SIZE

    @property
    def filtered(self) -> bool:
        return bool(self.state or self.name)


@dataclass
class TaskPage:
    rows: list[TaskRecord]
    next_cursor: int | None  # None: no older page
    scanned: int = 0  # records read to filter
    stopped: bool = False  # the filter stopped at SCAN_LIMIT


async def task_page(store: RecordStore, query: TaskQuery) -> TaskPage:
    """A page of the task table, newest first. Positions are ranks in the index (a
    rank is found in O(log n), where a range by score with an offset walks it)."""
    redis = store.redis
    # The window's first rank: the ids submitted at or after `until` come before it.
    base = 0 if query.until is None else int(await redis.zcount(INDEX_KEY, query.until, "+inf"))
    bottom = 0 if query.since is None else query.since  # submit times are epoch seconds
    if not query.filtered:
        found = await redis.zrevrange(INDEX_KEY, base + query.cursor,
                                      base + query.cursor + query.size, withscores=True)
        ids = [as_str(i) for i, score in found if query.since is None or score >= query.since]
        more = len(ids) > query.size
        rows = await store.get_many(ids[:query.size])
        return TaskPage(rows, query.cursor + query.size if more else None)
    scan = store.scripts.scan
    matched: list[str] = []
    at, end = query.cursor, query.cursor + SCAN_LIMIT
    while at < end:
        found = [as_str(v) for v in await scan(
            keys=[INDEX_KEY], args=[base + at, min(CHUNK, end - at), bottom, query.state or "",
                                    query.name or "", query.size + 1 - len(matched)])]
        read, *ids = found
        if int(read) == 0:  # the window holds no more
            return TaskPage(await store.get_many(matched), None, scanned=at - query.cursor)
        for task_id in ids:
            if len(matched) == query.size:  # a full page: the next one starts here
                nxt = int(task_id.split(":", 1)[0]) - base
                return TaskPage(await store.get_many(matched), nxt, scanned=nxt - query.cursor)
            matched.append(task_id.split(":", 1)[1])
        at += int(read)
    return TaskPage(await store.get_many(matched), at, scanned=at - query.cursor,
                    stopped=True)


@dataclass
class WorkerView:
    id: str
    backend: str
    host: str
    pid: int
    concurrency: int | None
    queues: list[str]
    seen_at: float
    started_at: float | None
    run: int = 0
    failed: int = 0
    processes: list[str] = field(default_factory=list)  # its runner processes


async def worker_views(redis: Redis, alive_within: float) -> list[WorkerView]:
    """Each live `queuebench worker`, with the tasks run and failed by it and by the
    processes it runs tasks in (Celery's prefork children, Dramatiq's and taskiq's
    processes)."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(WORKERS_KEY)
        pipe.zrangebyscore(WORKERS_SEEN_KEY, time.time() - alive_within, "+inf",
                           withscores=True)
        pipe.hgetall(WORKER_TASKS_KEY)
        infos, seen, tasks = await pipe.execute()
    info = {as_str(k): json.loads(v) for k, v in infos.items()}
    counts = {as_str(k): int(v) for k, v in tasks.items()}
    alive = {as_str(k): score for k, score in seen}
    views: dict[tuple[str, int], WorkerView] = {}
    for wid, score in alive.items():
        entry = info.get(wid, {})
        if entry.get("role") != "worker":
            continue
        views[(entry.get("host", ""), int(entry.get("pid", 0)))] = WorkerView(
            id=wid, backend=entry.get("backend", ""), host=entry.get("host", ""),
            pid=int(entry.get("pid", 0)), concurrency=entry.get("concurrency"),
            queues=list(entry.get("queues") or []), seen_at=score,
            started_at=entry.get("started_at"), run=counts.get(f"{wid}|run", 0),
            failed=counts.get(f"{wid}|failed", 0))
    for wid, entry in info.items():
        parent = views.get((entry.get("host", ""), int(entry.get("parent", 0))))
        if entry.get("role") == "runner" and parent is not None:
            parent.run += counts.get(f"{wid}|run", 0)
            parent.failed += counts.get(f"{wid}|failed", 0)
            if wid in alive:
                parent.processes.append(wid)
    return sorted(views.values(), key=lambda v: (v.backend, v.id))


def runtime(record: TaskRecord) -> float | None:
    if record.started_at is None or record.finished_at is None:
        return None
    return record.finished_at - record.started_at


def timeline(record: TaskRecord) -> list[tuple[str, float, float | None]]:
    """(what, when, seconds since submitted) of each step the record keeps."""
    steps = [("submitted", record.submitted_at), ("started", record.started_at),
             (f"finished {record.state.value}", record.finished_at)]
    origin = record.submitted_at
    return [(what, at, None if origin is None else at - origin)
            for what, at in steps if at is not None]


def short(value: Any, limit: int = 60) -> str:
    """A JSON value in one table cell."""
    text = value if isinstance(value, str) else json.dumps(value, default=repr)
    return text if len(text) <= limit else text[:limit - 1] + "…"
