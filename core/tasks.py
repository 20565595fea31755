"""The shared tasks, defined once for every backend (shared/API.md)."""

from __future__ import annotations

import asyncio
import hashlib

from core import db
from core.context import current_task
from core.db.users import add_welcome
from core.registry import task
from core.schedule import periodic


@task()
def divide(x: float, y: float) -> float:
    """x / y; y == 0 fails with ZeroDivisionError."""
    if y == 0:
        raise ZeroDivisionError("division by zero")  # the same words for ints and floats
    return x / y


@task()
def add(x: float, y: float) -> float:
    """x + y."""
    return x + y


@task()
async def noop(payload: object = None) -> object:
    """Returns its argument: the benchmark's unit of overhead (async, so no backend
    moves it to a thread: on arq it runs on the worker's own loop)."""
    return payload


@task()
async def sleep(seconds: float, key: str | None = None) -> float:
    """Awaits for `seconds`, returns them: the I/O-bound workload. With `key`, counts
    the runs that got to the end in Redis (`qb:slept:<key>`): a side effect that a
    cancelled or refused run never writes."""
    await asyncio.sleep(seconds)
    if key is not None:
        redis = current_task().redis
        await redis.incr(f"qb:slept:{key}")
        await redis.expire(f"qb:slept:{key}", 3600)
    return seconds


@task()
def cpu(n: int) -> str:
    """n rounds of sha256 over its own digest: the CPU-bound workload."""
    digest = b"queuebench"
    for _ in range(n):
        digest = hashlib.sha256(digest).digest()
    return digest.hex()


@task(max_retries=5, retry_backoff=0.1)
async def flaky(fail_times: int, key: str) -> int:
    """Fails its first `fail_times` runs for `key`, then returns the attempt count."""
    redis = current_task().redis
    counter = f"qb:flaky:{key}"
    attempt = int(await redis.incr(counter))
    await redis.expire(counter, 3600)
    if attempt <= fail_times:
        raise RuntimeError(f"flaky failure {attempt} of {fail_times} for {key!r}")
    return attempt


@task()
def fail(message: str) -> None:
    """Always raises RuntimeError(message)."""
    raise RuntimeError(message)


@task()
async def welcome(user_id: int) -> int:
    """Writes a new user's welcome notification; its id. It opens its own session on
    the worker's event loop, as any task that uses the database does."""
    async with db.session() as session:
        return await add_welcome(session, user_id, current_task().task_id)


# The schedule declared in core (SCHEDULE_FILE, when set, replaces it): a noop at the
# top of every minute, the least a running scheduler can show.
periodic("noop-every-minute", "noop", args=["tick"], cron="* * * * *")
