"""Core's task lifecycle against a real Redis, with a stand-in adapter whose queue is a
list (an in-memory backend serves core's unit tests, never the conformance suite):
submission that cannot reach the queue, the reaper, the heartbeat's registry."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from redis.asyncio import Redis

from core.backend import DEFAULT_QUEUE, TaskBackend
from core.errors import Unavailable
from core.settings import Settings
from core.states import TaskState
from core.store.keys import (
    DUE_KEY,
    INDEX_KEY,
    ORPHANS_KEY,
    OWNED_KEY,
    TASK_KEY,
    WORKERS_KEY,
    WORKERS_SEEN_KEY,
)
from core.store.records import (
    BUSY,
    TaskRecord,
    task_of,
)
from core.store.workers import live_workers, workers
from core.tasks.features import Support
from core.tasks.options import TaskOptions
from core.worker.heartbeat import Heartbeat, host_and_pid
from core.worker.reaper import Reaper
from tests.conftest import redis_database

LIFECYCLE_DB = 10


class ListBackend(TaskBackend):
    """Sends nothing anywhere: what it was asked to send is in `sent`."""

    name = "list"
    features = {"queues": Support.NATIVE, "priority": Support.NATIVE,
                "time_limit": Support.NATIVE, "retries": Support.NATIVE,
                "delay": Support.NATIVE}

    def __init__(self, settings: Settings, block: asyncio.Event | None = None) -> None:
        super().__init__(settings)
        self.sent: list[tuple[str, dict[str, Any], TaskOptions]] = []
        self.block = block
        self.takes: int | None = None  # messages it takes before its broker goes down
        self.taken: set[str] = set()  # delivery ids a consumer took

    async def waiting_in(self, queue: str) -> set[str] | None:
        return {task_of(delivery) for delivery, _, options in self.sent
                if (options.queue or DEFAULT_QUEUE) == queue and delivery not in self.taken}

    async def enqueue(self, record: TaskRecord, arguments: dict[str, Any],
                      options: TaskOptions) -> None:
        if self.block is not None:
            await self.block.wait()
        if self.takes is not None and len(self.sent) >= self.takes:
            raise ConnectionRefusedError("the broker is down")
        self.sent.append((record.delivery_id, arguments, options))


@pytest.fixture
def settings() -> Settings:
    url = redis_database(LIFECYCLE_DB, flush=True)
    return Settings(redis_url=url, history_enabled=False, redelivery_after=5,
                    worker_heartbeat=0.2)


@pytest_asyncio.fixture
async def backend(settings: Settings) -> AsyncIterator[ListBackend]:
    made = ListBackend(settings)
    yield made
    await made.aclose()


async def test_a_submission_cancelled_in_the_enqueue_ends_failure(settings: Settings) -> None:
    held = ListBackend(settings, block=asyncio.Event())
    try:
        submitting = asyncio.create_task(held.submit("add", [1, 2]))
        while not await held.redis.zcard(INDEX_KEY):  # the record exists: in the enqueue
            await asyncio.sleep(0.01)
        submitting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await submitting
        task_id = (await held.redis.zrange(INDEX_KEY, 0, -1))[0].decode()
        record = await held.get(task_id)
    finally:
        await held.aclose()
    assert record.state is TaskState.FAILURE
    assert record.error is not None and record.error["type"] == "NotQueued"


async def test_a_batch_whose_enqueue_fails_part_way_ends_the_rest_not_queued(
        backend: ListBackend) -> None:
    """The broker goes down after two of five messages: the two stand, the other three
    end FAILURE NotQueued (none PENDING for ever), the batch is a 503, and the same
    batch sent again with its idempotency key queues the three anew."""
    items = [([i], {}) for i in range(5)]
    options = TaskOptions(idempotency_key="batch-1")
    backend.takes = 2
    with pytest.raises(Unavailable, match="ConnectionRefusedError"):
        await backend.submit_many("noop", items, options)
    records = {r.args[0]: r for r in await backend.store.recent()}
    assert [records[i].state for i in range(5)] == [TaskState.PENDING] * 2 + [
        TaskState.FAILURE] * 3
    assert {records[i].error["type"] for i in (2, 3, 4)} == {"NotQueued"}  # type: ignore[index]
    backend.takes = None
    again = await backend.submit_many("noop", items, options)
    assert again[:2] == [records[0].id, records[1].id]
    assert not set(again[2:]) & {records[i].id for i in (2, 3, 4)}
    assert [d for d, _, _ in backend.sent] == again
    assert await backend.submit_many("noop", items, options) == again


async def test_a_submit_the_broker_refuses_is_a_503_and_ends_not_queued(
        backend: ListBackend) -> None:
    backend.takes = 0
    with pytest.raises(Unavailable):
        await backend.submit("noop", [1])
    [record] = await backend.store.recent()
    assert record.state is TaskState.FAILURE
    assert record.error is not None and record.error["type"] == "NotQueued"


async def _started_by(backend: ListBackend, owner: str, **options: Any) -> TaskRecord:
    record = await backend.submit("sleep", [5], options=TaskOptions(**options))
    found, _ = await backend.store.start(record.id, owner)
    assert found == TaskState.PENDING
    return record


async def _beat(redis: Redis, owner: str, at: float) -> None:
    await redis.zadd(WORKERS_SEEN_KEY, {owner: at})
    await redis.hset(WORKERS_KEY, owner, '{"backend": "list", "role": "worker"}')


async def test_the_reaper_sends_a_dead_workers_task_again_once(backend: ListBackend) -> None:
    record = await _started_by(backend, "host:1", queue="q1", priority=7, time_limit=9)
    await _beat(backend.redis, "host:1", time.time() - 6)  # lease of 5 s lapsed
    reaper = Reaper(backend, "host:2")
    reaper._trusted_from = 0
    assert await reaper.sweep() == 1
    assert await reaper.sweep() == 0  # sent once; the dead worker is forgotten
    again = await backend.get(record.id)
    assert (again.state, again.deliveries) == (TaskState.PENDING, 1)
    [(delivery, arguments, options)] = backend.sent[1:]
    assert delivery == f"{record.id}~1"
    assert arguments == {"seconds": 5.0, "key": None}
    assert (options.queue, options.priority, options.time_limit) == ("q1", 7, 9)
    assert not await backend.redis.exists(OWNED_KEY.format("host:1"))
    assert not await backend.redis.zscore(WORKERS_SEEN_KEY, "host:1")


def _reaper(backend: ListBackend) -> Reaper:
    reaper = Reaper(backend, "host:2")
    reaper._trusted_from = 0
    return reaper


async def _overdue(backend: ListBackend, task_id: str, by: float = 6) -> None:
    """As if the task's message had been due `by` seconds ago (the lease is 5 s)."""
    assert await backend.redis.zadd(DUE_KEY, {task_id: time.time() - by}, xx=True, ch=True)


async def test_an_overdue_task_whose_message_is_nowhere_is_sent_again_once(
        backend: ListBackend) -> None:
    """The broker lost the message (a restart, kombu's take-then-record window)."""
    record = await backend.submit("add", [1, 2], options=TaskOptions(queue="q1"))
    backend.sent.clear()
    await _overdue(backend, record.id)
    assert await _reaper(backend).sweep() == 1
    assert await _reaper(backend).sweep() == 0  # due again now: a lease before the next look
    again = await backend.get(record.id)
    assert (again.state, again.deliveries) == (TaskState.PENDING, 1)
    [(delivery, arguments, options)] = backend.sent
    assert (delivery, arguments, options.queue) == (f"{record.id}~1", {"x": 1.0, "y": 2.0}, "q1")


async def test_an_overdue_task_whose_message_waits_is_left_and_looked_at_a_lease_later(
        backend: ListBackend) -> None:
    record = await backend.submit("add", [1, 2])
    await _overdue(backend, record.id)
    assert await _reaper(backend).sweep() == 0
    assert await backend.redis.zscore(DUE_KEY, record.id) > time.time() - 1
    assert len(backend.sent) == 1


async def test_a_message_taken_by_a_consumer_that_never_started_it_is_sent_again(
        backend: ListBackend) -> None:
    record = await backend.submit("add", [1, 2])
    backend.taken.add(record.id)
    await _overdue(backend, record.id)
    assert await _reaper(backend).sweep() == 1
    assert [d for d, _, _ in backend.sent] == [record.id, f"{record.id}~1"]


async def test_a_task_not_due_yet_is_not_looked_at(backend: ListBackend) -> None:
    record = await backend.submit("add", [1, 2], options=TaskOptions(countdown=60))
    backend.sent.clear()
    assert await backend.redis.zscore(DUE_KEY, record.id) >= record.submitted_at + 60
    assert await _reaper(backend).sweep() == 0


async def test_a_retry_whose_next_run_never_came_is_sent_again(backend: ListBackend) -> None:
    """RETRY written, then the library's retry message lost (Redis killed before it)."""
    record = await _started_by(backend, "host:1")
    assert await backend.redis.zscore(DUE_KEY, record.id) is None  # running: not due
    await backend.store.finish(record.id, TaskState.RETRY, retries=0, worker="host:1",
                               due=time.time() + 0.5)
    backend.sent.clear()
    assert await _reaper(backend).sweep() == 0  # its backoff has not even passed
    await _overdue(backend, record.id)
    assert await _reaper(backend).sweep() == 1
    assert (await backend.get(record.id)).state is TaskState.RETRY
    assert (await backend.store.start(record.id, "host:3"))[1] == 1  # the next retry


async def test_a_final_task_leaves_the_due_set_and_one_of_two_reapers_sends_again(
        backend: ListBackend) -> None:
    done = await backend.submit("add", [1, 2])
    await backend.store.start(done.id, "host:1")
    await backend.store.finish(done.id, TaskState.SUCCESS, result=3, worker="host:1")
    assert await backend.redis.zscore(DUE_KEY, done.id) is None
    lost = await backend.submit("add", [3, 4])
    await _overdue(backend, lost.id)
    [seen] = await backend.store.overdue(time.time() - 5, 10)
    assert await backend.store.resend(seen, time.time() - 5) is not None
    assert await backend.store.resend(seen, time.time() - 5) is None  # the other reaper


async def test_an_overdue_task_whose_record_redis_lost_leaves_the_due_set(
        backend: ListBackend) -> None:
    """Its record evicted or expired: nothing to send again, and the id is dropped."""
    gone = await backend.submit("add", [1, 2])
    await _overdue(backend, gone.id)
    await backend.redis.delete(TASK_KEY.format(gone.id))
    assert await backend.store.overdue(time.time() - 5, 10) == []
    assert await backend.redis.zscore(DUE_KEY, gone.id) is None
    assert await _reaper(backend).sweep() == 0


async def test_the_reaper_leaves_a_live_workers_task(backend: ListBackend) -> None:
    record = await _started_by(backend, "host:1")
    await _beat(backend.redis, "host:1", time.time())
    reaper = Reaper(backend, "host:2")
    reaper._trusted_from = 0
    assert await reaper.sweep() == 0
    assert (await backend.get(record.id)).state is TaskState.STARTED


async def test_after_a_redis_error_the_reaper_judges_nobody_at_once(
        backend: ListBackend) -> None:
    await _started_by(backend, "host:1")
    await _beat(backend.redis, "host:1", time.time() - 6)
    reaper = Reaper(backend, "host:2")  # just started: as after an error, it settles first
    assert await reaper.sweep() == 0
    reaper._trusted_from = 0
    assert await reaper.sweep() == 1


async def test_a_task_whose_run_was_cancelled_is_sent_again(backend: ListBackend) -> None:
    record = await _started_by(backend, "host:1")
    await _beat(backend.redis, "host:1", time.time())  # alive: it cancelled the run
    await backend.store.orphan(record.id, "host:1")
    assert await backend.redis.sismember(ORPHANS_KEY, record.id)
    assert await Reaper(backend, "host:2").sweep() == 1
    assert (await backend.get(record.id)).deliveries == 1
    assert not await backend.redis.sismember(ORPHANS_KEY, record.id)


async def test_a_send_that_fails_is_tried_again_next_pass(backend: ListBackend) -> None:
    record = await _started_by(backend, "host:1")
    await _beat(backend.redis, "host:1", time.time() - 6)
    reaper = Reaper(backend, "host:2")
    reaper._trusted_from = 0

    async def refuse(_: TaskRecord) -> None:
        raise ConnectionError("broker away")

    backend.redeliver = refuse  # type: ignore[method-assign]
    assert await reaper.sweep() == 0
    assert await backend.redis.sismember(OWNED_KEY.format("host:1"), record.id)
    del backend.redeliver
    assert await reaper.sweep() == 1
    assert (await backend.get(record.id)).deliveries == 2  # a new delivery id each try


async def test_a_finished_task_of_a_dead_worker_is_not_sent_again(backend: ListBackend) -> None:
    record = await _started_by(backend, "host:1")
    await backend.store.finish(record.id, TaskState.SUCCESS, result=5, worker="other:9")
    await backend.redis.sadd(OWNED_KEY.format("host:1"), record.id)  # a stale entry
    await _beat(backend.redis, "host:1", time.time() - 6)
    reaper = Reaper(backend, "host:2")
    reaper._trusted_from = 0
    assert await reaper.sweep() == 0
    assert (await backend.get(record.id)).state is TaskState.SUCCESS


async def test_the_first_final_state_wins(backend: ListBackend) -> None:
    record = await _started_by(backend, "host:1")
    await backend.store.finish(record.id, TaskState.SUCCESS, result=1, worker="host:1")
    await backend.store.finish(record.id, TaskState.FAILURE, worker="host:2")
    assert ((await backend.get(record.id)).state, (await backend.get(record.id)).result) == (
        TaskState.SUCCESS, 1)


async def test_a_heartbeat_registers_and_a_stopping_owner_is_dead_at_once(
        settings: Settings, backend: ListBackend) -> None:
    beat = Heartbeat(settings.redis_url, "list", 0.2).start()
    assert [w["id"] for w in await live_workers(backend.redis, "list", 0.2)] == [beat.id]
    await backend.redis.sadd(OWNED_KEY.format(beat.id), "some-task")
    beat.stop()
    assert [w["id"] for w in await workers(backend.redis, dead_for=0)] == [beat.id]
    assert await live_workers(backend.redis, "list", 0.2) == []


async def test_a_worker_started_again_with_the_same_host_and_pid_is_a_new_owner(
        settings: Settings, backend: ListBackend) -> None:
    """A container restarted (same hostname, same pid in its fresh PID namespace): the
    new life must not keep the last life's lease alive, or its STARTED tasks would
    look owned by a live worker for ever."""
    last_life = Heartbeat(settings.redis_url, "list", 0.2)
    last_life.client.close()
    record = await _started_by(backend, last_life.id)
    await _beat(backend.redis, last_life.id, time.time() - 6)  # its lease lapsed
    this_life = Heartbeat(settings.redis_url, "list", 0.2).start()  # same host and pid
    try:
        assert host_and_pid(this_life.id) == host_and_pid(last_life.id)
        reaper = Reaper(backend, "host:2")
        reaper._trusted_from = 0
        assert await reaper.sweep() == 1
        assert (await backend.get(record.id)).deliveries == 1
    finally:
        this_life.stop()


async def test_a_heartbeat_writes_what_was_deferred_before_it_beats(
        settings: Settings, backend: ListBackend) -> None:
    done: list[int] = []
    beat = Heartbeat(settings.redis_url, "list", 0.05)
    beat.defer(lambda: done.append(1))
    beat.start()
    try:
        assert done == [1]
    finally:
        beat.stop()


async def test_a_start_tried_again_after_a_lost_reply_is_its_own_not_busy(
        backend: ListBackend) -> None:
    """Redis ran the start script but its reply was lost (the connection broke): the
    runner tries the same start again. It must find its own run and go on, where any
    other delivery of the task, even in the same worker, is BUSY."""
    record = await backend.submit("sleep", [5])
    owner = "host:1"
    await _beat(backend.redis, owner, time.time())
    assert await backend.store.start(record.id, owner, "7") == (TaskState.PENDING, 0)
    assert await backend.store.start(record.id, owner, "7") == (None, 0)  # the same run
    assert (await backend.store.start(record.id, owner, "8"))[0] == BUSY
    assert (await backend.store.start(record.id, "host:2", "7"))[0] == BUSY
    assert (await backend.store.start(record.id, owner))[0] == BUSY


# -- the create script sent again ------------------------------------------------------

async def test_a_create_sent_again_after_its_task_ran_changes_nothing(
        backend: ListBackend) -> None:
    """A create whose reply was lost is sent again (redis-py's retry, the direct
    call's slow way): the task may have run meanwhile. The second create finds its
    record and writes nothing: not PENDING again, no second message."""
    record, _, _ = backend.prepare("noop", [1], {}, None, time.time())
    push = [("RPUSH", "qb:test:queue", "message")]
    assert await backend.store.create(record, push=push) == record.id
    await backend.store.start(record.id, "host:1")
    await backend.store.finish(record.id, TaskState.SUCCESS, result=1, worker="host:1")
    assert await backend.store.create(record, push=push) == record.id
    again = await backend.get(record.id)
    assert (again.state, again.result) == (TaskState.SUCCESS, 1)
    assert await backend.redis.llen("qb:test:queue") == 1


