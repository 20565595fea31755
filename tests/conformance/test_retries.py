"""Retries: RETRY between runs, FAILURE once exhausted, the task's defaults and their
override, all of up to 100 retries run, and core's backoff on every backend."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import httpx
import pytest
import redis

from core.cli.procs import Proc
from core.tasks.features import Support
from tests.conformance.support import (
    Declare,
    Timeline,
    expect_unsupported,
    finished,
    flaky_runs,
    run,
    state_seen,
    submit,
)


async def test_retries_until_success_with_retry_state_between(
        client: httpx.AsyncClient, feature: Declare, backend_name: str,
        redis_client: redis.Redis) -> None:
    options = {"max_retries": 3, "retry_backoff": 0.4}
    if feature("retries") is Support.NONE:
        return await expect_unsupported(client, backend_name, "flaky", [2, "k"], options)
    key = uuid.uuid4().hex
    task = await submit(client, "flaky", 2, key, options=options)
    assert await state_seen(client, task["id"], {"RETRY"}) == "RETRY"
    body = await finished(client, task["id"])
    assert (body["state"], body["result"], body["retries"]) == ("SUCCESS", 3, 2)
    assert flaky_runs(redis_client, key) == 3


async def test_a_retry_goes_back_to_its_own_queue_from_a_worker_of_two(
        client: httpx.AsyncClient, feature: Declare, queue_name: str,
        start_worker: Callable[..., Proc], redis_client: redis.Redis) -> None:
    """A worker of two queues sends the retry of its second queue's task back to that
    queue, delayed by core's backoff (a library may hold a delayed message per queue,
    or in one place for all, routed by the first queue): once that worker is gone
    before the retry is due, a worker of the second queue alone runs it."""
    if feature("retries") is Support.NONE:
        pytest.skip("unsupported: the 422 is proved by the retries test")
    first, second = f"{queue_name}-a", f"{queue_name}-b"
    both = start_worker(concurrency=1, queues=f"{first},{second}")
    key = uuid.uuid4().hex
    # core's backoff waits 3-6 s (equal jitter): the worker stops well before.
    task = await submit(client, "flaky", 1, key, options={
        "queue": second, "max_retries": 1, "retry_backoff": 6})
    try:
        assert await state_seen(client, task["id"], {"RETRY"}) == "RETRY"
    finally:
        both.stop()
    start_worker(concurrency=1, queues=second)
    body = await finished(client, task["id"], timeout=60)
    assert (body["state"], body["retries"]) == ("SUCCESS", 1)
    assert flaky_runs(redis_client, key) == 2


async def test_retries_exhausted_is_failure(client: httpx.AsyncClient, feature: Declare,
                                            redis_client: redis.Redis) -> None:
    if feature("retries") is Support.NONE:
        pytest.skip("unsupported: the 422 is proved by the test above")
    key = uuid.uuid4().hex
    body = await run(client, "flaky", 5, key, options={"max_retries": 1, "retry_backoff": 0.05})
    assert (body["state"], body["retries"]) == ("FAILURE", 1)
    assert body["error"]["type"] == "RuntimeError"
    assert flaky_runs(redis_client, key) == 2


async def test_task_default_retries_apply_and_zero_overrides(
        client: httpx.AsyncClient, feature: Declare, redis_client: redis.Redis) -> None:
    if feature("retries") is Support.NONE:
        pytest.skip("unsupported: the 422 is proved by the retries test")
    # flaky declares max_retries=5 in core: one failure is retried without options
    assert (await run(client, "flaky", 1, uuid.uuid4().hex))["state"] == "SUCCESS"
    key = uuid.uuid4().hex
    body = await run(client, "flaky", 1, key, options={"max_retries": 0})
    assert (body["state"], body["retries"]) == ("FAILURE", 0)
    assert flaky_runs(redis_client, key) == 1


async def test_retries_up_to_the_maximum_all_run(client: httpx.AsyncClient, feature: Declare,
                                                 redis_client: redis.Redis) -> None:
    """max_retries is bounded at 100: each library must let all of them run (one that
    counts every delivery as a try stops at 100 and leaves the task in RETRY)."""
    if feature("retries") is Support.NONE:
        pytest.skip("unsupported: the 422 is proved by the retries test")
    key = uuid.uuid4().hex
    body = await run(client, "flaky", 100, key, options={"max_retries": 100,
                                                          "retry_backoff": 0})
    assert (body["state"], body["result"], body["retries"]) == ("SUCCESS", 101, 100)
    assert flaky_runs(redis_client, key) == 101


# Core's policy waits retry_backoff * 2**n, with equal jitter: between half of it and
# all of it (core/tasks/policy.py). Dramatiq's own formula waits 2**(n+1) times its
# min_backoff with its jitter (from all of it to twice): the first retry of a 1.5 s
# backoff in 1.5-3 s, the second in 3-6 s, where core waits 0.75-1.5 s, then 1.5-3 s.
RETRY_BACKOFF = 1.5


# Scheduling slack allowed past core's delay: wide against the libraries' few tens of
# milliseconds, narrow against the gap between the two formulas.
RETRY_SLACK = 1.0


async def test_retries_wait_cores_backoff_on_every_backend(
        client: httpx.AsyncClient, feature: Declare, backend_name: str, redis_url: str,
        redis_client: redis.Redis) -> None:
    options = {"max_retries": 2, "retry_backoff": RETRY_BACKOFF}
    if feature("retries") is Support.NONE:
        return await expect_unsupported(client, backend_name, "flaky", [2, "k"], options)
    keys = [uuid.uuid4().hex for _ in range(4)]
    async with Timeline(redis_url) as timeline:
        tasks = [await submit(client, "flaky", 2, key, options=options) for key in keys]
        bodies = [await finished(client, task["id"], timeout=60) for task in tasks]
    assert [(b["state"], b["retries"]) for b in bodies] == [("SUCCESS", 2)] * len(keys)
    for task in tasks:
        gaps = timeline.retry_gaps(task["id"])
        assert len(gaps) == 2, timeline.seen.get(task["id"])
        for attempt, gap in enumerate(gaps):
            delay = RETRY_BACKOFF * 2**attempt
            assert delay / 2 - 0.05 <= gap <= delay + RETRY_SLACK, (
                f"retry {attempt + 1} started {gap:.2f}s after RETRY; core's policy "
                f"waits {delay / 2:.2f}-{delay:.2f}s")
