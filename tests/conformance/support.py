"""What the conformance tests share: driving the HTTP API and the CLI as a user does
(submit, wait for the final state, run a command), and reading what the workers wrote
(the shared tasks' run counters in Redis, the state events on `qb:events`)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import redis
import redis.asyncio as aioredis

from core.cli.procs import ROOT
from core.states import TaskState
from core.store.keys import EVENTS_CHANNEL, FLAKY_KEY, SLEPT_KEY
from core.tasks.features import Support
from core.tasks.shared import MAX_CPU_ROUNDS

FINAL = {s.value for s in TaskState if s.finished}


# -- the API and the CLI, as a user drives them ------------------------------------------

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


def cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`queuebench ARGS` in a process of its own, with `env` over this one's."""
    return subprocess.run([sys.executable, "-m", "core.cli.main", *args], cwd=ROOT, text=True,
                          capture_output=True, timeout=60, env={**os.environ, **env})


# The `feature` fixture (tests/conftest.py): the test names the feature it proves and
# gets the backend's claim for it.
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
    """An option the backend does not support: 422 naming the backend and each option."""
    response = await client.post(f"/tasks/{name}", json={"args": args, "options": options})
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert backend_name in detail and all(option in detail for option in options)


# sha256 rounds that take minutes: a cpu task that never ends within a test by itself.
CPU_FOREVER = MAX_CPU_ROUNDS  # minutes of rounds: the most the task takes


# The worker set-ups a stop must work on: the default one, and one process (Celery's
# threads pool, which the benchmark uses; Dramatiq's one process).
WORKER_SETUPS = pytest.mark.parametrize("processes", [None, 1],
                                        ids=["default-worker", "one-process"])


# -- what the workers wrote --------------------------------------------------------------

def flaky_runs(redis_client: redis.Redis, key: str) -> int:
    """How often the shared `flaky` task ran for `key` (it counts its runs in Redis)."""
    return int(redis_client.get(FLAKY_KEY.format(key)) or 0)


def sleep_runs(redis_client: redis.Redis, key: str) -> int:
    """How often the shared `sleep` task ran to its end for `key`."""
    return int(redis_client.get(SLEPT_KEY.format(key)) or 0)


class Timeline:
    """When every task reached each state, as seen on `qb:events` by the test (its
    own subscription, confirmed before it returns, read in the background)."""

    def __init__(self, redis_url: str) -> None:
        self.client = aioredis.Redis.from_url(redis_url, decode_responses=True)
        self.pubsub = self.client.pubsub()
        self.seen: dict[str, list[tuple[str, float]]] = {}

    async def __aenter__(self) -> Timeline:
        await self.pubsub.subscribe(EVENTS_CHANNEL)
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


async def scrape(client: httpx.AsyncClient) -> dict[Any, float]:
    """GET /metrics, parsed: (name, labels) -> value."""
    from prometheus_client.parser import text_string_to_metric_families

    answer = await client.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(answer.text) for s in family.samples}


def sample(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)
