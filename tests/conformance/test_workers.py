"""Workers: /health counts them; two share a burst, none lost, none run twice;
`--concurrency` bounds the tasks in flight over all queues; SIGTERM lets tasks in
flight finish."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import Callable

import httpx
import pytest
import redis

from core.cli.procs import Proc, Server
from core.store.keys import FLAKY_KEY, TASK_KEY
from core.tasks.features import Support
from core.worker.heartbeat import host_and_pid
from tests.conformance.support import FINAL, Declare, finished, state_seen, submit


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
    assert [int(redis_client.get(FLAKY_KEY.format(k)) or 0) for k in keys] == [1] * 200
    ran_on = {redis_client.hget(TASK_KEY.format(t['id']), "worker") for t in tasks}
    pids = {host_and_pid(w)[1] for w in ran_on if w}
    assert len(pids) >= 2, f"one process ran the whole burst: {ran_on}"
    second.stop()


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
    """`--concurrency 3` over two queues: 3 tasks in flight, never more, and not fewer
    (not 3 per queue; not 3 // 2 threads in each of 2 processes on a 2-core machine)."""
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
                pipe.hget(TASK_KEY.format(i), "state")
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
