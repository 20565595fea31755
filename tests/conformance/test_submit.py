"""A submit is accepted (202, PENDING) or refused (404, 422 naming the field) with
nothing queued; each task is an endpoint with its arguments in the OpenAPI schema."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.conformance.support import finished, submit


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


async def test_openapi_shows_each_task_and_its_arguments(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    for name in ("divide", "add", "noop", "sleep", "cpu", "flaky", "fail"):
        assert f"/tasks/{name}" in spec["paths"]
    schemas = spec["components"]["schemas"]
    assert set(schemas["DivideArgsKwargs"]["properties"]) == {"x", "y"}
