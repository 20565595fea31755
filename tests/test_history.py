"""Durable task history: final bodies kept in the database, read back after Redis
has lost them, listed with filters and pages; the writer's stream, its group and its
recovery; and history switched off."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import redis
from redis.asyncio import Redis

from core.api.schemas import TaskPublic
from core.backend import backend_class
from core.db import dispose_all
from core.db.models import TaskHistory
from core.errors import TaskNotFound
from core.history.store import HistoryStore, newest_first, to_record, to_row
from core.history.writer import GROUP, HistoryWriter
from core.settings import BACKENDS, Settings
from core.states import TaskState
from core.store.keys import HISTORY_STREAM, REJECTED_STREAM, TASK_KEY
from core.store.records import RecordStore, TaskRecord, new_task_id
from tests.conformance.support import finished, submit
from tests.support_db import (
    Stack,
    create_postgres_database,
    drop_postgres_database,
    need_postgres,
    prepare_database,
)


@pytest_asyncio.fixture(loop_scope="session")
async def http(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.url, timeout=60) as client:
        yield client


async def stored(database_url: str, ids: list[str], timeout: float = 30) -> dict[str, Any]:
    """The history rows of `ids` as task bodies, once all are there."""
    history = HistoryStore(database_url)
    deadline = asyncio.get_running_loop().time() + timeout
    try:
        while True:
            found = [await history.get(i) for i in ids]
            if all(found) or asyncio.get_running_loop().time() > deadline:
                missing = [i for i, r in zip(ids, found, strict=True) if r is None]
                assert not missing, f"not in the history after {timeout}s: {missing}"
                return {r.id: as_json(r) for r in found if r}
            await asyncio.sleep(0.05)
    finally:
        await dispose_all()


def as_json(record: TaskRecord) -> dict[str, Any]:
    """The body as the API sends it."""
    return TaskPublic.model_validate(record.body()).model_dump(mode="json")


async def run_all(http: httpx.AsyncClient, *calls: tuple[str, list[Any]]) -> list[dict[str, Any]]:
    tasks = [await submit(http, name, *args) for name, args in calls]
    return [await finished(http, t["id"]) for t in tasks]


async def test_final_bodies_survive_a_redis_flushdb(http: httpx.AsyncClient,
                                                    stack: Stack) -> None:
    bodies = await run_all(http, ("divide", [1, 4]), ("divide", [1, 0]), ("add", [2, 3]))
    ids = [b["id"] for b in bodies]
    assert await stored(stack.database_url, ids) == {b["id"]: b for b in bodies}

    redis.Redis.from_url(stack.redis_url).flushdb()  # the records are gone; the broker stays

    for body in bodies:
        assert (await http.get(f"/tasks/{body['id']}")).json() == body
    listed = (await http.get("/tasks", params={"limit": 1000})).json()
    assert [b for b in listed if b["id"] in ids] == sorted(
        bodies, key=lambda b: b["submitted_at"], reverse=True)
    assert (await http.delete(f"/tasks/{ids[0]}")).status_code == 409  # finished, not lost
    assert (await http.get(f"/tasks/{uuid.uuid4()}")).status_code == 404


async def test_the_writer_carries_on_after_a_flushdb(http: httpx.AsyncClient,
                                                     stack: Stack) -> None:
    redis.Redis.from_url(stack.redis_url).flushdb()  # the stream and its group go too
    [body] = await run_all(http, ("add", [1, 1]))
    assert await stored(stack.database_url, [body["id"]]) == {body["id"]: body}


async def test_listing_filters_by_state_name_backend_and_time(
        http: httpx.AsyncClient, stack: Stack, backend_name: str) -> None:
    before = datetime.fromisoformat((await submit(http, "noop"))["submitted_at"])
    bodies = await run_all(http, ("divide", [1, 0]), ("add", [1, 2]), ("noop", ["x"]))
    ids = {b["id"] for b in bodies}
    await stored(stack.database_url, list(ids))
    redis.Redis.from_url(stack.redis_url).flushdb()

    async def listed(**params: Any) -> set[str]:
        found = (await http.get("/tasks", params={"limit": 1000, **params})).json()
        return {b["id"] for b in found} & ids

    since = (before + timedelta(microseconds=1)).isoformat()
    assert await listed(since=since) == ids
    assert await listed(until=since) == set()
    assert await listed(state="FAILURE", since=since) == {bodies[0]["id"]}
    assert await listed(name="add", since=since) == {bodies[1]["id"]}
    assert await listed(backend=backend_name, since=since) == ids
    other = next(b for b in BACKENDS if b != backend_name)
    assert await listed(backend=other) == set()
    bad = await http.get("/tasks", params={"since": "yesterday"})
    assert bad.status_code == 422


async def test_pages_are_newest_first_and_do_not_overlap(http: httpx.AsyncClient,
                                                         stack: Stack) -> None:
    name = "add"
    bodies = await run_all(http, *[(name, [i, 0]) for i in range(7)])
    await stored(stack.database_url, [b["id"] for b in bodies[:4]])
    since = bodies[0]["submitted_at"]
    # A task that stays PENDING lives in Redis only: the listing merges it in first.
    pending = await submit(http, name, 100, 0, options={"countdown": 3600})

    pages = [(await http.get("/tasks", params={"name": name, "since": since, "limit": 3,
                                                "offset": offset})).json()
             for offset in (0, 3, 6)]
    ids = [b["id"] for page in pages for b in page]
    assert [len(p) for p in pages] == [3, 3, 2]
    assert ids == [pending["id"], *[b["id"] for b in reversed(bodies)]]
    await http.delete(f"/tasks/{pending['id']}")


def test_a_task_sorts_alike_from_redis_and_from_the_table() -> None:
    """A batch's tasks share one submit time, with digits past the microsecond the
    table does not keep: each sorts among the others the same whether read from Redis
    or from the table (a conformance run saw a page's order change between two reads
    as the history writer stored the batch)."""
    when = 1_765_050_000.1234567
    batch = [TaskRecord(id=new_task_id(), name="add", backend="arq", state=TaskState.SUCCESS,
                        submitted_at=when) for _ in range(8)]
    stored = {r.id: to_record(TaskHistory(**to_row(r))) for r in batch}
    assert all(stored[r.id].submitted_at != r.submitted_at for r in batch)  # digits lost
    for k in range(len(batch)):  # the first k stored, the rest still in Redis
        mixed = [stored[r.id] if i < k else r for i, r in enumerate(batch)]
        assert ([r.id for r in sorted(mixed, key=newest_first)]
                == [r.id for r in sorted(batch, key=newest_first)])


async def test_revoked_and_expired_tasks_are_kept(http: httpx.AsyncClient,
                                                  stack: Stack) -> None:
    revoked = await submit(http, "noop", options={"countdown": 3600})
    assert (await http.delete(f"/tasks/{revoked['id']}")).status_code == 202
    expired = await submit(http, "noop", options={"countdown": 0.5, "expires": 0.1})
    assert (await finished(http, expired["id"]))["state"] == "EXPIRED"
    rows = await stored(stack.database_url, [revoked["id"], expired["id"]])
    assert rows[revoked["id"]]["state"] == "REVOKED"
    assert rows[expired["id"]]["state"] == "EXPIRED"


async def test_a_retried_task_is_kept_once_with_its_final_state(http: httpx.AsyncClient,
                                                                stack: Stack) -> None:
    [body] = await run_all(http, ("flaky", [1, uuid.uuid4().hex]))
    assert (body["state"], body["retries"]) == ("SUCCESS", 1)
    assert (await stored(stack.database_url, [body["id"]]))[body["id"]] == body


async def test_non_finite_floats_are_answered_and_kept_as_strings(http: httpx.AsyncClient,
                                                                  stack: Stack) -> None:
    [body] = await run_all(http, ("divide", [1e308, 1e-308]))  # inf
    assert (body["state"], body["result"]) == ("SUCCESS", "Infinity")
    answer = await http.get(f"/tasks/{body['id']}")
    assert (answer.status_code, answer.json()) == (200, body)
    assert (await stored(stack.database_url, [body["id"]]))[body["id"]] == body
    # The bare words NaN and Infinity are not JSON, though the API's parser reads them:
    # they are taken as the same strings, and never make a 500.
    async def post(name: str, raw: str) -> httpx.Response:
        return await http.post(f"/tasks/{name}", content=raw,
                               headers={"content-type": "application/json"})

    sent = await post("noop", '{"args": [[NaN, 1, {"a": -Infinity}]]}')
    assert sent.status_code == 202, sent.text
    assert (await finished(http, sent.json()["id"]))["result"] == ["NaN", 1, {"a": "-Infinity"}]
    # A task's float parameters take finite JSON numbers only (core/tasks/shared.py: Finite).
    sent = await post("divide", '{"kwargs": {"x": Infinity, "y": 2}}')
    assert sent.status_code == 422, sent.text
    assert sent.json()["detail"][0]["loc"] == ["body", "kwargs", "x"]
    for raw in ('{"args": NaN}', '{"args": [1, 2], "options": {"nope": -Infinity}}'):
        assert (await post("divide", raw)).status_code == 422


# -- the stream and the writer, in-process against a Redis database of their own -------

@pytest_asyncio.fixture(loop_scope="session")
async def spare(spare_redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(spare_redis_url)
    await client.delete(HISTORY_STREAM, REJECTED_STREAM)
    yield client
    await client.delete(HISTORY_STREAM, REJECTED_STREAM)
    await client.aclose()


async def finish_some(store: RecordStore, n: int) -> list[str]:
    ids = [new_task_id() for _ in range(n)]
    for task_id in ids:
        await store.create(TaskRecord(id=task_id, name="noop", backend="arq"))
        await store.start(task_id)
        await store.finish(task_id, TaskState.SUCCESS, result=task_id)
    return ids


async def written(history: HistoryStore, ids: list[str]) -> list[Any]:
    return [r.result if r else None for r in [await history.get(i) for i in ids]]


async def test_final_states_are_streamed_only_when_history_is_on(spare: Redis) -> None:
    await finish_some(RecordStore(spare, history=False), 3)
    assert await spare.xlen(HISTORY_STREAM) == 0
    on = RecordStore(spare)
    [task_id] = await finish_some(on, 1)
    retried = new_task_id()
    await on.create(TaskRecord(id=retried, name="noop", backend="arq"))
    await on.finish(retried, TaskState.RETRY)  # not final: not streamed
    [(_, fields)] = await spare.xrange(HISTORY_STREAM)
    assert fields == {b"id": task_id.encode()}


async def test_the_writer_stores_acknowledges_and_trims(spare: Redis, history_db: str) -> None:
    store, history = RecordStore(spare), HistoryStore(history_db)
    writer = HistoryWriter(store, history, batch=2, block=0.1)
    await writer.ensure_group()
    ids = await finish_some(store, 5)
    while await writer.step():
        pass
    assert await written(history, ids) == ids
    assert await spare.xlen(HISTORY_STREAM) == 0
    assert (await spare.xpending(HISTORY_STREAM, GROUP))["pending"] == 0
    await dispose_all()


async def test_a_dead_writers_entries_are_claimed_by_another(spare: Redis,
                                                             history_db: str) -> None:
    store, history = RecordStore(spare), HistoryStore(history_db)
    alive = HistoryWriter(store, history, block=0.1, claim_idle=0.2, consumer="alive")
    await alive.ensure_group()
    ids = await finish_some(store, 3)
    # Another consumer reads them, then dies before writing: they stay pending.
    await spare.xreadgroup(GROUP, "dead", {HISTORY_STREAM: ">"})
    assert await alive.step() == 0  # too soon to call the dead one dead
    await asyncio.sleep(0.3)
    assert await alive.step() == 3
    assert await written(history, ids) == ids
    assert (await spare.xpending(HISTORY_STREAM, GROUP))["pending"] == 0
    await dispose_all()


async def test_the_writer_keeps_entries_while_the_database_is_down(
        spare: Redis, history_db: str, tmp_path: Path) -> None:
    store = RecordStore(spare)
    down = HistoryWriter(store, HistoryStore(f"sqlite+aiosqlite:///{tmp_path}/no/such.db"),
                         block=0.1, consumer="w")
    await down.ensure_group()
    ids = await finish_some(store, 2)
    stop = asyncio.Event()
    running = asyncio.create_task(down.run(stop))
    await asyncio.sleep(0.3)  # it fails, logs, and waits to retry
    stop.set()
    await running
    assert (await spare.xpending(HISTORY_STREAM, GROUP))["pending"] == 2
    up = HistoryWriter(store, HistoryStore(history_db), block=0.1, consumer="w")
    assert await up.step() == 2  # its own pending entries first
    assert await written(HistoryStore(history_db), ids) == ids
    await dispose_all()


@pytest.fixture
def postgres_history_db() -> Iterator[str]:
    need_postgres()
    url = create_postgres_database("qb_history")
    try:
        prepare_database(url)
        yield url
    finally:
        drop_postgres_database(url)


async def test_records_the_database_refuses_are_set_aside(
        spare: Redis, postgres_history_db: str, caplog: pytest.LogCaptureFixture) -> None:
    store, history = RecordStore(spare), HistoryStore(postgres_history_db)
    writer = HistoryWriter(store, history, batch=100, block=0.1)
    await writer.ensure_group()
    good = await finish_some(store, 3)
    refused, unreadable = await finish_some(store, 2)
    # The bare NaN of an old `dumps`: PostgreSQL's json type refuses it.
    await spare.hset(TASK_KEY.format(refused), "result", "[1,NaN]")
    await spare.hset(TASK_KEY.format(unreadable), "result", "{")  # not JSON at all
    good += await finish_some(store, 4)
    with caplog.at_level(logging.WARNING, logger="queuebench.history"):
        assert await writer.step() == 9
    assert await written(history, good) == good
    assert await written(history, [refused, unreadable]) == [None, None]
    rejected = {f[b"id"].decode(): f[b"error"].decode()
                for _, f in await spare.xrange(REJECTED_STREAM)}
    assert rejected.keys() == {refused, unreadable}
    assert "json" in rejected[refused].lower()
    assert await spare.xlen(HISTORY_STREAM) == 0
    assert (await spare.xpending(HISTORY_STREAM, GROUP))["pending"] == 0
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert sorted(i for m in warned for i in (refused, unreadable) if i in m) == sorted(
        [refused, unreadable]) and len(warned) == 2  # one line for each, naming it
    later = await finish_some(store, 2)  # and it goes on
    assert await writer.step() == 2
    assert await written(history, later) == later
    await dispose_all()


async def test_with_history_off_the_backend_never_asks_the_database(
        spare: Redis, spare_redis_url: str, backend_name: str) -> None:
    settings = Settings(redis_url=spare_redis_url, history_enabled=False,
                        database_url="postgresql+asyncpg://nobody@127.0.0.1:1/nowhere")
    backend = backend_class(backend_name)(settings)
    record = TaskRecord(id=new_task_id(), name="noop", backend=backend_name)
    await backend.store.create(record)
    await backend.store.finish(record.id, TaskState.SUCCESS)
    try:
        assert (await backend.get(record.id)).state == TaskState.SUCCESS
        assert record.id in [r.id for r in await backend.list(name="noop")]
        with pytest.raises(TaskNotFound):
            await backend.get(new_task_id())
        assert await spare.xlen(HISTORY_STREAM) == 0
    finally:
        await backend.aclose()
