"""Routing: `queue` sends a task to the workers of that queue only; `priority` serves
higher first (or is refused, naming the backend)."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from core.cli.procs import Proc
from core.tasks.features import Support
from tests.conformance.support import Declare, expect_unsupported, finished, run, submit


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
