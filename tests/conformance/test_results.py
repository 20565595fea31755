"""The shared tasks run and their records read back the same on every backend: results
and errors, the listing, unknown ids, and a wait that stays bounded while Redis stalls."""

from __future__ import annotations

import uuid

import httpx
import pytest
import redis

from tests.conformance.support import finished, run, submit


async def test_divide_succeeds(client: httpx.AsyncClient, backend_name: str) -> None:
    body = await run(client, "divide", 1, 2)
    assert body["state"] == "SUCCESS"
    assert body["result"] == 0.5
    assert body["backend"] == backend_name
    assert body["error"] is None
    assert body["submitted_at"] <= body["started_at"] <= body["finished_at"]


async def test_divide_by_zero_fails_with_type_and_message(client: httpx.AsyncClient) -> None:
    body = await run(client, "divide", 1, 0)
    assert body["state"] == "FAILURE"
    assert body["error"] == {"type": "ZeroDivisionError", "message": "division by zero"}
    assert body["result"] is None


async def test_add_with_keyword_arguments(client: httpx.AsyncClient) -> None:
    body = await run(client, "add", kwargs={"x": 2.5, "y": 4})
    assert (body["state"], body["result"]) == ("SUCCESS", 6.5)
    assert body["kwargs"] == {"x": 2.5, "y": 4}


async def test_noop_round_trips_nested_json(client: httpx.AsyncClient) -> None:
    payload = {"a": [1, 2.5, None, True, {"b": ["é", {"c": []}]}], "d": {"e": {"f": "g"}},
               "n": -7}
    body = await run(client, "noop", payload)
    assert body["state"] == "SUCCESS"
    assert body["result"] == payload


async def test_async_task_runs(client: httpx.AsyncClient) -> None:
    body = await run(client, "sleep", 0.2)
    assert (body["state"], body["result"]) == ("SUCCESS", 0.2)


async def test_sync_cpu_task_runs(client: httpx.AsyncClient) -> None:
    body = await run(client, "cpu", 3)
    assert body["state"] == "SUCCESS"
    assert len(body["result"]) == 64


async def test_fail_reports_runtime_error(client: httpx.AsyncClient) -> None:
    body = await run(client, "fail", "boom")
    assert body["state"] == "FAILURE"
    assert body["error"] == {"type": "RuntimeError", "message": "boom"}


# -- reading tasks back: by id, listed, waited for -----------------------------------------


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/tasks/{id}"), ("GET", "/tasks/{id}/wait?timeout=0"), ("DELETE", "/tasks/{id}"),
])
async def test_unknown_id_is_404(client: httpx.AsyncClient, method: str, path: str) -> None:
    response = await client.request(method, path.format(id=uuid.uuid4()))
    assert response.status_code == 404
    assert "detail" in response.json()


async def test_list_is_newest_first_and_filters(client: httpx.AsyncClient) -> None:
    ids = [(await submit(client, "add", i, 1))["id"] for i in range(5)]
    for task_id in ids:
        await finished(client, task_id)
    listed = (await client.get("/tasks", params={"name": "add", "limit": 5})).json()
    assert [t["id"] for t in listed] == ids[::-1]
    assert all(t["name"] == "add" for t in listed)
    failed = (await client.get("/tasks", params={"state": "FAILURE", "limit": 1000})).json()
    assert failed and all(t["state"] == "FAILURE" for t in failed)


async def test_list_rejects_unknown_state(client: httpx.AsyncClient) -> None:
    assert (await client.get("/tasks", params={"state": "DONE"})).status_code == 422


async def test_wait_answers_within_its_timeout_while_redis_stalls(
        client: httpx.AsyncClient, redis_url: str) -> None:
    task = await submit(client, "sleep", 30, options={"queue": f"q-{uuid.uuid4().hex[:8]}"})
    await client.get(f"/tasks/{task['id']}/wait", params={"timeout": 0})  # listener up
    # This client's own commands wait out the pause too: it must outlast it.
    pauser = redis.Redis.from_url(redis_url, socket_timeout=30)
    pauser.execute_command("CLIENT", "PAUSE", 8_000, "ALL")
    try:
        # Paused for 8 s: an answer within 6 (a 1 s wait, then one read bounded at 2 s)
        # is a bounded wait, not luck.
        response = await client.get(f"/tasks/{task['id']}/wait", params={"timeout": 1},
                                    timeout=6)
    finally:
        pauser.execute_command("CLIENT", "UNPAUSE")
        pauser.close()
    assert response.status_code in (200, 503), response.text
    if response.status_code == 200:
        assert response.json()["state"] == "PENDING"
    await client.delete(f"/tasks/{task['id']}")
