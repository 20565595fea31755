"""Delay: `countdown` and `eta` hold a task back; both at once is refused."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from core.tasks.features import Support
from tests.conformance.support import Declare, expect_unsupported, finished, run, submit

# The latest `add` tasks: what a refused `add` must not have added to (another task,
# a periodic tick or a test beside, may be submitted meanwhile and must not count).
ADDS = {"name": "add", "limit": 5}


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


async def test_countdown_with_eta_is_422_naming_both(client: httpx.AsyncClient) -> None:
    from datetime import UTC, datetime, timedelta

    eta = (datetime.now(UTC) + timedelta(seconds=5)).isoformat()
    before = [t["id"] for t in (await client.get("/tasks", params=ADDS)).json()]
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
    after = [t["id"] for t in (await client.get("/tasks", params=ADDS)).json()]
    assert after == before


async def test_a_short_delay_is_not_held_back_by_a_longer_one_sent_before_it(
        client: httpx.AsyncClient, feature: Declare) -> None:
    """Two countdowns on one queue, the longer sent first: the shorter starts before
    the longer is due, not when it is."""
    from datetime import datetime, timedelta

    if feature("delay") is Support.NONE:
        pytest.skip("unsupported: the 422 is proved by the delay test")
    longer = await submit(client, "add", 1, 2, options={"countdown": 8.0})
    shorter = await submit(client, "add", 3, 4, options={"countdown": 0.5})
    body = await finished(client, shorter["id"])
    try:
        assert body["state"] == "SUCCESS"
        due = datetime.fromisoformat(longer["submitted_at"]) + timedelta(seconds=8)
        assert datetime.fromisoformat(body["started_at"]) < due - timedelta(seconds=2)
    finally:
        assert (await finished(client, longer["id"]))["state"] == "SUCCESS"
