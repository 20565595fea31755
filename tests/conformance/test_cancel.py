"""Cancel (DELETE): a pending or queued task never runs; a finished one is 409; a running
one is stopped, sync or async, in every worker set-up, and its slot is freed (or the
refusal says which backend)."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import httpx
import pytest
import redis

from core.cli.procs import Proc
from core.tasks.features import Support
from tests.conformance.support import (
    CPU_FOREVER,
    WORKER_SETUPS,
    Declare,
    finished,
    flaky_runs,
    run,
    sleep_runs,
    state_seen,
    submit,
)


async def test_cancel_pending_task_never_runs(client: httpx.AsyncClient, feature: Declare,
                                              redis_client: redis.Redis) -> None:
    assert feature("cancel_pending") is not Support.NONE  # core gives it to every backend
    key = uuid.uuid4().hex
    task = await submit(client, "flaky", 0, key, options={"countdown": 1.0})
    response = await client.delete(f"/tasks/{task['id']}")
    assert response.status_code == 202
    assert response.json()["state"] == "REVOKED"
    # A later task on the same queue has run: the revoked one's turn has passed.
    assert (await run(client, "add", 1, 1, options={"countdown": 1.5}))["state"] == "SUCCESS"
    assert flaky_runs(redis_client, key) == 0
    assert (await client.get(f"/tasks/{task['id']}")).json()["state"] == "REVOKED"


async def test_cancel_finished_task_is_409(client: httpx.AsyncClient) -> None:
    body = await run(client, "add", 1, 1)
    response = await client.delete(f"/tasks/{body['id']}")
    assert response.status_code == 409
    assert "finished" in response.json()["detail"]


async def test_cancel_running_task(client: httpx.AsyncClient, feature: Declare,
                                   backend_name: str) -> None:
    task = await submit(client, "sleep", 3)
    assert await state_seen(client, task["id"], {"STARTED"}) == "STARTED"
    response = await client.delete(f"/tasks/{task['id']}")
    if feature("cancel_running") is Support.NONE:
        assert response.status_code == 409
        assert backend_name in response.json()["detail"]
        assert (await finished(client, task["id"]))["state"] == "SUCCESS"
        return
    assert response.status_code == 202
    assert response.json()["state"] == "REVOKED"
    body = await finished(client, task["id"])
    assert body["state"] == "REVOKED" and body["result"] is None
    # the worker goes on serving
    assert (await run(client, "add", 2, 2))["result"] == 4


async def test_cancel_of_a_task_queued_behind_busy_workers(
        client: httpx.AsyncClient, queue_name: str, start_worker: Callable[..., Proc],
        redis_client: redis.Redis) -> None:
    start_worker(concurrency=1, queues=queue_name)
    busy = await submit(client, "sleep", 1.5, options={"queue": queue_name})
    assert await state_seen(client, busy["id"], {"STARTED"}) == "STARTED"
    key = uuid.uuid4().hex
    queued = await submit(client, "flaky", 0, key, options={"queue": queue_name})
    response = await client.delete(f"/tasks/{queued['id']}")
    assert response.status_code == 202, response.text
    assert response.json()["state"] == "REVOKED"
    assert (await finished(client, busy["id"]))["state"] == "SUCCESS"
    assert (await run(client, "add", 1, 1, options={"queue": queue_name}))["state"] == "SUCCESS"
    assert flaky_runs(redis_client, key) == 0
    assert (await client.get(f"/tasks/{queued['id']}")).json()["state"] == "REVOKED"


@WORKER_SETUPS
@pytest.mark.parametrize("name", ["sleep", "cpu"])
async def test_cancel_stops_the_running_task_and_frees_its_slot(
        client: httpx.AsyncClient, feature: Declare, backend_name: str, queue_name: str,
        start_worker: Callable[..., Proc], redis_client: redis.Redis, name: str,
        processes: int | None) -> None:
    """An async `sleep` and a sync `cpu` that would run for minutes, on a worker with
    one slot: after DELETE the next task of that queue runs (the slot is free, so the
    cancelled run has ended), the record is REVOKED without a result, and the sleep
    never wrote what it writes at its end."""
    support = feature("cancel_running")
    own = start_worker(concurrency=1, queues=queue_name, processes=processes)
    try:
        await _cancel_and_run_next(client, backend_name, queue_name, redis_client, name,
                                   support)
    finally:
        own.stop()  # a run that was not stopped would burn on for minutes


async def _cancel_and_run_next(client: httpx.AsyncClient, backend_name: str, queue_name: str,
                               redis_client: redis.Redis, name: str, support: Support) -> None:
    key = uuid.uuid4().hex
    args = [600, key] if name == "sleep" else [CPU_FOREVER]
    task = await submit(client, name, *args, options={"queue": queue_name})
    assert await state_seen(client, task["id"], {"STARTED"}) == "STARTED"
    response = await client.delete(f"/tasks/{task['id']}")
    if support is Support.NONE:  # refused, and said so
        assert response.status_code == 409, response.text
        assert backend_name in response.json()["detail"]
        return
    assert response.status_code == 202, response.text
    assert response.json()["state"] == "REVOKED"
    after = await submit(client, "add", 2, 2, options={"queue": queue_name})
    body = await finished(client, after["id"], timeout=30)
    assert (body["state"], body["result"]) == ("SUCCESS", 4)
    cancelled = (await client.get(f"/tasks/{task['id']}")).json()
    assert (cancelled["state"], cancelled["result"], cancelled["error"]) == (
        "REVOKED", None, None)
    assert sleep_runs(redis_client, key) == 0
