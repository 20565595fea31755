"""What the worker's unit tests (test_runner.py, test_lane.py, test_interrupt.py) share:
a flushed Redis database, records made through the store, tasks of their own
registered for one test, and a poll with a deadline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
import pytest_asyncio
from pydantic import BaseModel
from redis.asyncio import Redis

import core.worker.heartbeat as heartbeat_module
from core.settings import Settings
from core.store.records import RecordStore, TaskRecord, connect, new_task_id
from core.tasks.options import TaskOptions
from core.tasks.registry import TaskSpec
from core.tasks.shared import TASKS
from tests.conftest import redis_database

WORKER_DB = 10


@pytest.fixture
def settings() -> Settings:
    return Settings(redis_url=redis_database(WORKER_DB, flush=True), history_enabled=False,
                    redelivery_after=5, worker_heartbeat=0.2)


@pytest_asyncio.fixture
async def redis(settings: Settings) -> AsyncIterator[Redis]:
    client = connect(settings.redis_url)
    yield client
    await client.aclose()


@pytest_asyncio.fixture
async def store(redis: Redis) -> RecordStore:
    return RecordStore(redis, history=False, lease=5)


@pytest.fixture
def own_heartbeat(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A process heartbeat of the test's own (on its Redis), stopped after it."""
    monkeypatch.setattr(heartbeat_module, "_process_beat", None)
    yield
    if heartbeat_module._process_beat is not None:
        heartbeat_module._process_beat.stop()


async def new_record(store: RecordStore, name: str = "noop", **fields: Any) -> TaskRecord:
    record = TaskRecord(id=new_task_id(), name=name, backend="test",
                        submitted_at=time.time(), **fields)
    assert await store.create(record) == record.id
    return record


def register(monkeypatch: pytest.MonkeyPatch, fn: Callable[..., Any]) -> str:
    """Register `fn` as a task under its name for this test; its name."""
    monkeypatch.setitem(TASKS._specs, fn.__name__, TaskSpec(name=fn.__name__, fn=fn,
                                                        defaults=TaskOptions(),
                                                        params=BaseModel))
    return fn.__name__


async def eventually(check: Callable[[], Awaitable[Any]], seconds: float = 5) -> Any:
    """`check`'s answer once it is true, or its last after a deadline."""
    deadline = time.monotonic() + seconds
    while not (found := await check()) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    return found
