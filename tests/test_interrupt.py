"""core/worker/interrupt.py: a running task stopped, a sync one in its thread and an
async one on its loop, when it is revoked (DELETE's announcement, heard by the
listener on a real Redis) and when it runs over its time limit."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from redis.asyncio import Redis

from core.errors import TimeLimitExceeded
from core.settings import Settings
from core.states import TaskState
from core.store.events import announce
from core.store.records import RecordStore
from core.worker.interrupt import OverTime, Revoked, Stopper
from core.worker.runner import OffloadRunner
from tests.support_worker import eventually, new_record, register


def _spin(ran: threading.Event) -> None:
    """A sync task that never ends by itself (Python code: an interrupt lands)."""
    ran.set()
    while True:
        time.sleep(0.01)


def _in_thread(stopper: Stopper, task_id: str, time_limit: float | None = None,
               ) -> tuple[threading.Thread, threading.Event, list[BaseException]]:
    ran, raised = threading.Event(), []

    def call() -> None:
        with stopper.watch(task_id) as run:
            try:
                stopper.call_sync(run, _spin, {"ran": ran}, time_limit)
            except BaseException as exc:  # what stopped it is the answer
                raised.append(exc)

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    return thread, ran, raised


def test_a_revoked_sync_task_is_stopped_in_its_thread() -> None:
    stopper = Stopper(None)
    thread, ran, raised = _in_thread(stopper, "t-1")
    assert ran.wait(5)
    assert stopper.revoked("other") == 0
    assert stopper.revoked("t-1") == 1
    thread.join(5)
    assert not thread.is_alive()
    assert [type(e) for e in raised] == [Revoked]


def test_a_sync_task_over_its_time_limit_is_stopped_in_its_thread() -> None:
    stopper = Stopper(None)
    started = time.monotonic()
    thread, _, raised = _in_thread(stopper, "t-2", time_limit=0.2)
    thread.join(5)
    assert not thread.is_alive()
    assert [type(e) for e in raised] == [OverTime]
    assert time.monotonic() - started >= 0.2


async def test_a_revoked_async_task_is_cancelled_on_its_loop() -> None:
    stopper = Stopper(None)
    awaiting = asyncio.Event()

    async def task() -> None:
        with stopper.watch("t-3", asyncio.get_running_loop()) as run, stopper.awaiting(run):
            awaiting.set()
            await asyncio.sleep(30)

    running = asyncio.create_task(task())
    await awaiting.wait()
    # From another thread, as the listener does.
    threading.Thread(target=stopper.revoked, args=("t-3",)).start()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(running, 5)


async def test_an_announced_revoke_stops_the_run_through_the_listener(
        settings: Settings, redis: Redis) -> None:
    stopper = Stopper(settings.redis_url)
    thread, ran, raised = _in_thread(stopper, "t-4")
    assert ran.wait(5)
    # The listener subscribes in its own thread: announce until it has heard.
    assert await eventually(lambda: _announced(redis, "t-4", thread))
    assert [type(e) for e in raised] == [Revoked]


async def _announced(redis: Redis, task_id: str, thread: threading.Thread) -> bool:
    await announce(redis, task_id)
    await asyncio.sleep(0.05)
    return not thread.is_alive()


# -- through the runner: its record says what stopped it ----------------------------------

async def test_an_async_task_over_its_time_limit_ends_failure_time_limit_exceeded(
        settings: Settings, redis: Redis, store: RecordStore, own_heartbeat: None,
        monkeypatch: pytest.MonkeyPatch) -> None:
    async def sleeps_long() -> None:
        await asyncio.sleep(30)

    register(monkeypatch, sleeps_long)
    runner = OffloadRunner(settings, redis)
    record = await new_record(store, "sleeps_long")
    with pytest.raises(TimeLimitExceeded):
        await runner.run(record.id, "sleeps_long", {}, {"time_limit": 0.2})
    done = await eventually(lambda: _final(store, record.id))
    assert (done.state, done.error["type"]) == (TaskState.FAILURE, "TimeLimitExceeded")


async def test_an_offloaded_sync_task_revoked_while_it_runs_is_stopped_and_stays_revoked(
        settings: Settings, redis: Redis, store: RecordStore, own_heartbeat: None,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """DELETE of a running sync task that arq runs in a thread: the record is REVOKED,
    the announcement stops the thread, and the run returns None with nothing written
    over the REVOKED."""
    ran = threading.Event()

    def spins() -> None:
        _spin(ran)

    register(monkeypatch, spins)
    runner = OffloadRunner(settings, redis)
    record = await new_record(store, "spins")
    running = asyncio.create_task(runner.run(record.id, "spins", {}))
    assert await asyncio.to_thread(ran.wait, 5)
    assert await store.revoke(record.id) == TaskState.STARTED  # what it found
    assert await eventually(lambda: _revoked_run_ended(redis, record.id, running))
    assert await running is None
    assert (await store.get(record.id)).state is TaskState.REVOKED  # type: ignore[union-attr]


async def _revoked_run_ended(redis: Redis, task_id: str, running: asyncio.Task[Any]) -> bool:
    await announce(redis, task_id)
    await asyncio.sleep(0.05)
    return running.done()


async def _final(store: RecordStore, task_id: str) -> Any:
    record = await store.get(task_id)
    return record if record is not None and record.state.finished else None
