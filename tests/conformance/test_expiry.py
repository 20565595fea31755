"""Expiry: a task not started before `expires` ends EXPIRED without running, whether a
worker takes it late or no worker consumes its queue."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import redis

from core.tasks.features import Support
from tests.conformance.support import Declare, expect_unsupported, flaky_runs, run, submit


async def test_expired_task_never_runs(client: httpx.AsyncClient, feature: Declare,
                                       backend_name: str, redis_client: redis.Redis) -> None:
    options = {"countdown": 1.0, "expires": 0.3}
    if feature("expiry") is Support.NONE:
        return await expect_unsupported(client, backend_name, "flaky", [0, "k"], options)
    key = uuid.uuid4().hex
    body = await run(client, "flaky", 0, key, options=options)
    assert body["state"] == "EXPIRED"
    assert body["started_at"] is None and body["result"] is None
    assert flaky_runs(redis_client, key) == 0


async def test_a_task_no_worker_consumes_expires(client: httpx.AsyncClient,
                                                 queue_name: str) -> None:
    task = await submit(client, "add", 1, 1, options={"queue": queue_name, "expires": 0.5})
    deadline = asyncio.get_running_loop().time() + 30
    while asyncio.get_running_loop().time() < deadline:  # the reapers' sweep, not a read
        listed = (await client.get("/tasks", params={"state": "EXPIRED", "limit": 1000})).json()
        if any(t["id"] == task["id"] for t in listed):
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("the task never became EXPIRED in the listing")
    assert (await client.get(f"/tasks/{task['id']}")).json()["state"] == "EXPIRED"
