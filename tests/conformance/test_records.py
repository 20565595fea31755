"""The task record stays whole: a run whose record Redis lost is refused, a record
outlives its task's delay, and a final write Redis refuses is written later."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

import httpx
import redis

from core.cli.procs import Proc, Server, wait_until
from core.store.keys import OWNED_KEY, TASK_KEY
from tests.conformance.support import finished, flaky_runs, run, state_seen, submit


async def test_a_record_lost_before_its_task_starts_refuses_the_run(
        client: httpx.AsyncClient, queue_name: str, start_worker: Callable[..., Proc],
        redis_client: redis.Redis) -> None:
    start_worker(concurrency=1, queues=queue_name)
    key = uuid.uuid4().hex
    lost = await submit(client, "flaky", 0, key, options={"queue": queue_name,
                                                            "countdown": 1.0})
    redis_client.delete(TASK_KEY.format(lost['id']))  # Redis lost it (eviction, FLUSHDB)
    # A later task on the same one-slot queue has run: the lost one's turn has passed.
    later = await run(client, "add", 1, 1, options={"queue": queue_name, "countdown": 2.0})
    assert later["state"] == "SUCCESS"
    assert flaky_runs(redis_client, key) == 0
    assert not redis_client.exists(TASK_KEY.format(lost['id']))  # nothing partial written
    assert (await client.get(f"/tasks/{lost['id']}")).status_code == 404
    listed = await client.get("/tasks", params={"limit": 1000})
    assert listed.status_code == 200
    assert all(t["id"] and t["name"] for t in listed.json())


async def test_a_record_outlives_its_delay_when_the_ttl_is_shorter(
        start_server: Callable[..., Server], worker: Proc) -> None:
    short = start_server(RECORD_TTL="2")
    try:
        async with httpx.AsyncClient(base_url=short.url, timeout=60) as http:
            task = await submit(http, "add", 2, 3, options={"countdown": 3.0})
            body = await finished(http, task["id"])
            listed = await http.get("/tasks", params={"name": "add", "limit": 1000})
    finally:
        short.stop()
    assert (body["state"], body["result"], body["name"]) == ("SUCCESS", 5, "add")
    assert listed.status_code == 200


async def test_a_final_write_that_redis_refuses_is_written_later(
        client: httpx.AsyncClient, queue_name: str, start_worker: Callable[..., Proc],
        redis_client: redis.Redis) -> None:
    """Redis refuses the final write (here: the worker's own set of running tasks is
    made a string, so the finish script fails with WRONGTYPE) for longer than the
    runner's retries: the heartbeat thread writes it once Redis takes it again."""
    own = start_worker(concurrency=1, queues=queue_name)
    task = await submit(client, "sleep", 1, options={"queue": queue_name})
    assert await state_seen(client, task["id"], {"STARTED"}) == "STARTED"
    worker_id = redis_client.hget(TASK_KEY.format(task['id']), "worker")
    owned = OWNED_KEY.format(worker_id)
    redis_client.set(owned, "not a set")
    try:
        await asyncio.to_thread(
            wait_until, lambda: f"task {task['id']}: Redis refuses its SUCCESS" in own.output(),
            30, 0.05, "the refused final write")
        assert (await client.get(f"/tasks/{task['id']}")).json()["state"] == "STARTED"
    finally:
        redis_client.delete(owned)
    body = await finished(client, task["id"])
    assert (body["state"], body["result"]) == ("SUCCESS", 1)
