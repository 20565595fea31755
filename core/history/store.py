"""Durable task history: every task's final body, kept in the database's history table.

`HistoryStore` reads and writes that table and answers for tasks Redis no longer has;
`recent` merges the table with Redis's records (which include the not-yet-finished
ones). The writer that fills it is core/history/writer.py.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.dml import Insert

from core.db import TaskHistory, session
from core.states import TaskState
from core.store.records import RecordStore, TaskRecord

log = logging.getLogger("queuebench.history")

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


def newest_first(record: TaskRecord) -> tuple[int, str]:
    """The listing's order (reversed): the submit time in whole microseconds, as the
    table keeps it, then the id, as the table's ORDER BY. A Redis record's float has
    finer digits: compared raw, a task stored meanwhile moved among the others of its
    batch (one submit time) between two reads of the same page."""
    return (round((record.submitted_at or 0.0) * 1_000_000), record.id)


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
