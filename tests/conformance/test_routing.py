"""Routing: `queue` sends a task to the workers of that queue only; `priority` serves
higher first (or is refused, naming the backend)."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from core.cli.procs import Proc
from core.tasks.features import Support
from tests.conformance.support import (
    Declare,
    expect_unsupported,
    finished,
    run,
    sample,
    scrape,
    submit,
)


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


async def test_queue_depth_is_read_from_the_librarys_own_queue(
        client: httpx.AsyncClient, backend_name: str, queue_name: str) -> None:
    """/metrics and the dashboard give the messages waiting in the library's own queue,
    on its broker (Redis's lists and streams; RabbitMQ's queues, ready messages)."""
    # No worker consumes queue_name: its three messages wait in the library's structures.
    for i in range(3):
        await submit(client, "add", i, 1, options={"queue": queue_name})
    depth = sample(await scrape(client), "queuebench_queue_depth", queue=queue_name,
                   backend=backend_name)
    assert depth == 3
    page = (await client.get("/dashboard/queues")).text
    assert queue_name in page


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
