"""The benchmark's work, identical to the shared tasks `noop`, `sleep` and `cpu` of
core/tasks/shared.py (the raw mode may not import queuebench code, so it imports these),
and `counted`, the raw apps' `sleep(seconds, key)`: it counts the runs that reached their
end under COUNTED_KEY in the Redis the library keeps its results in (RAW_REDIS_URL),
so the fault cells (bench/faults.py) see a task lost or run twice."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from typing import Any

import redis
import redis.asyncio
import redis.asyncio.retry
import redis.retry
from redis.backoff import ExponentialBackoff

WORKLOADS = ("noop", "sleep", "cpu")
COUNTED_KEY = "qb:counted:{}"
# As core's shared `sleep` (COUNT_RETRY): a run that reached its end is counted though
# Redis be away for up to about a minute (the connect included), so a count measures
# delivery, not the outage.
SYNC_RETRY = redis.retry.Retry(ExponentialBackoff(cap=2.0, base=0.1), 40)
ASYNC_RETRY = redis.asyncio.retry.Retry(ExponentialBackoff(cap=2.0, base=0.1), 40)


async def _ignore(*_: object) -> None:
    pass


def results_url() -> str:
    """The Redis of the raw apps' results, where `counted` counts."""
    return os.environ.get("RAW_REDIS_URL", "redis://127.0.0.1:6379/9")


def noop(payload: Any = None) -> Any:
    return payload


def cpu(n: int) -> str:
    digest = b"queuebench"
    for _ in range(n):
        digest = hashlib.sha256(digest).digest()
    return digest.hex()


def sleep_sync(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


async def sleep_async(seconds: float) -> float:
    await asyncio.sleep(seconds)
    return seconds


_sync_client: redis.Redis | None = None


def counted_sync(key: str, seconds: float) -> float:
    """Sleeps, then counts this run: the INCR is the run's last act, so a run killed
    before its end is not counted."""
    global _sync_client
    time.sleep(seconds)
    if _sync_client is None:
        _sync_client = redis.Redis.from_url(results_url(), socket_timeout=5)
    client = _sync_client
    SYNC_RETRY.call_with_retry(lambda: client.incr(COUNTED_KEY.format(key)),
                               lambda _: None)
    return seconds


async def counted_async(key: str, seconds: float) -> float:
    """counted_sync on an event loop (a client per call: a worker may run several loops)."""
    await asyncio.sleep(seconds)
    client = redis.asyncio.Redis.from_url(results_url(), socket_timeout=5)
    try:
        await ASYNC_RETRY.call_with_retry(lambda: client.incr(COUNTED_KEY.format(key)),
                                          _ignore)
    finally:
        await client.aclose()
    return seconds
