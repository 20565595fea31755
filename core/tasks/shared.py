"""The shared tasks, defined once for every backend (docs/api.md, "Shared tasks")."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Annotated

from pydantic import BeforeValidator, Field, Strict
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from core import db
from core.db.users import add_welcome
from core.store.keys import FLAKY_KEY, SLEPT_KEY
from core.tasks.context import current_task
from core.tasks.options import MAX_ID, json_number
from core.tasks.registry import Registry

# Bounds of the arguments, so that no submission holds a worker slot for ever (the
# time limit, DEFAULT_TIME_LIMIT, is the other guard): a 422 past them, in /docs too.
MAX_SLEEP = 3600.0
MAX_CPU_ROUNDS = 1_000_000_000  # about 8 minutes here, under DEFAULT_TIME_LIMIT
Text = Annotated[str, Field(max_length=10_000)]
# JSON's numbers (not true for 1, nor "5"), finite; an integer may be written 3.0.
Finite = Annotated[float, Strict(), Field(allow_inf_nan=False)]

TASKS = Registry()
# A run that reached its end is counted even when Redis is away for a while (restarted,
# failed over, cut off): the count is the witness of delivery (tests/chaos.py,
# bench/faults.py), so it must not fail with the broker it witnesses. 40 tries, 0.1 s
# doubling to 2 s apart: about a minute.
COUNT_RETRY = Retry(ExponentialBackoff(cap=2.0, base=0.1), retries=40)


async def _ignore(*_: object) -> None:
    pass


@TASKS.task()
def divide(x: Finite, y: Finite) -> float:
    """x / y; y == 0 fails with ZeroDivisionError."""
    if y == 0:
        raise ZeroDivisionError("division by zero")  # the same words for ints and floats
    return x / y


@TASKS.task()
def add(x: Finite, y: Finite) -> float:
    """x + y."""
    return x + y


@TASKS.task()
async def noop(payload: object = None) -> object:
    """Returns its argument: the benchmark's unit of overhead (async, so no backend
    moves it to a thread: on arq it runs on the worker's own loop)."""
    return payload


@TASKS.task()
async def sleep(seconds: Annotated[float, Strict(), Field(ge=0, le=MAX_SLEEP, allow_inf_nan=False)],
                key: Annotated[str, Field(max_length=200)] | None = None) -> float:
    """Awaits for `seconds`, returns them: the I/O-bound workload. With `key`, counts
    the runs that got to the end in Redis (`qb:slept:<key>`): a side effect that a
    cancelled or refused run never writes, and that Redis being away does not fail
    (COUNT_RETRY)."""
    await asyncio.sleep(seconds)
    if key is not None:
        redis, counter = current_task().redis, SLEPT_KEY.format(key)

        async def count() -> None:
            async with redis.pipeline(transaction=True) as pipe:
                await pipe.incr(counter).expire(counter, 3600).execute()

        await COUNT_RETRY.call_with_retry(count, _ignore)
    return seconds


@TASKS.task()
def cpu(n: Annotated[int, Field(ge=0, le=MAX_CPU_ROUNDS), BeforeValidator(json_number)]) -> str:
    """n rounds of sha256 over its own digest: the CPU-bound workload."""
    digest = b"queuebench"
    for _ in range(n):
        digest = hashlib.sha256(digest).digest()
    return digest.hex()


@TASKS.task(max_retries=5, retry_backoff=0.1)
async def flaky(fail_times: Annotated[int, Field(ge=0, le=100), BeforeValidator(json_number)],
                key: Annotated[str, Field(max_length=200)]) -> int:
    """Fails its first `fail_times` runs for `key`, then returns the attempt count."""
    redis = current_task().redis
    counter = FLAKY_KEY.format(key)
    attempt = int(await redis.incr(counter))
    await redis.expire(counter, 3600)
    if attempt <= fail_times:
        raise RuntimeError(f"flaky failure {attempt} of {fail_times} for {key!r}")
    return attempt


@TASKS.task()
def fail(message: Text) -> None:
    """Always raises RuntimeError(message)."""
    raise RuntimeError(message)


@TASKS.task()
async def welcome(user_id: Annotated[int, Field(ge=1, le=MAX_ID),
                                       BeforeValidator(json_number)]) -> int:
    """Writes a new user's welcome notification; its id. It opens its own session on
    the worker's event loop, as any task that uses the database does."""
    task = current_task()
    async with db.session(task.settings.database_url) as session:
        return await add_welcome(session, user_id, task.task_id)
