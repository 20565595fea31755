"""The conformance suite: every backend must behave the same through the HTTP API.

Run against a real Redis, real `queuebench worker` and `queuebench serve` processes;
one backend per `--backend` option (the CI matrix runs each in its own environment)."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import redis
import redis.asyncio as aioredis

from core.backend import backend_class
from core.cli.procs import ROOT, Proc, Server, wait_until
from core.settings import Settings
from core.states import TaskState
from core.tasks.features import Support
from core.tasks.shared import MAX_CPU_ROUNDS
from core.worker.heartbeat import host_and_pid

FINAL = {s.value for s in TaskState if s.finished}


async def submit(client: httpx.AsyncClient, name: str, *args: Any, kwargs: Any = None,
                 options: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {"args": list(args)}
    if kwargs is not None:
        body["kwargs"] = kwargs
    if options is not None:
        body["options"] = options
    response = await client.post(f"/tasks/{name}", json=body)
    assert response.status_code == 202, response.text
    task = response.json()
    assert response.headers["location"] == f"/tasks/{task['id']}"
    return task


async def finished(client: httpx.AsyncClient, task_id: str, timeout: float = 30) -> dict[str, Any]:
    """The task's body once final; /wait blocks server-side, so no client sleeps."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        left = deadline - asyncio.get_running_loop().time()
        body = (await client.get(f"/tasks/{task_id}/wait", params={"timeout": max(left, 0)})).json()
        if body["state"] in FINAL or left <= 0:
            assert body["state"] in FINAL, f"task still {body['state']} after {timeout}s"
            return body


async def run(client: httpx.AsyncClient, name: str, *args: Any, **kw: Any) -> dict[str, Any]:
    task = await submit(client, name, *args, **kw)
    return await finished(client, task["id"])


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


async def test_submitted_task_starts_pending(client: httpx.AsyncClient) -> None:
    task = await submit(client, "sleep", 0.05)
    assert task["state"] == "PENDING"
    assert task["started_at"] is None and task["result"] is None


async def test_unknown_task_is_404(client: httpx.AsyncClient) -> None:
    response = await client.post("/tasks/no_such_task", json={})
    assert response.status_code == 404
    assert "no_such_task" in response.json()["detail"]


@pytest.mark.parametrize(("body", "field"), [
    ({"args": [1]}, "args"),                                  # missing argument
    ({"args": [1, 2, 3]}, "args"),                            # too many
    ({"args": [1, "x"]}, "y"),                                # wrong type
    ({"kwargs": {"x": 1, "y": 2, "z": 3}}, "z"),              # unknown keyword
    ({"args": [1, 2], "options": {"bogus": 1}}, "bogus"),     # unknown option
    ({"args": [1, 2], "options": {"countdown": -1}}, "countdown"),
    ({"args": [1, 2], "extra": True}, "extra"),
])
async def test_bad_arguments_are_422_naming_the_field(client: httpx.AsyncClient,
                                                       body: dict[str, Any], field: str) -> None:
    response = await client.post("/tasks/divide", json=body)
    assert response.status_code == 422, response.text
    assert field in json.dumps(response.json()["detail"])


async def test_bad_json_is_422_not_500(client: httpx.AsyncClient) -> None:
    response = await client.post("/tasks/divide", content=b"{not json",
                                 headers={"content-type": "application/json"})
    assert response.status_code == 422


@pytest.mark.parametrize(("content_type", "status"), [
    ("application/json", 202),                   # the API's fast way (SubmitRoute)
    ("application/json; charset=utf-8", 202),    # the fast way too
    ("application/merge-patch+json", 202),       # JSON to FastAPI, which takes it itself
    ("text/plain", 422),                         # not JSON: refused, as FastAPI refuses it
    (None, 422),
])
async def test_a_submit_is_json_by_its_content_type(client: httpx.AsyncClient,
                                                     content_type: str | None,
                                                     status: int) -> None:
    headers = {"content-type": content_type} if content_type else {}
    response = await client.post("/tasks/add", content=b'{"args": [2, 3]}', headers=headers)
    assert response.status_code == status, response.text
    if status == 202:
        task = await finished(client, response.json()["id"])
        assert (task["state"], task["result"]) == ("SUCCESS", 5)


async def test_rejected_submission_queues_nothing(client: httpx.AsyncClient) -> None:
    before = [t["id"] for t in (await client.get("/tasks", params={"limit": 5})).json()]
    assert (await client.post("/tasks/divide", json={"args": [1]})).status_code == 422
    after = [t["id"] for t in (await client.get("/tasks", params={"limit": 5})).json()]
    assert after == before


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


async def test_openapi_shows_each_task_and_its_arguments(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    for name in ("divide", "add", "noop", "sleep", "cpu", "flaky", "fail"):
        assert f"/tasks/{name}" in spec["paths"]
    schemas = spec["components"]["schemas"]
    assert set(schemas["DivideArgsKwargs"]["properties"]) == {"x", "y"}


async def test_health_is_200_with_a_worker(client: httpx.AsyncClient, backend_name: str) -> None:
    response = await client.get("/health")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["backend"] == backend_name
    assert body["redis"] is True and body["workers"] >= 1


async def test_health_is_503_without_a_worker(start_server: Callable[..., Server],
                                              spare_redis_url: str) -> None:
    # No history writer: it would consume the spare database's stream under
    # test_history's feet; and stopped at once, for the same reason.
    lonely = start_server(REDIS_URL=spare_redis_url, HISTORY_ENABLED="false")
    try:
        async with httpx.AsyncClient(base_url=lonely.url) as http:
            response = await http.get("/health")
    finally:
        lonely.stop()
    assert response.status_code == 503
    assert "workers" in response.json()["detail"]


async def test_two_workers_share_a_burst_none_lost_none_twice(
        client: httpx.AsyncClient, worker: Proc, start_worker: Callable[..., Proc],
        redis_client: redis.Redis) -> None:
    second = start_worker()
    run_id = uuid.uuid4().hex[:8]
    keys = [f"burst-{run_id}-{i}" for i in range(200)]
    tasks = await asyncio.gather(*(submit(client, "flaky", 0, key) for key in keys))
    bodies = [await finished(client, t["id"], timeout=120) for t in tasks]
    assert [b["state"] for b in bodies] == ["SUCCESS"] * 200
    # flaky counts its runs per key in Redis: 1 everywhere means each ran exactly once
    assert [int(redis_client.get(f"qb:flaky:{k}") or 0) for k in keys] == [1] * 200
    ran_on = {redis_client.hget(f"qb:task:{t['id']}", "worker") for t in tasks}
    pids = {host_and_pid(w)[1] for w in ran_on if w}
    assert len(pids) >= 2, f"one process ran the whole burst: {ran_on}"
    second.stop()


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "core.cli.main", *args], cwd=ROOT, text=True,
                          capture_output=True, timeout=60, env={**os.environ, **env})


def test_unknown_backend_is_one_clear_line() -> None:
    done = _cli("worker", QUEUE_BACKEND="rabbit")
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "QUEUE_BACKEND" in lines[0], done.stderr


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_redis_down_is_one_clear_line(command: str, backend_name: str) -> None:
    from core.cli.procs import free_port

    done = _cli(command, "--backend", backend_name, REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "REDIS_URL" in lines[0], done.stderr


# -- task semantics (issue 4): each test declares the feature it proves -------------------

Declare = Callable[[str], Support]


async def state_seen(client: httpx.AsyncClient, task_id: str, wanted: set[str],
                     timeout: float = 30) -> str:
    """Poll (with a deadline) until the task is in one of `wanted`, or final."""
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        state = (await client.get(f"/tasks/{task_id}")).json()["state"]
        if state in wanted or state in FINAL:
            return str(state)
        await asyncio.sleep(0.02)
    raise AssertionError(f"task {task_id} never reached {wanted}")


async def expect_unsupported(client: httpx.AsyncClient, backend_name: str, name: str,
                             args: list[Any], options: dict[str, Any]) -> None:
    response = await client.post(f"/tasks/{name}", json={"args": args, "options": options})
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert backend_name in detail and all(option in detail for option in options)


def flaky_runs(redis_client: redis.Redis, key: str) -> int:
    return int(redis_client.get(f"qb:flaky:{key}") or 0)


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


@pytest.mark.parametrize(("name", "args"), [("sleep", [30]), ("cpu", [10_000_000])])
async def test_time_limit_fails_with_time_limit_exceeded_and_worker_goes_on(
        client: httpx.AsyncClient, feature: Declare, backend_name: str, name: str,
        args: list[Any]) -> None:
    if feature("time_limit") is Support.NONE:
        return await expect_unsupported(client, backend_name, name, args, {"time_limit": 0.5})
    body = await run(client, name, *args, options={"time_limit": 0.5})
    assert body["state"] == "FAILURE"
    assert body["error"]["type"] == "TimeLimitExceeded"
    assert (await run(client, "divide", 6, 3))["result"] == 2


@pytest.mark.parametrize("how", ["countdown", "eta"])
async def test_delay_holds_the_task_back(client: httpx.AsyncClient, feature: Declare,
                                         backend_name: str, how: str) -> None:
    from datetime import UTC, datetime, timedelta

    option: dict[str, Any] = {"countdown": 1.0} if how == "countdown" else {
        "eta": (datetime.now(UTC) + timedelta(seconds=1)).isoformat()}
    if feature("delay") is Support.NONE:
        return await expect_unsupported(client, backend_name, "add", [1, 2], option)
    body = await run(client, "add", 1, 2, options=option)
    assert body["state"] == "SUCCESS"
    started = datetime.fromisoformat(body["started_at"])
    not_before = (datetime.fromisoformat(body["submitted_at"]) + timedelta(seconds=1)
                  if how == "countdown" else datetime.fromisoformat(option["eta"]))
    assert started >= not_before


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


async def test_queue_routes_to_its_own_worker(client: httpx.AsyncClient, feature: Declare,
                                              backend_name: str, queue_name: str,
                                              start_worker: Callable[..., Proc]) -> None:
    if feature("queues") is Support.NONE:
        return await expect_unsupported(client, backend_name, "add", [1, 2],
                                        {"queue": queue_name})
    routed = await submit(client, "add", 1, 2, options={"queue": queue_name})
    # The default queue's worker serves a later task, but not the routed one.
    assert (await run(client, "add", 5, 5))["result"] == 10
    assert (await client.get(f"/tasks/{routed['id']}")).json()["state"] == "PENDING"
    own = start_worker(concurrency=1, queues=queue_name)
    body = await finished(client, routed["id"])
    assert (body["state"], body["result"]) == ("SUCCESS", 3)
    own.stop()


async def test_priority_serves_higher_first(client: httpx.AsyncClient, feature: Declare,
                                            backend_name: str, queue_name: str,
                                            start_worker: Callable[..., Proc]) -> None:
    if feature("priority") is Support.NONE:
        return await expect_unsupported(client, backend_name, "add", [1, 2], {"priority": 9})
    low = [await submit(client, "add", i, 0, options={"queue": queue_name, "priority": 0})
           for i in range(4)]
    high = await submit(client, "add", 9, 9, options={"queue": queue_name, "priority": 9})
    own = start_worker(concurrency=1, queues=queue_name)
    bodies = [await finished(client, t["id"]) for t in [*low, high]]
    order = sorted(bodies, key=lambda b: b["started_at"])
    assert order[0]["id"] == high["id"], [b["args"] for b in order]
    own.stop()


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


# -- batch submit (issue 9) ------------------------------------------------------------


async def test_batch_submit_gives_ids_in_order_and_runs_each(client: httpx.AsyncClient) -> None:
    items = [{"args": [i, 1]} for i in range(4)] + [{"kwargs": {"x": 10, "y": 5}}]
    response = await client.post("/tasks/add/batch", json={"items": items})
    assert response.status_code == 202, response.text
    ids = response.json()["ids"]
    assert len(ids) == len(set(ids)) == 5
    bodies = [await finished(client, task_id) for task_id in ids]
    assert [b["result"] for b in bodies] == [1, 2, 3, 4, 15]
    assert all(b["state"] == "SUCCESS" and b["name"] == "add" for b in bodies)


async def test_batch_with_a_bad_item_names_it_and_queues_none(client: httpx.AsyncClient) -> None:
    before = [t["id"] for t in (await client.get("/tasks", params={"limit": 5})).json()]
    items = [{"args": [1, 2]}, {"args": [3, 4]}, {"args": [5, "x"]}, {"args": [1]}]
    response = await client.post("/tasks/add/batch", json={"items": items})
    assert response.status_code == 422, response.text
    locations = [e["loc"][:3] for e in response.json()["detail"]]
    assert ["body", "items", 2] in locations and ["body", "items", 3] in locations
    assert ["body", "items", 0] not in locations
    after = [t["id"] for t in (await client.get("/tasks", params={"limit": 5})).json()]
    assert after == before


@pytest.mark.parametrize("count", [0, 1001])
async def test_batch_size_is_bounded(client: httpx.AsyncClient, count: int) -> None:
    response = await client.post("/tasks/noop/batch", json={"items": [{}] * count})
    assert response.status_code == 422
    assert "items" in json.dumps(response.json()["detail"])


async def test_batch_sent_again_with_its_key_gives_the_same_tasks(
        client: httpx.AsyncClient) -> None:
    body = {"items": [{"args": [i]} for i in range(3)],
            "options": {"idempotency_key": uuid.uuid4().hex}}
    first = await client.post("/tasks/noop/batch", json=body)
    again = await client.post("/tasks/noop/batch", json=body)
    assert (first.status_code, again.status_code) == (202, 202)
    assert first.json()["ids"] == again.json()["ids"]


async def test_batch_of_an_unknown_task_is_404(client: httpx.AsyncClient) -> None:
    response = await client.post("/tasks/no_such_task/batch", json={"items": [{}]})
    assert response.status_code == 404


# -- a lifecycle you can trust (issue 8): no record stuck or broken ---------------------


def sleep_runs(redis_client: redis.Redis, key: str) -> int:
    return int(redis_client.get(f"qb:slept:{key}") or 0)


async def test_task_of_a_killed_worker_runs_again_elsewhere_with_default_settings(
        client: httpx.AsyncClient, feature: Declare, queue_name: str, redis_url: str,
        start_worker: Callable[..., Proc], redis_client: redis.Redis) -> None:
    """No shortened timeouts: the settings a user gets (REDELIVERY_AFTER 30 s, the
    default heartbeat, the library's own visibility timeouts of an hour)."""
    assert feature("redelivery") is not Support.NONE
    defaults = {"WORKER_HEARTBEAT": "2"}
    doomed = start_worker(concurrency=1, queues=queue_name, **defaults)
    key = uuid.uuid4().hex
    task = await submit(client, "sleep", 2, key, options={"queue": queue_name})
    assert await state_seen(client, task["id"], {"STARTED"}) == "STARTED"
    first = (await client.get(f"/tasks/{task['id']}")).json()
    first_worker = redis_client.hget(f"qb:task:{task['id']}", "worker")
    doomed.signal_group(signal.SIGKILL)
    doomed.stop()
    async with Timeline(redis_url) as timeline:
        rescuer = start_worker(concurrency=1, queues=queue_name, **defaults)
        body = await finished(client, task["id"], timeout=55)  # 30 s lease + a pass + 2 s
        assert (body["state"], body["result"]) == ("SUCCESS", 2)
        assert (await timeline.states(task["id"])).count("STARTED") == 1  # once, only once
    assert body["retries"] == 0  # a redelivery is not a retry
    assert sleep_runs(redis_client, key) == 1
    ran_on = redis_client.hget(f"qb:task:{task['id']}", "worker")
    assert ran_on != first_worker
    # The rescuer's own process, or one of its children (Celery prefork, Dramatiq).
    info = json.loads(redis_client.hget("qb:workers", ran_on) or "{}")
    assert rescuer.pid in (info.get("pid"), info.get("parent")), (ran_on, info)
    assert body["started_at"] > first["started_at"]


async def test_a_killed_workers_waiting_tasks_run_elsewhere_with_default_settings(
        client: httpx.AsyncClient, backend_name: str, queue_name: str, redis_url: str,
        broker_url: str, start_worker: Callable[..., Proc]) -> None:
    """A worker holds a task beside the one it runs (a prefetching library takes the
    next message early): when it dies, that one too runs elsewhere in seconds, not
    after the library's own visibility timeout of an hour. Every message a worker
    holds must be a task it runs, whose record names its owner."""
    doomed = start_worker(concurrency=1, queues=queue_name, WORKER_HEARTBEAT="2")
    running = await submit(client, "sleep", 8, options={"queue": queue_name})
    waiting = await submit(client, "add", 1, 2, options={"queue": queue_name})
    assert await state_seen(client, running["id"], {"STARTED"}) == "STARTED"
    settings = Settings(redis_url=redis_url, broker_url=broker_url)
    backend = backend_class(backend_name)(settings)
    try:  # give a prefetching worker the time to take the waiting task (or not)
        deadline = time.monotonic() + 3
        while (await backend.queue_depths()).get(queue_name) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    finally:
        await backend.aclose()
    states = [(await client.get(f"/tasks/{t['id']}")).json()["state"] for t in (running, waiting)]
    assert states == ["STARTED", "PENDING"]  # killed with both on hand, neither done
    doomed.signal_group(signal.SIGKILL)
    doomed.stop()
    start_worker(concurrency=1, queues=queue_name, WORKER_HEARTBEAT="2")
    for task, result in ((running, 8), (waiting, 3)):
        body = await finished(client, task["id"], timeout=60)  # 30 s lease + a pass
        assert (body["state"], body["result"]) == ("SUCCESS", result), body


def _take_as_a_consumer_that_dies(backend_name: str, broker: redis.Redis, queue: str,
                                  delivery_id: str) -> None:
    """What the library's consumer writes when it takes a message, and nothing after:
    it died before the task started."""
    if backend_name == "arq":  # arq's poll: the in-progress mark, the job left queued
        broker.psetex(f"arq:in-progress:{delivery_id}", 3_600_000, b"1")
    elif backend_name == "celery":  # kombu: BRPOP, then the unacked hash and its index
        # (one list per priority step: `queue`, `queue:1`, ...)
        [message] = [m for k in broker.scan_iter(match=f"{queue}*") if (m := broker.rpop(k))]
        broker.zadd("unacked_index", {f"dead-{delivery_id}": time.time()})
        broker.hset("unacked", f"dead-{delivery_id}", json.dumps([message.decode(), "", queue]))
    else:  # Dramatiq's fetch: the id from its queue's list into the consumer's acks
        message_id = broker.lpop(f"dramatiq:{queue}")
        assert message_id is not None
        broker.sadd(f"dramatiq:__acks__.dead-consumer.{queue}", message_id)


@pytest.mark.parametrize("fault", ["lost", "taken"])
async def test_a_task_whose_message_was_lost_or_taken_by_a_dead_consumer_runs_once(
        client: httpx.AsyncClient, backend_name: str, feature: Declare, queue_name: str,
        broker_url: str, request: pytest.FixtureRequest, start_worker: Callable[..., Proc],
        redis_client: redis.Redis, fault: str) -> None:
    """Accepted, then its message gone from the broker (`lost`: a Redis restart that lost
    the last writes, kombu's take-then-record window, an API killed between record and
    message), or taken by a consumer that died before the task started (`taken`: no
    owner for the dead-worker pass, and the library's own redelivery waits for its
    visibility timeout, an hour; arq's in-progress mark, a week here). The overdue pass
    finds its message in no queue of the library's and sends it again: it runs once."""
    assert feature("redelivery") is not Support.NONE
    if request.config.getoption("--broker") == "rabbitmq":
        pytest.skip("RabbitMQ keeps a confirmed message through a restart and hands a dead "
                    "consumer's unacked ones out again itself: core does not look into its "
                    "queues")
    key = uuid.uuid4().hex
    task = await submit(client, "flaky", 0, key, options={"queue": queue_name})
    broker = redis.Redis.from_url(broker_url)
    if fault == "lost":
        lost = list(broker.scan_iter(match=f"*{queue_name}*"))  # the library's queue keys
        assert lost and broker.delete(*lost)
    else:
        _take_as_a_consumer_that_dies(backend_name, broker, queue_name, task["id"])
    start_worker(concurrency=1, queues=queue_name, REDELIVERY_AFTER="2")
    body = await finished(client, task["id"])
    assert (body["state"], flaky_runs(redis_client, key)) == ("SUCCESS", 1)
    assert redis_client.hget(f"qb:task:{task['id']}", "deliveries") == "1"


async def test_a_task_whose_message_waits_in_the_broker_is_not_sent_again(
        client: httpx.AsyncClient, queue_name: str, start_worker: Callable[..., Proc],
        redis_client: redis.Redis) -> None:
    """Overdue but queued where its library will deliver it (no worker consumes its queue
    yet): the reaper looks (its due time moves on a lease) and leaves it alone."""
    task = await submit(client, "add", 1, 2, options={"queue": queue_name})
    submitted = float(redis_client.zscore("qb:due", task["id"]) or 0)
    start_worker(concurrency=1, queues=f"{queue_name}-other", REDELIVERY_AFTER="1")
    wait_until(lambda: float(redis_client.zscore("qb:due", task["id"]) or 0) > submitted + 1,
               timeout=30, what="the reaper's look at the overdue task")
    assert redis_client.hget(f"qb:task:{task['id']}", "deliveries") in (None, "0")
    start_worker(concurrency=1, queues=queue_name)
    assert (await finished(client, task["id"]))["result"] == 3


async def test_a_second_delivery_of_a_running_task_is_refused(
        client: httpx.AsyncClient, backend_name: str, queue_name: str, redis_url: str,
        broker_url: str, start_worker: Callable[..., Proc], redis_client: redis.Redis) -> None:
    """Two deliveries of one message (a visibility-timeout redelivery while the first
    still runs, a library's redelivery racing the reaper): the owner is alive, so the
    second does not run. Sent here through the adapter, as the reaper sends."""
    from dataclasses import replace

    start_worker(concurrency=2, queues=queue_name)
    key = uuid.uuid4().hex
    task = await submit(client, "sleep", 2, key, options={"queue": queue_name})
    assert await state_seen(client, task["id"], {"STARTED"}) == "STARTED"
    settings = Settings(redis_url=redis_url, broker_url=broker_url)
    backend = backend_class(backend_name)(settings)
    try:
        record = await backend.get(task["id"])
        async with Timeline(redis_url) as timeline:
            await backend.redeliver(replace(record, deliveries=record.deliveries + 1))
            body = await finished(client, task["id"])
            assert "STARTED" not in await timeline.states(task["id"])
    finally:
        await backend.aclose()
    assert (body["state"], body["started_at"]) == ("SUCCESS", (await client.get(
        f"/tasks/{task['id']}")).json()["started_at"])
    assert sleep_runs(redis_client, key) == 1


async def test_a_record_lost_before_its_task_starts_refuses_the_run(
        client: httpx.AsyncClient, queue_name: str, start_worker: Callable[..., Proc],
        redis_client: redis.Redis) -> None:
    start_worker(concurrency=1, queues=queue_name)
    key = uuid.uuid4().hex
    lost = await submit(client, "flaky", 0, key, options={"queue": queue_name,
                                                            "countdown": 1.0})
    redis_client.delete(f"qb:task:{lost['id']}")  # Redis lost it (eviction, FLUSHDB)
    # A later task on the same one-slot queue has run: the lost one's turn has passed.
    later = await run(client, "add", 1, 1, options={"queue": queue_name, "countdown": 2.0})
    assert later["state"] == "SUCCESS"
    assert flaky_runs(redis_client, key) == 0
    assert not redis_client.exists(f"qb:task:{lost['id']}")  # nothing partial written
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
    """Claim and create were two steps: a crash between them (or a record Redis lost)
    left the key bound to nothing, and every submit with it answered 404 for a day."""
    idem = uuid.uuid4().hex
    redis_client.set(f"qb:idem:add:{idem}", str(uuid.uuid4()), ex=600)
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


async def test_retries_up_to_the_maximum_all_run(client: httpx.AsyncClient, feature: Declare,
                                                 redis_client: redis.Redis) -> None:
    """max_retries is bounded at 100: each library must let all of them run (arq
    counted every delivery as a try and stopped at 100, leaving RETRY)."""
    if feature("retries") is Support.NONE:
        pytest.skip("unsupported: the 422 is proved by the retries test")
    key = uuid.uuid4().hex
    body = await run(client, "flaky", 100, key, options={"max_retries": 100,
                                                          "retry_backoff": 0})
    assert (body["state"], body["result"], body["retries"]) == ("SUCCESS", 101, 100)
    assert flaky_runs(redis_client, key) == 101


async def test_a_final_write_that_redis_refuses_is_written_later(
        client: httpx.AsyncClient, queue_name: str, start_worker: Callable[..., Proc],
        redis_client: redis.Redis) -> None:
    """Redis refuses the final write (here: the worker's own set of running tasks is
    made a string, so the finish script fails with WRONGTYPE) for longer than the
    runner's retries: the heartbeat thread writes it once Redis takes it again."""
    own = start_worker(concurrency=1, queues=queue_name)
    task = await submit(client, "sleep", 1, options={"queue": queue_name})
    assert await state_seen(client, task["id"], {"STARTED"}) == "STARTED"
    worker_id = redis_client.hget(f"qb:task:{task['id']}", "worker")
    owned = f"qb:owned:{worker_id}"
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


async def test_sigterm_lets_tasks_in_flight_finish(
        client: httpx.AsyncClient, feature: Declare, queue_name: str,
        start_worker: Callable[..., Proc]) -> None:
    support = feature("graceful_shutdown")
    stopping = start_worker(concurrency=2, queues=queue_name)
    tasks = [await submit(client, "sleep", 1.5, options={"queue": queue_name})
             for _ in range(2)]
    for task in tasks:
        assert await state_seen(client, task["id"], {"STARTED"}) == "STARTED"
    os.kill(stopping.pid, signal.SIGTERM)
    if support is Support.NONE:
        pytest.skip("this backend does not promise a graceful shutdown")
    for task in tasks:
        assert (await finished(client, task["id"]))["state"] == "SUCCESS"
    deadline = asyncio.get_running_loop().time() + 30
    while stopping.alive() and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
    assert not stopping.alive(), "the worker did not exit after SIGTERM"


# -- adapters behave alike (issue 8) --

# sha256 rounds that take minutes: a cpu task that never ends within a test by itself.
CPU_FOREVER = MAX_CPU_ROUNDS  # minutes of rounds: the most the task takes
# The worker set-ups a stop must work on: the default one, and one process (Celery's
# threads pool, which the benchmark uses; Dramatiq's one process).
WORKER_SETUPS = pytest.mark.parametrize("processes", [None, 1],
                                        ids=["default-worker", "one-process"])


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


@WORKER_SETUPS
async def test_time_limit_stops_a_sync_task_in_every_worker_setup(
        client: httpx.AsyncClient, feature: Declare, backend_name: str, queue_name: str,
        start_worker: Callable[..., Proc], processes: int | None) -> None:
    options = {"time_limit": 1.0, "queue": queue_name}
    if feature("time_limit") is Support.NONE:
        return await expect_unsupported(client, backend_name, "cpu", [CPU_FOREVER], options)
    own = start_worker(concurrency=1, queues=queue_name, processes=processes)
    try:
        body = await run(client, "cpu", CPU_FOREVER, options=options)
        assert (body["state"], body["result"]) == ("FAILURE", None)
        assert body["error"]["type"] == "TimeLimitExceeded"
        # its one slot is free again: the run was stopped, not left to burn on
        assert (await run(client, "add", 1, 2, options={"queue": queue_name}))["result"] == 3
    finally:
        own.stop()


class Timeline:
    """When every task reached each state, as seen on `qb:events` by the test (its
    own subscription, confirmed before it returns, read in the background)."""

    def __init__(self, redis_url: str) -> None:
        self.client = aioredis.Redis.from_url(redis_url, decode_responses=True)
        self.pubsub = self.client.pubsub()
        self.seen: dict[str, list[tuple[str, float]]] = {}

    async def __aenter__(self) -> Timeline:
        await self.pubsub.subscribe("qb:events")
        while (await self.pubsub.get_message(timeout=5) or {}).get("type") != "subscribe":
            pass
        self._reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        async for message in self.pubsub.listen():
            if message["type"] == "message":
                event = json.loads(message["data"])
                self.seen.setdefault(event["id"], []).append((event["state"], loop.time()))

    async def __aexit__(self, *exc: object) -> None:
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)
        await self.pubsub.aclose()
        await self.client.aclose()

    async def states(self, task_id: str, timeout: float = 10) -> list[str]:
        """The states the task went through, once its final one has been read."""
        deadline = asyncio.get_running_loop().time() + timeout
        while not any(state in FINAL for state, _ in self.seen.get(task_id, [])):
            assert asyncio.get_running_loop().time() < deadline, f"{task_id} never final"
            await asyncio.sleep(0.02)
        return [state for state, _ in self.seen[task_id]]

    def retry_gaps(self, task_id: str) -> list[float]:
        """Seconds from each RETRY of the task to its next STARTED."""
        gaps, retried_at = [], None
        for state, at in self.seen.get(task_id, []):
            if state == "RETRY":
                retried_at = at
            elif state == "STARTED" and retried_at is not None:
                gaps.append(at - retried_at)
                retried_at = None
        return gaps


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


async def test_countdown_with_eta_is_422_naming_both(client: httpx.AsyncClient) -> None:
    from datetime import UTC, datetime, timedelta

    eta = (datetime.now(UTC) + timedelta(seconds=5)).isoformat()
    before = [t["id"] for t in (await client.get("/tasks", params={"limit": 5})).json()]
    response = await client.post("/tasks/add", json={
        "args": [1, 2], "options": {"countdown": 1, "eta": eta}})
    assert response.status_code == 422, response.text
    detail = json.dumps(response.json()["detail"])
    assert "countdown" in detail and "eta" in detail
    batch = await client.post("/tasks/add/batch", json={
        "items": [{"args": [1, 2]}], "options": {"countdown": 1, "eta": eta}})
    assert batch.status_code == 422, batch.text
    detail = json.dumps(batch.json()["detail"])
    assert "countdown" in detail and "eta" in detail
    after = [t["id"] for t in (await client.get("/tasks", params={"limit": 5})).json()]
    assert after == before


def _in_flight(intervals: list[tuple[float, float]]) -> int:
    """The most intervals that overlap at one instant (an end before a start)."""
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    peak = running = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    return peak


async def test_concurrency_is_the_tasks_in_flight_over_all_queues(
        client: httpx.AsyncClient, queue_name: str, start_worker: Callable[..., Proc],
        redis_client: redis.Redis) -> None:
    """`--concurrency 3` over two queues: 3 tasks in flight, never more (arq once ran
    3 per queue; Dramatiq 2 on this 2-core machine, as 3 // 2 threads x 2 processes)."""
    qa, qb = f"{queue_name}-a", f"{queue_name}-b"
    own = start_worker(concurrency=3, queues=f"{qa},{qb}")
    try:
        await _three_in_flight(client, redis_client, qa, qb)
    finally:
        own.stop()


async def _three_in_flight(client: httpx.AsyncClient, redis_client: redis.Redis,
                           qa: str, qb: str) -> None:
    tasks = [await submit(client, "sleep", 1.0, options={"queue": (qa, qb)[i % 2]})
             for i in range(8)]
    ids = [t["id"] for t in tasks]
    peak_seen = 0
    deadline = asyncio.get_running_loop().time() + 60
    while True:
        # One snapshot (MULTI): HGETs one after another on a loaded machine see a task
        # STARTED, then the next ones started after it finished, and count both.
        with redis_client.pipeline(transaction=True) as pipe:
            for i in ids:
                pipe.hget(f"qb:task:{i}", "state")
            states = pipe.execute()
        running = states.count("STARTED")
        assert running <= 3, f"{running} tasks in flight with --concurrency 3"
        peak_seen = max(peak_seen, running)
        if all(s in FINAL for s in states):
            break
        assert asyncio.get_running_loop().time() < deadline, f"not all finished: {states}"
        await asyncio.sleep(0.02)
    bodies = [(await client.get(f"/tasks/{i}")).json() for i in ids]
    assert [b["state"] for b in bodies] == ["SUCCESS"] * len(ids)
    from datetime import datetime

    intervals = [(datetime.fromisoformat(b["started_at"]).timestamp(),
                  datetime.fromisoformat(b["finished_at"]).timestamp()) for b in bodies]
    assert _in_flight(intervals) == 3
    assert peak_seen <= 3


def test_processes_that_cannot_make_the_concurrency_is_one_clear_line(
        backend_name: str, redis_url: str) -> None:
    done = _cli("worker", "--backend", backend_name, "--concurrency", "3", "--processes", "2",
                REDIS_URL=redis_url)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "--processes" in lines[0], done.stderr


# -- the periodic schedule (issue 11): real `queuebench scheduler` processes ----------------

def schedule_toml(path: Any, **entries: dict[str, Any]) -> str:
    """Write a SCHEDULE_FILE of `entries` (name -> table); its path."""

    def value(v: Any) -> str:
        if isinstance(v, dict):
            return "{" + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + "}"
        return json.dumps(v)

    text = "".join(f'["{name}"]\n' + "".join(f"{k} = {value(v)}\n" for k, v in table.items())
                   + "\n" for name, table in entries.items())
    path.write_text(text)
    return str(path)


def entry_name(what: str) -> str:
    return f"{what}-{uuid.uuid4().hex[:8]}"


def ticks_fired(redis_client: redis.Redis, name: str, task: str = "noop") -> dict[float, str]:
    """tick -> the task that stands for it: the per-tick idempotency keys of an entry."""
    prefix = f"qb:idem:{task}:sched:{name}:"
    return {int(k[len(prefix):]) / 1000: str(redis_client.get(k))
            for k in redis_client.scan_iter(prefix + "*", count=1000)}


def fired(redis_client: redis.Redis, name: str) -> list[str]:
    """The ids in an entry's index (what GET /tasks?schedule= reads), oldest first."""
    return list(redis_client.zrange(f"qb:schedule:{name}:tasks", 0, -1))


async def until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while not (value := check()):
        assert asyncio.get_running_loop().time() < deadline, f"{what} not within {timeout}s"
        await asyncio.sleep(0.1)
    return value


def contiguous(ticks: list[float], every: float) -> bool:
    return all(abs(b - a - every) < 1e-6 for a, b in itertools.pairwise(ticks))


def firing_delay(client_bodies: list[dict[str, Any]], ticks: dict[float, str]) -> float:
    """The largest submitted_at - tick over the ticks fired (seconds)."""
    from datetime import datetime

    at = {b["id"]: datetime.fromisoformat(b["submitted_at"]).timestamp() for b in client_bodies}
    return max(at[task_id] - tick for tick, task_id in ticks.items() if task_id in at)


async def schedule_tasks(client: httpx.AsyncClient, name: str) -> list[dict[str, Any]]:
    response = await client.get("/tasks", params={"schedule": name, "limit": 1000})
    assert response.status_code == 200, response.text
    return list(response.json())


async def test_schedule_interval_of_one_second_fires_n_times_in_n_seconds(
        client: httpx.AsyncClient, feature: Declare, backend_name: str, tmp_path: Any,
        start_scheduler: Callable[..., Proc], redis_client: redis.Redis) -> None:
    feature("periodic", via=Support.CORE)
    name, n = entry_name("tick"), 5
    path = schedule_toml(tmp_path / "s.toml", **{name: {"task": "noop", "args": [name],
                                                       "every": 1.0}})
    scheduler = start_scheduler(path)
    await until(lambda: len(fired(redis_client, name)) >= n + 2, n + 40, f"{n + 2} ticks")
    scheduler.stop()
    ticks = ticks_fired(redis_client, name)
    bodies = [await finished(client, t) for t in fired(redis_client, name)]
    assert [(b["state"], b["result"]) for b in bodies] == [("SUCCESS", name)] * len(bodies)
    listed = await schedule_tasks(client, name)
    assert {t["id"] for t in listed} == {b["id"] for b in bodies}
    # N seconds of ticks hold N ± 1 fires: counted from the tasks' own submit times
    from datetime import datetime

    times = sorted(datetime.fromisoformat(b["submitted_at"]).timestamp() for b in bodies)
    assert abs(sum(1 for t in times if t < times[0] + n) - n) <= 1, times
    assert len(ticks) == len(bodies) and contiguous(sorted(ticks), 1.0)
    print(f"periodic[{backend_name}] core: largest firing delay "
          f"{firing_delay(bodies, ticks) * 1000:.1f} ms against a 1 s tick")


async def test_schedule_two_schedulers_never_fire_a_tick_twice(
        client: httpx.AsyncClient, feature: Declare, backend_name: str, tmp_path: Any,
        start_scheduler: Callable[..., Proc], redis_client: redis.Redis) -> None:
    feature("periodic", via=Support.CORE)
    name = entry_name("pair")
    path = schedule_toml(tmp_path / "s.toml", **{name: {"task": "noop", "every": 0.5}})
    first, second = start_scheduler(path), start_scheduler(path)
    await until(lambda: len(fired(redis_client, name)) >= 10, 60, "10 ticks")
    await until(lambda: "fired" in first.output() and "fired" in second.output(), 10,
                "both schedulers firing")
    first.stop()
    second.stop()
    ids, ticks = fired(redis_client, name), ticks_fired(redis_client, name)
    bodies = [await finished(client, t) for t in ids]
    assert {b["state"] for b in bodies} == {"SUCCESS"}
    # Whatever the mechanism: a task fires a few ms after its tick, so two tasks of one
    # tick share its half-second slot.
    from datetime import datetime

    slots = [int(datetime.fromisoformat(b["submitted_at"]).timestamp() // 0.5) for b in bodies]
    assert len(slots) == len(set(slots)), sorted(slots)
    # and by the keys: as many tasks as ticks, each tick's its own, no tick left out
    assert len(ids) == len(set(ids)) == len(ticks)
    assert set(ticks.values()) == set(ids)
    assert contiguous(sorted(ticks), 0.5)
    print(f"periodic[{backend_name}] core x2: largest firing delay "
          f"{firing_delay(bodies, ticks) * 1000:.1f} ms against a 0.5 s tick")


async def test_schedule_a_killed_scheduler_is_replaced_by_the_other(
        client: httpx.AsyncClient, feature: Declare, tmp_path: Any,
        start_scheduler: Callable[..., Proc], redis_client: redis.Redis) -> None:
    feature("periodic", via=Support.CORE)
    name = entry_name("takeover")
    path = schedule_toml(tmp_path / "s.toml", **{name: {"task": "noop", "every": 1.0}})
    doomed, survivor = start_scheduler(path), start_scheduler(path)
    await until(lambda: "fired" in doomed.output() and "fired" in survivor.output(), 60,
                "both schedulers firing")
    doomed.signal_group(signal.SIGKILL)
    doomed.stop()
    at_kill = len(fired(redis_client, name))
    await until(lambda: len(fired(redis_client, name)) >= at_kill + 3, 10,
                "3 ticks after the kill")
    survivor.stop()
    ticks = sorted(ticks_fired(redis_client, name))
    assert contiguous(ticks, 1.0), ticks  # not a tick lost over the kill


async def test_schedule_restart_skips_missed_ticks_unless_catch_up(
        client: httpx.AsyncClient, feature: Declare, tmp_path: Any,
        start_scheduler: Callable[..., Proc], redis_client: redis.Redis) -> None:
    feature("periodic", via=Support.CORE)
    skip, replay = entry_name("skip"), entry_name("replay")
    path = schedule_toml(tmp_path / "s.toml",
                         **{skip: {"task": "noop", "every": 1.0},
                            replay: {"task": "noop", "every": 1.0, "catch_up": True}})
    both = (skip, replay)
    first = start_scheduler(path)
    await until(lambda: all(len(fired(redis_client, e)) >= 2 for e in both), 60, "2 ticks")
    first.stop()
    down = 5  # seconds without any scheduler: the scenario, not a wait for a result
    await asyncio.sleep(down)
    before = {e: len(fired(redis_client, e)) for e in both}
    again = start_scheduler(path)
    await until(lambda: all(len(fired(redis_client, e)) >= before[e] + 2 for e in both), 60,
                "2 ticks after the restart")
    again.stop()
    skipped, replayed = (sorted(ticks_fired(redis_client, e)) for e in both)
    assert contiguous(replayed, 1.0), replayed  # every missed tick fired after all
    gaps = [b - a for a, b in itertools.pairwise(skipped)]
    assert max(gaps) >= down - 1, skipped  # the missed ones were skipped, not replayed
    assert len(replayed) - len(skipped) >= down - 2


@pytest.mark.parametrize("command", ["scheduler", "serve"])
def test_schedule_file_that_is_bad_exits_non_zero_with_one_line(
        command: str, backend_name: str, redis_url: str, tmp_path: Any) -> None:
    bad = schedule_toml(tmp_path / "bad.toml",
                        fine={"task": "noop", "every": 1},
                        broken={"task": "divide", "args": [1], "cron": "*/5 * * * *"})
    done = _cli(command, "--backend", backend_name, REDIS_URL=redis_url, SCHEDULE_FILE=bad)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "broken" in lines[0] and "divide" in lines[0], done.stderr


async def test_schedules_api_lists_runs_pauses_and_resumes(
        client: httpx.AsyncClient, feature: Declare, tmp_path: Any,
        start_server: Callable[..., Server], start_scheduler: Callable[..., Proc],
        redis_client: redis.Redis) -> None:
    feature("periodic", via=Support.CORE)
    name = entry_name("api")
    path = schedule_toml(tmp_path / "s.toml", **{name: {"task": "add", "args": [2, 3],
                                                       "every": 1.0}})
    server = start_server(SCHEDULE_FILE=path)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as api:
        [entry] = [e for e in (await api.get("/schedules")).json() if e["name"] == name]
        assert (entry["task"], entry["args"], entry["every"], entry["paused"]) == (
            "add", [2, 3], 1.0, False)
        assert entry["next_run_at"] and entry["last_run_at"] is None
        assert (await api.post("/schedules/nope/run")).status_code == 404

        response = await api.post(f"/schedules/{name}/run")
        assert response.status_code == 202, response.text
        task = response.json()
        assert response.headers["location"] == f"/tasks/{task['id']}"
        assert (await finished(api, task["id"]))["result"] == 5
        assert [t["id"] for t in await schedule_tasks(api, name)] == [task["id"]]
        entry = (await api.get(f"/schedules/{name}")).json()
        assert entry["last_task_id"] == task["id"] and entry["last_run_at"]

        paused = (await api.post(f"/schedules/{name}/pause")).json()
        assert paused["paused"] is True and paused["next_run_at"] is None
        scheduler = start_scheduler(path)
        await until(lambda: "scheduler: 1 entry" in scheduler.output(), 30, "scheduler up")
        await asyncio.sleep(3)  # three ticks while paused: none may fire
        assert fired(redis_client, name) == [task["id"]]
        resumed = (await api.post(f"/schedules/{name}/resume")).json()
        assert resumed["paused"] is False and resumed["next_run_at"]
        await until(lambda: len(fired(redis_client, name)) >= 3, 10, "ticks after resume")
        scheduler.stop()
    server.stop()


async def test_schedule_native_scheduler_fires_the_shared_tasks(
        client: httpx.AsyncClient, feature: Declare, backend_name: str, tmp_path: Any,
        start_scheduler: Callable[..., Proc], redis_client: redis.Redis,
        redis_url: str) -> None:
    """Celery beat and arq cron, generated from the same schedule; Dramatiq has none."""
    name = entry_name("native")
    path = schedule_toml(tmp_path / "s.toml", **{name: {"task": "noop", "args": [name],
                                                       "every": 1}})
    if backend_class(backend_name).support()["periodic"] is not Support.NATIVE:
        done = _cli("scheduler", "--native", "--backend", backend_name, REDIS_URL=redis_url,
                    SCHEDULE_FILE=path)
        assert done.returncode != 0
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "no scheduler of its own" in lines[0], done.stderr
        return
    assert feature("periodic") is Support.NATIVE
    native = start_scheduler(path, "--native")
    await until(lambda: len(fired(redis_client, name)) >= 4, 60, "4 native ticks")
    native.stop()
    bodies = [await finished(client, t) for t in fired(redis_client, name)]
    assert [(b["state"], b["result"]) for b in bodies] == [("SUCCESS", name)] * len(bodies)
    from datetime import datetime

    times = sorted(datetime.fromisoformat(b["submitted_at"]).timestamp() for b in bodies)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    ticks = ticks_fired(redis_client, name)  # arq's cron fires core's per-tick key
    # Celery beat's ticks are its own (from its start, not the epoch): the largest
    # distance from the grid of its first send stands in for the delay
    late = (firing_delay(bodies, ticks) if ticks
            else max(abs(t - times[0] - k) for k, t in enumerate(times)))
    print(f"periodic[{backend_name}] native: gaps {min(gaps):.3f}-{max(gaps):.3f} s, "
          f"largest firing delay {late * 1000:.1f} ms against a 1 s tick"
          f"{'' if ticks else ' (from its first send)'}")
    assert all(0.5 < g < 1.5 for g in gaps), gaps
