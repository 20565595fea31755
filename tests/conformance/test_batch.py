"""A batch submit: ids in order, each task run; a bad item named and none queued; its
size bounded; its idempotency key answered with the same tasks."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest

from tests.conformance.support import finished

# The latest `add` tasks: what a refused `add` must not have added to (another task,
# a periodic tick or a test beside, may be submitted meanwhile and must not count).
ADDS = {"name": "add", "limit": 5}


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
    before = [t["id"] for t in (await client.get("/tasks", params=ADDS)).json()]
    items = [{"args": [1, 2]}, {"args": [3, 4]}, {"args": [5, "x"]}, {"args": [1]}]
    response = await client.post("/tasks/add/batch", json={"items": items})
    assert response.status_code == 422, response.text
    locations = [e["loc"][:3] for e in response.json()["detail"]]
    assert ["body", "items", 2] in locations and ["body", "items", 3] in locations
    assert ["body", "items", 0] not in locations
    after = [t["id"] for t in (await client.get("/tasks", params=ADDS)).json()]
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
