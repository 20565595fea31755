"""Outages and shutdowns under load, on the backend under test: Redis
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
from sqlalchemy import text
from sqlalchemy.engine import make_url

from core.cli.procs import Proc, Server, wait_until
from core.db.engine import make_engine
from core.history.writer import GROUP
from core.store.keys import HISTORY_STREAM, SLEPT_KEY, TASK_KEY
from core.tasks.features import Support
from core.worker.heartbeat import host_and_pid
from tests.conftest import service_down
from tests.support_db import (
    create_postgres_database,
    drop_postgres_database,
    need_postgres,
    prepare_database,
)
from tests.support_faults import CuttableProxy, RedisServer, cpu_share, descendants

pytestmark = pytest.mark.faults

# The most a request may take while Redis is down or frozen: core's Redis clients
# give up on a connection after 2 s and on a reply after 5 s (core/store/records.py); the
# rest is slack for a machine shared with other test runs.
ANSWER_BOUND = 10.0
# A worker whose Redis is away waits and retries; it must not spin: CPU seconds per
# wall second over all its processes, with one core being 1.0 (measured: 0.01-0.05).
IDLE_CPU = 0.3
# How long everything may take to come back by itself once Redis is back.
RECOVERY = 60.0


@pytest.fixture
def shown() -> Iterator[list[Proc]]:
    """Processes stopped at the end of the test (before its Redis goes), whose output
    ends the test's captured output (shown if it fails)."""
    procs: list[Proc] = []
    yield procs
    for proc in procs:
        proc.stop()
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


def on(store: RedisServer) -> dict[str, str]:
    """The settings of a stack on the test's own Redis: its records and its broker (the
    session's BROKER_URL is the suite's Redis, where the session's workers would take
    this test's messages and find no record of them)."""
    return {"REDIS_URL": store.url, "BROKER_URL": store.url}


class OwnStack:
    """A worker and a server of the backend under test on a Redis of the test's own."""

    def __init__(self, private_redis: Callable[..., RedisServer],
                 start_worker: Callable[..., Proc], start_server: Callable[..., Server],
                 shown: list[Proc]) -> None:
        self.private_redis = private_redis
        self.start_worker = start_worker
        self.start_server = start_server
        self.shown = shown

    def __call__(self, appendfsync: str | None = None, concurrency: int = 4,
                 **env: str) -> tuple[RedisServer, Proc, Server]:
        store = self.private_redis(appendfsync)
        worker = self.worker(concurrency, **on(store), **env)
        server = self.start_server(**on(store), **env)
        self.shown.append(server)
        return store, worker, server

    def worker(self, concurrency: int, **env: str) -> Proc:
        made = self.start_worker(concurrency=concurrency, **env)
        self.shown.append(made)
        return made


@pytest.fixture
def own_stack(private_redis: Callable[..., RedisServer], start_worker: Callable[..., Proc],
              start_server: Callable[..., Server], shown: list[Proc]) -> OwnStack:
    return OwnStack(private_redis, start_worker, start_server, shown)


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
            try:
                response = await submit(self.http, "noop", "load")
            except httpx.TransportError:  # no answer at all (a server that stopped): 0
                self.answers.append((sent, 0, time.monotonic() - sent, ""))
            else:
                task_id = response.json().get("id", "") if response.status_code == 202 else ""
                self.answers.append((sent, response.status_code, time.monotonic() - sent,
                                     task_id))
            await asyncio.sleep(self.every)

    def since(self, start: float) -> list[tuple[float, int, float, str]]:
        return [a for a in self.answers if a[0] >= start]

    def accepted(self) -> list[str]:
        return [a[3] for a in self.answers if a[1] == 202]


def _no_worker_process_died(pids: set[int]) -> list[int]:
    return sorted(pid for pid in pids if not psutil.pid_exists(pid)
                  or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)


async def test_redis_outage_is_a_quick_503_idle_workers_and_recovery_by_itself(
        backend_name: str, own_stack: OwnStack, feature: Callable[..., Support]) -> None:
    """Redis (no persistence) frozen, then killed, under load: every request answers
    within ANSWER_BOUND, submits and /health with 503 naming Redis; the worker processes stay
    up and idle; once Redis is back, new tasks are accepted and run, with no restart."""
    feature("redis_outage")
    store, worker, server = own_stack()
    pids = descendants(worker.pid)
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http, Load(http) as load:
        first = await submit(http, "sleep", 0.2)
        assert (await final(http, first.json()["id"]))["state"] == "SUCCESS"
        # Accepted, and waiting on a queue no worker consumes when Redis dies.
        waiting = (await submit(http, "add", 1, 1, queue=f"q-{uuid.uuid4().hex[:8]}")).json()
        store.freeze()  # connections open, nothing answers: bounded by core's timeouts
        frozen_at = time.monotonic()
        try:
            stuck = await submit(http, "noop", 1)
            frozen_for = time.monotonic() - frozen_at
        finally:
            store.thaw()
        assert stuck.status_code == 503 and "redis" in stuck.json()["detail"], stuck.text
        assert frozen_for < ANSWER_BOUND, f"a submit took {frozen_for:.1f}s on a frozen Redis"
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
        lost = await http.get(f"/tasks/{waiting['id']}")
    assert body["state"] == "SUCCESS", body
    # Nothing was on disk: an accepted task that had not finished is gone with Redis.
    assert lost.status_code == 404, lost.text
    assert while_down and {status for _, status, _, _ in while_down} == {503}, while_down
    slowest = max(seconds for _, _, seconds, _ in load.since(down_at))
    assert slowest < ANSWER_BOUND, f"a request took {slowest:.1f}s while Redis was down"
    assert cpu < IDLE_CPU, f"the worker used {cpu:.2f} of a core while Redis was down"
    assert worker.alive() and not _no_worker_process_died(pids), worker.output()[-3000:]
    print(f"\n{backend_name}: 503 within {frozen_for:.1f}s (frozen Redis), "
          f"{slowest:.2f}s (killed), worker CPU {cpu:.3f} while down, "
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


async def test_with_appendonly_no_accepted_task_is_lost_when_redis_is_killed(
        backend_name: str, own_stack: OwnStack, feature: Callable[..., Support]) -> None:
    """Redis with `appendonly yes` and `appendfsync always` (a write is on disk before
    its reply) killed while tasks run, wait and keep coming: every task the API
    accepted (202) ends SUCCESS once Redis is back. A message the kill lost (kombu
    takes one with BRPOP and records it as unacked in a second call) is sent again by
    the reaper, REDELIVERY_AFTER (30 s) later, once; none more often. (The sleeps count
    no runs: a side effect in Redis fails the run that ends while Redis is down. The
    chaos harness, tests/chaos.py, counts runs.)"""
    feature("durable_redis")
    store, _, server = own_stack(appendfsync="always", concurrency=2)
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
        async with Load(http) as load:
            sleeps = [(await submit(http, "sleep", 0.5)).json()["id"] for _ in range(8)]
            await _until_started(http, sleeps[0])
            store.kill()
            await asyncio.sleep(1)
            store.start()
            await _accepted_after_outage(http)
        accepted = [*sleeps, *load.accepted()]
        deadline = time.monotonic() + RECOVERY
        states = {t: await _final_state(http, t, deadline) for t in accepted}
    stuck = {t: _keys_holding(store.url, t) for t, state in states.items() if state != "SUCCESS"}
    assert not stuck, f"not SUCCESS (the Redis keys that still name each): {stuck}"
    check = redis.Redis.from_url(store.url, decode_responses=True)
    again = {t: n for t in accepted if int(n := check.hget(TASK_KEY.format(t), "deliveries") or 0)}
    check.close()
    assert all(int(n) == 1 for n in again.values()), f"delivered more than twice: {again}"
    print(f"\n{backend_name}: {len(accepted)} accepted tasks, all SUCCESS after the restart, "
          f"{len(again)} of them sent again (their message lost)")


async def _final_state(http: httpx.AsyncClient, task_id: str, deadline: float) -> str:
    try:
        return str((await final(http, task_id, max(1.0, deadline - time.monotonic())))["state"])
    except AssertionError:
        return "not finished"


def _keys_holding(url: str, task_id: str) -> list[str]:
    """The keys whose value mentions `task_id`: where its message waits, if anywhere."""
    client = redis.Redis.from_url(url)
    found = []
    try:
        for key in client.scan_iter(count=1000):
            kind = client.type(key).decode()
            values = {"list": lambda k: client.lrange(k, 0, -1), "hash": client.hvals,
                      "zset": lambda k: client.zrange(k, 0, -1), "string": lambda k: [
                          client.get(k)]}.get(kind, lambda k: [])(key)
            if any(task_id.encode() in (v or b"") for v in values):
                found.append(f"{kind} {key.decode()}")
    finally:
        client.close()
    return found


async def _until_started(http: httpx.AsyncClient, task_id: str) -> None:
    deadline = time.monotonic() + 30
    while (await http.get(f"/tasks/{task_id}")).json()["state"] == "PENDING":
        assert time.monotonic() < deadline, f"task {task_id} never started"
        await asyncio.sleep(0.02)


@pytest.fixture
def database_behind_proxy() -> Iterator[tuple[str, CuttableProxy]]:
    """A migrated PostgreSQL database of the test's own, and a proxy in front of it;
    the app's url goes through the proxy."""
    need_postgres()
    url = create_postgres_database("qb_faults")
    proxy: CuttableProxy | None = None
    try:
        prepare_database(url)
        direct = make_url(url)
        proxy = CuttableProxy(direct.host or "127.0.0.1", direct.port or 5432)
        yield url, proxy
    finally:
        if proxy is not None:
            proxy.stop()
        drop_postgres_database(url)


async def _in_history(url: str, ids: list[str]) -> dict[str, str]:
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(text("SELECT id, state FROM task_history "
                                           "WHERE id = ANY(:ids)"), {"ids": ids})
            return {row.id: row.state for row in rows}
    finally:
        await engine.dispose()


@pytest.mark.postgres
async def test_database_outage_submissions_go_on_and_history_catches_up(
        backend_name: str, own_stack: OwnStack,
        database_behind_proxy: tuple[str, CuttableProxy],
        feature: Callable[..., Support]) -> None:
    """Every connection to PostgreSQL cut (and new ones refused) mid-run: submits go on
    answering 202 and the tasks run; /health names the database; once it is back,
    the history writer stores every task that finished meanwhile."""
    feature("database_outage")
    url, proxy = database_behind_proxy
    store, _, server = own_stack(DATABASE_URL=make_url(url).set(port=proxy.port).render_as_string(
        hide_password=False))
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
        before = [(await submit(http, "add", i, 1)).json()["id"] for i in range(5)]
        for task_id in before:
            await final(http, task_id)
        await _until(lambda: _in_history(url, before), len(before), "history before the cut")
        proxy.cut()
        answers = [await submit(http, "add", i, 2) for i in range(20)]
        assert {a.status_code for a in answers} == {202}, [a.text for a in answers]
        during = [a.json()["id"] for a in answers]
        assert {(await final(http, t))["state"] for t in during} == {"SUCCESS"}
        health = await http.get("/health")
        assert health.status_code == 503 and health.json()["database"] is False, health.text
        assert not await _in_history(url, during)  # nothing could be written meanwhile
        # Cut until the writer has read them, failed to store them, and kept them.
        await asyncio.to_thread(wait_until, lambda: _kept_after_a_failure(
            store.url, server, len(during)), RECOVERY, 0.1, "the writer's failed attempt")
        proxy.restore()
        restored = time.monotonic()
        stored = await _until(lambda: _in_history(url, before + during),
                              len(before + during), "history after the cut")
        caught_up = time.monotonic() - restored
    assert set(stored.values()) == {"SUCCESS"}, stored
    print(f"\n{backend_name}: history caught up {caught_up:.1f}s after the database came back")


def _kept_after_a_failure(url: str, server: Server, count: int) -> bool:
    """Whether the history writer said it failed, and holds `count` entries unstored."""
    client = redis.Redis.from_url(url)
    try:
        pending = int(client.xpending(HISTORY_STREAM, GROUP)["pending"])
    finally:
        client.close()
    return pending >= count and "history writer: " in server.output()


async def _until(read: Callable[[], Any], count: int, what: str) -> dict[str, str]:
    deadline = time.monotonic() + RECOVERY
    while True:
        found: dict[str, str] = await read()
        if len(found) >= count:
            return found
        assert time.monotonic() < deadline, f"{what}: {len(found)} of {count} stored"
        await asyncio.sleep(0.2)


def _runs(url: str, keys: list[str]) -> list[int]:
    """How many runs of `sleep(..., key)` got to their end, per key."""
    client = redis.Redis.from_url(url)
    try:
        return [int(client.get(SLEPT_KEY.format(key)) or 0) for key in keys]
    finally:
        client.close()


def _ran_in(url: str, task_id: str) -> int:
    """The pid of the process that ran the task last (its record's owner)."""
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        return host_and_pid(str(client.hget(TASK_KEY.format(task_id), "worker")))[1]
    finally:
        client.close()


async def _exits(proc: Proc, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while proc.alive():
        assert time.monotonic() < deadline, f"{proc.args[0]} still runs {timeout}s after SIGTERM"
        await asyncio.sleep(0.05)


async def test_sigterm_to_a_worker_under_load_finishes_its_tasks_and_leaves_the_rest_queued(
        backend_name: str, own_stack: OwnStack, feature: Callable[..., Support]) -> None:
    """SIGTERM to `queuebench worker` (its main process, as `docker stop` sends it)
    with both slots on 1.5 s sleeps and more waiting: the two finish there, the worker
    exits, the waiting ones stay PENDING; a new worker runs them; each task runs once."""
    feature("graceful_shutdown")
    store, first, server = own_stack(concurrency=2)
    keys = [uuid.uuid4().hex for _ in range(8)]
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
        ids = [(await submit(http, "sleep", 1.5 if i < 2 else 0.2, keys[i])).json()["id"]
               for i in range(len(keys))]
        for task_id in ids[:2]:
            await _until_started(http, task_id)
        first_pids = descendants(first.pid)
        os.kill(first.pid, signal.SIGTERM)
        await _exits(first)
        in_flight = [(await http.get(f"/tasks/{t}")).json()["state"] for t in ids[:2]]
        waiting = [(await http.get(f"/tasks/{t}")).json()["state"] for t in ids[2:]]
        second = own_stack.worker(concurrency=2, **on(store))
        bodies = [await final(http, task_id) for task_id in ids]
    assert in_flight == ["SUCCESS"] * 2, in_flight
    assert waiting == ["PENDING"] * 6, waiting
    assert [b["state"] for b in bodies] == ["SUCCESS"] * 8
    assert {_ran_in(store.url, t) for t in ids[:2]} <= first_pids
    assert {_ran_in(store.url, t) for t in ids[2:]} <= descendants(second.pid)
    assert _runs(store.url, keys) == [1] * 8


async def test_sigterm_to_the_api_answers_requests_in_flight_and_loses_no_accepted_task(
        backend_name: str, own_stack: OwnStack, start_server: Callable[..., Server],
        shown: list[Proc]) -> None:
    """SIGTERM to `queuebench serve` under a stream of submits, with a /wait in
    flight: the /wait gets its answer, every submit is a 202 or no answer at all
    (never a 5xx), the server exits, and each task it accepted runs."""
    store, _, api = own_stack()
    async with httpx.AsyncClient(base_url=api.url, timeout=60) as http:
        task = (await submit(http, "sleep", 1.5)).json()
        async with Load(http, every=0.01) as load:
            waiting = asyncio.create_task(
                http.get(f"/tasks/{task['id']}/wait", params={"timeout": 20}))
            await asyncio.sleep(0.5)
            os.kill(api.pid, signal.SIGTERM)
            answer = await waiting
            await _exits(api)
    statuses = {status for _, status, _, _ in load.answers}
    accepted = load.accepted()
    again = start_server(**on(store))
    shown.append(again)
    async with httpx.AsyncClient(base_url=again.url, timeout=60) as http:
        states = {(await final(http, task_id))["state"] for task_id in accepted}
    assert answer.status_code == 200 and answer.json()["state"] == "SUCCESS", answer.text
    assert statuses <= {202, 0} and 202 in statuses, statuses
    assert states == {"SUCCESS"}, states
