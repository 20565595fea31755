"""Idempotency: submits with one `idempotency_key` give one task that runs once, even
when concurrent; a key bound to a lost task does not block; keys are per task name."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import redis

from core.store.keys import IDEMPOTENCY_KEY
from core.tasks.features import Support
from tests.conformance.support import Declare, finished, flaky_runs, submit


async def test_idempotency_key_returns_first_task_and_runs_once(
        client: httpx.AsyncClient, feature: Declare, redis_client: redis.Redis) -> None:
    assert feature("idempotency") is not Support.NONE  # core gives it to every backend
    key, idem = uuid.uuid4().hex, uuid.uuid4().hex
    first = await submit(client, "flaky", 0, key, options={"idempotency_key": idem})
    second = await submit(client, "flaky", 0, key, options={"idempotency_key": idem})
    assert second["id"] == first["id"]
    other = await submit(client, "flaky", 0, key, options={"idempotency_key": idem + "x"})
    assert other["id"] != first["id"]
    for task in (first, other):
        await finished(client, task["id"])
    assert flaky_runs(redis_client, key) == 2  # once for each distinct key, not three times


async def test_concurrent_submits_with_one_idempotency_key_give_one_task(
        client: httpx.AsyncClient, redis_client: redis.Redis) -> None:
    keys = [uuid.uuid4().hex for _ in range(20)]
    pairs = await asyncio.gather(*(
        asyncio.gather(*(client.post("/tasks/flaky", json={
            "args": [0, key], "options": {"idempotency_key": key}}) for _ in range(2)))
        for key in keys))
    for key, (one, two) in zip(keys, pairs, strict=True):
        assert (one.status_code, two.status_code) == (202, 202), (one.text, two.text)
        assert one.json()["id"] == two.json()["id"]
        await finished(client, one.json()["id"])
        assert flaky_runs(redis_client, key) == 1


async def test_an_idempotency_key_bound_to_a_lost_task_does_not_block_it(
        client: httpx.AsyncClient, redis_client: redis.Redis) -> None:
    """A key bound to a task whose record is gone (a crash between claiming the key and
    creating the record, or a record Redis lost) is taken by the next submit with it:
    no 404 for as long as the key lives."""
    idem = uuid.uuid4().hex
    redis_client.set(IDEMPOTENCY_KEY.format("add", idem), str(uuid.uuid4()), ex=600)
    response = await client.post("/tasks/add", json={"args": [2, 2], "options": {
        "idempotency_key": idem}})
    assert response.status_code == 202, response.text
    assert (await finished(client, response.json()["id"]))["result"] == 4
    again = await submit(client, "add", 2, 2, options={"idempotency_key": idem})
    assert again["id"] == response.json()["id"]


async def test_idempotency_keys_are_scoped_by_task_name(client: httpx.AsyncClient) -> None:
    idem = uuid.uuid4().hex
    first = await submit(client, "add", 1, 1, options={"idempotency_key": idem})
    other = await submit(client, "divide", 1, 1, options={"idempotency_key": idem})
    assert other["id"] != first["id"] and other["name"] == "divide"
