"""Outages and shutdowns under load (issue 14), on the backend under test: Redis
killed and frozen, the database cut, SIGTERM to the workers and to the API.

Each test owns the service it breaks: a redis-server of its own on a free port, a
proxy in front of a PostgreSQL database it created (tests/support_faults.py); the
shared Redis and PostgreSQL servers go on untouched. Marked `faults`:
`pytest tests/test_faults.py -m faults --backend B`.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import redis

from core.procs import Proc, Server
from tests.conftest import service_down
from tests.support_faults import CuttableProxy, RedisServer, cpu_share, descendants

pytestmark = pytest.mark.faults

# The most a request may take while Redis is down or frozen: core's Redis clients
# give up on a connection after 2 s and on a reply after 5 s (core/records.py); the
# rest is slack for a machine shared with other test runs.
ANSWER_BOUND = 10.0
# A worker whose Redis is away waits and retries; it must not spin: CPU seconds per
# wall second over all its processes, with one core being 1.0 (measured: 0.01-0.05).
IDLE_CPU = 0.3
# How long everything may take to come back by itself once Redis is back.
RECOVERY = 60.0


@pytest.fixture
def shown() -> Iterator[list[Proc]]:
    """Processes whose output ends the test's captured output (shown if it fails)."""
    procs: list[Proc] = []
    yield procs
    for proc in procs:  # without the lines of each task run
        lines = [line for line in proc.output().splitlines() if " INFO " not in line]
        print(f"--- {' '.join(proc.args)} ---", *lines[-400:], sep="\n")


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    made: list[RedisServer] = []

    def start(appendfsync: str | None = None) -> RedisServer:
        try:
            server = RedisServer(tmp_path, appendfsync)
        except FileNotFoundError as exc:
            service_down(str(exc))
        made.append(server)
        return server

    yield start
    for server in made:
        server.stop()


async def submit(http: httpx.AsyncClient, name: str, *args: Any, **options: Any) -> httpx.Response:
    return await http.post(f"/tasks/{name}", json={"args": list(args), "options": options})


async def final(http: httpx.AsyncClient, task_id: str, timeout: float = RECOVERY) -> dict[str, Any]:
    """The task's body once finished; fails after `timeout` (Redis away counts as not yet)."""
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        response = await http.get(f"/tasks/{task_id}/wait", params={"timeout": 2})
        if response.status_code == 200:
            body = response.json()
            if body["state"] in ("SUCCESS", "FAILURE", "REVOKED", "EXPIRED"):
                return body
        await asyncio.sleep(0.1)
    raise AssertionError(f"task {task_id} not finished within {timeout}s: {body}")


class Load:
    """Submits a noop every `every` seconds until stopped; each answer's status and time."""

    def __init__(self, http: httpx.AsyncClient, every: float = 0.05) -> None:
        self.http = http
        self.every = every
        self.answers: list[tuple[float, int, float, str]] = []  # sent at, status, seconds, id
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Load:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            sent = time.monotonic()
            response = await submit(self.http, "noop", "load")
            task_id = response.json().get("id", "") if response.status_code == 202 else ""
            self.answers.append((sent, response.status_code, time.monotonic() - sent, task_id))
            await asyncio.sleep(self.every)

    def since(self, start: float) -> list[tuple[float, int, float, str]]:
        return [a for a in self.answers if a[0] >= start]

    def accepted(self) -> list[str]:
        return [a[3] for a in self.answers if a[1] == 202]


def _no_worker_process_died(pids: set[int]) -> list[int]:
    return sorted(pid for pid in pids if not psutil.pid_exists(pid)
                  or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)


async def test_redis_outage_is_a_quick_503_idle_workers_and_recovery_by_itself(
        backend_name: str, private_redis: Callable[..., RedisServer],
        start_worker: Callable[..., Proc], start_server: Callable[..., Server],
        shown: list[Proc]) -> None:
    """Redis (no persistence) killed under load: every request answers within
    ANSWER_BOUND, submits and /health with 503 naming Redis; the worker processes stay
    up and idle; once Redis is back, new tasks are accepted and run, with no restart."""
    store = private_redis()
    env = {"REDIS_URL": store.url}
    worker = start_worker(concurrency=4, **env)
    server = start_server(**env)
    shown += [worker, server]
    pids = descendants(worker.pid)
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http, Load(http) as load:
        first = await submit(http, "sleep", 0.2)
        assert (await final(http, first.json()["id"]))["state"] == "SUCCESS"
        store.kill()
        down_at = time.monotonic()
        answer = await submit(http, "noop", 1)
        assert answer.status_code == 503, answer.text
        assert "redis" in answer.json()["detail"]
        health = await http.get("/health")
        assert health.status_code == 503 and health.json()["redis"] is False, health.text
        await asyncio.sleep(1)  # the load goes on against a dead Redis
        cpu = await asyncio.to_thread(cpu_share, worker.pid, 3.0)
        while_down = load.since(down_at + 0.5)
        store.start()  # empty: nothing was on disk
        back_at = time.monotonic()
        body = await final(http, await _accepted_after_outage(http))
        recovered = time.monotonic() - back_at
    assert body["state"] == "SUCCESS", body
    assert while_down and {status for _, status, _, _ in while_down} == {503}, while_down
    slowest = max(seconds for _, _, seconds, _ in load.since(down_at))
    assert slowest < ANSWER_BOUND, f"a request took {slowest:.1f}s while Redis was down"
    assert cpu < IDLE_CPU, f"the worker used {cpu:.2f} of a core while Redis was down"
    assert worker.alive() and not _no_worker_process_died(pids), worker.output()[-3000:]
    print(f"\n{backend_name}: 503 within {slowest:.2f}s, worker CPU {cpu:.3f} while down, "
          f"a new task ran {recovered:.1f}s after Redis came back")


async def _accepted_after_outage(http: httpx.AsyncClient) -> str:
    deadline = time.monotonic() + RECOVERY
    while time.monotonic() < deadline:
        response = await submit(http, "add", 1, 2)
        if response.status_code == 202:
            return str(response.json()["id"])
        assert response.status_code == 503, response.text
        await asyncio.sleep(0.1)
    raise AssertionError("no submit accepted after Redis came back")
