"""The dashboard's data functions and /metrics, on each backend.

The data functions run on a Redis database of their own (no worker); /metrics, the
pages, the event stream and the queue depths against real `queuebench serve` and
`queuebench worker` processes, as the conformance suite does. Flower's test is
Celery's alone, and says so on the other backends."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import pytest_asyncio

from core.api.dashboard import data
from core.api.dashboard.live import Activity, percentile
from core.api.metrics import Counts, read_counts
from core.cli.procs import Proc, free_port, venv_python, wait_until
from core.states import TaskState
from core.store.keys import METRIC_BOUNDS, WORKER_TASKS_KEY, WORKERS_KEY, WORKERS_SEEN_KEY
from core.store.records import RecordStore, TaskRecord, connect
from tests.conformance.support import finished, sample, scrape, submit
from tests.conftest import redis_database

DATA_DB = 15  # the data functions' own database, flushed by each test


# -- the data functions, on records written through the record scripts ------------------

@pytest_asyncio.fixture(loop_scope="session")
async def store(backend_name: str) -> AsyncIterator[RecordStore]:
    client = connect(redis_database(DATA_DB, flush=True))
    yield RecordStore(client, history=False)
    await client.aclose()


async def _make(store: RecordStore, n: int, *, at: float, backend: str = "arq",
                every: float = 1.0) -> list[TaskRecord]:
    """n records submitted `every` seconds apart from `at` (oldest first): names
    alternate add/noop, and every third one is finished SUCCESS, the others PENDING."""
    records = [TaskRecord(id=f"t{i:05d}", name="add" if i % 2 else "noop", backend=backend,
                          args=[i], submitted_at=at + i * every) for i in range(n)]
    await store.create_many([(r, None, None, None) for r in records])
    for r in records[::3]:
        await store.start(r.id, "h:1")
        await store.finish(r.id, TaskState.SUCCESS, result=r.args[0], worker="h:1")
    return records


async def test_task_pages_cover_the_index_newest_first_without_overlap(
        store: RecordStore) -> None:
    records = await _make(store, 120, at=time.time() - 1000)
    seen: list[str] = []
    query = data.TaskQuery(size=50)
    while True:
        found = await data.task_page(store, query)
        seen += [r.id for r in found.rows]
        if found.next_cursor is None:
            break
        query = data.TaskQuery(size=50, cursor=found.next_cursor)
    assert seen == [r.id for r in reversed(records)]


@pytest.mark.parametrize(("state", "name"), [("SUCCESS", None), ("PENDING", "add"),
                                             (None, "noop")])
async def test_filtered_pages_hold_only_matches_and_all_of_them(
        store: RecordStore, state: str | None, name: str | None) -> None:
    records = await _make(store, 200, at=time.time() - 1000)
    fresh = {r.id: r for r in await store.get_many([r.id for r in records])}
    wanted = [r.id for r in reversed(records) if (not state or fresh[r.id].state == state)
              and (not name or r.name == name)]
    seen: list[str] = []
    query = data.TaskQuery(state=state, name=name, size=20)
    while True:
        found = await data.task_page(store, query)
        assert len(found.rows) <= 20
        seen += [r.id for r in found.rows]
        if found.next_cursor is None:
            break
        query = data.TaskQuery(state=state, name=name, size=20, cursor=found.next_cursor)
    assert seen == wanted


async def test_time_filter_reads_the_window_only(store: RecordStore) -> None:
    now = time.time()
    records = await _make(store, 60, at=now - 59)  # one a second, the newest now
    found = await data.task_page(store, data.TaskQuery(since=now - 9.5, size=50))
    assert [r.id for r in found.rows] == [r.id for r in reversed(records[-10:])]
    assert found.next_cursor is None
    found = await data.task_page(store, data.TaskQuery(since=now - 9.5, name="add", size=3))
    assert [r.id for r in found.rows] == [r.id for r in reversed(records[-10:])
                                          if r.name == "add"][:3]
    found = await data.task_page(store, data.TaskQuery(since=now - 9.5, name="add",
                                                       cursor=found.next_cursor or 0))
    assert len(found.rows) == 2 and found.next_cursor is None


async def test_a_filter_stops_at_its_scan_limit_and_says_so(
        store: RecordStore, monkeypatch: pytest.MonkeyPatch) -> None:
    await _make(store, 100, at=time.time() - 1000)
    monkeypatch.setattr(data, "SCAN_LIMIT", 30)
    monkeypatch.setattr(data, "CHUNK", 7)
    found = await data.task_page(store, data.TaskQuery(state="REVOKED"))
    assert (found.rows, found.scanned, found.stopped, found.next_cursor) == ([], 30, True, 30)
    found = await data.task_page(store, data.TaskQuery(state="REVOKED", cursor=90))
    assert (found.scanned, found.stopped, found.next_cursor) == (10, False, None)


async def test_the_scripts_count_submits_finishes_and_both_histograms(
        store: RecordStore) -> None:
    now = time.time()
    late = TaskRecord(id="late", name="add", backend="celery", submitted_at=now - 2.0)
    await store.create(late)
    await store.create(TaskRecord(id="gone", name="add", backend="celery", submitted_at=now))
    await store.start("late", "h:1")
    await store.finish("late", TaskState.FAILURE, error={"type": "E", "message": ""},
                       worker="h:1")
    await store.revoke("gone")
    await store.finish("late", TaskState.SUCCESS, worker="h:1")  # refused: counted once
    counts = await read_counts(store.redis)
    assert counts.submitted == {("add", "celery"): 2}
    assert counts.finished == {("add", "celery", "FAILURE"): 1,
                               ("add", "celery", "REVOKED"): 1}
    wait = counts.queue_wait[("add", "celery")]
    assert wait.count == 1 and 2.0 <= wait.sum < 2.5
    assert wait.buckets[METRIC_BOUNDS.index(2.5)] == 1  # 2 s <= le 2.5, not le 1
    assert counts.runtime[("add", "celery")].count == 1
    tasks = await store.redis.hgetall(WORKER_TASKS_KEY)
    assert {k.decode(): int(v) for k, v in tasks.items()} == {"h:1|run": 1, "h:1|failed": 1}


def test_histogram_buckets_are_cumulative_for_prometheus() -> None:
    counts = Counts.parse({b"r|add|arq|1": b"2", b"r|add|arq|3": b"1",
                           f"r|add|arq|{len(METRIC_BOUNDS) + 1}".encode(): b"4",
                           b"r|add|arq|sum": b"9.5", b"x|junk": b"1"})
    buckets = counts.runtime[("add", "arq")].cumulative()
    assert buckets[0] == ("0.005", 2) and buckets[2] == ("0.025", 3)
    assert buckets[-2] == ("300.0", 3) and buckets[-1] == ("+Inf", 7)


async def test_worker_views_sum_their_processes_runs(store: RecordStore) -> None:
    now = time.time()
    beats = {"h:10": {"role": "worker", "backend": "celery", "host": "h", "pid": 10,
                      "concurrency": 2, "queues": ["default", "q2"]},
             "h:11": {"role": "runner", "backend": "celery", "host": "h", "pid": 11,
                      "parent": 10},
             "h:12": {"role": "runner", "backend": "celery", "host": "h", "pid": 12,
                      "parent": 10},
             "h:20": {"role": "worker", "backend": "celery", "host": "h", "pid": 20}}
    r = store.redis
    await r.hset(WORKERS_KEY, mapping={k: json.dumps(v) for k, v in beats.items()})
    await r.zadd(WORKERS_SEEN_KEY, {"h:10": now, "h:11": now, "h:12": now, "h:20": now - 60})
    await r.hset(WORKER_TASKS_KEY, mapping={"h:11|run": 5, "h:12|run": 2, "h:12|failed": 1})
    [view] = await data.worker_views(r, alive_within=10)
    assert (view.id, view.concurrency, view.queues) == ("h:10", 2, ["default", "q2"])
    assert (view.run, view.failed, sorted(view.processes)) == (7, 1, ["h:11", "h:12"])


def test_activity_rates_and_latency_percentiles() -> None:
    activity = Activity(window=60)
    start = 1_000_000.0
    for i in range(100):
        activity.add({"state": "SUCCESS", "latency": (i + 1) / 100}, now=start + i / 50)
    activity.add({"state": "FAILURE", "latency": 5.0}, now=start + 1)
    activity.add({"state": "STARTED"}, now=start + 1)
    chart = activity.series(now=start + 4, step=5)
    assert chart["t"][-1] == start and len(chart["t"]) == 12
    assert chart["rates"]["SUCCESS"][-1] == 20.0 and chart["rates"]["FAILURE"][-1] == 0.2
    assert chart["latency"]["p50"][-1] == 0.51 and chart["latency"]["p99"][-1] == 1.0
    assert percentile([], 50) is None
    assert activity.series(now=start + 120)["rates"] == {}  # out of the window


# -- against real processes ------------------------------------------------------------

async def test_metrics_after_a_known_burst(client: httpx.AsyncClient,
                                           backend_name: str) -> None:
    before = await scrape(client)
    tasks = [await submit(client, "divide", 1, y) for y in (1, 2, 0, 4, 0, 8, 1, 2)]
    await asyncio.gather(*(finished(client, t["id"]) for t in tasks))
    after = await scrape(client)
    task = {"task": "divide", "backend": backend_name}

    def grew(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert grew("queuebench_tasks_submitted_total", **task) == 8
    assert grew("queuebench_tasks_finished_total", **task, state="SUCCESS") == 6
    assert grew("queuebench_tasks_finished_total", **task, state="FAILURE") == 2
    for histogram in ("queuebench_task_runtime_seconds", "queuebench_task_queue_wait_seconds"):
        assert grew(f"{histogram}_count", **task) == 8
        assert grew(f"{histogram}_bucket", **task, le="+Inf") == 8
        assert sample(after, f"{histogram}_sum", **task) > 0
    assert sample(after, "queuebench_workers", backend=backend_name) >= 1
    assert ("queuebench_queue_depth", frozenset({"queue": "default", "backend": backend_name}
                                                .items())) in after


async def test_pages_answer_and_name_their_backend(client: httpx.AsyncClient,
                                                   backend_name: str) -> None:
    task = await submit(client, "add", 1, 2)
    await finished(client, task["id"])
    for path in ("/dashboard", "/dashboard/tasks", "/dashboard/tasks?state=SUCCESS&since=5m",
                 f"/dashboard/tasks/{task['id']}", "/dashboard/workers", "/dashboard/queues"):
        answer = await client.get(path)
        assert answer.status_code == 200, path
        assert f"backend: {backend_name}" in answer.text, path
    fragment = (await client.get("/dashboard/tasks", params={"fragment": "1"})).text
    assert task["id"] in fragment and "<html" not in fragment
    workers = (await client.get("/dashboard/workers")).text
    assert f">{backend_name}<" in workers and "no live worker" not in workers
    assert (await client.get("/dashboard/tasks/nope")).status_code == 404
    assert (await client.get("/dashboard/static/dashboard.js")).status_code == 200


async def test_event_stream_batches_the_changes_of_a_burst(client: httpx.AsyncClient) -> None:
    async with client.stream("GET", "/dashboard/events") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        lines = stream.aiter_lines()
        assert await anext(lines) == "retry: 1000"
        tasks = [await submit(client, "noop", i) for i in range(20)]
        wanted, seen, messages = {t["id"] for t in tasks}, set(), 0
        async with asyncio.timeout(30):
            async for line in lines:
                if line.startswith("data: "):
                    update = json.loads(line[6:])
                    seen |= set(update["ids"]) & wanted
                    messages += 1
                    assert "rates" in update["chart"]
                    if seen == wanted and await _all_final(client, wanted):
                        break
    # 20 tasks make 60 events; batched every 0.4 s they are a handful of messages.
    assert messages < 30


async def _all_final(client: httpx.AsyncClient, ids: set[str]) -> bool:
    bodies = [(await client.get(f"/tasks/{i}")).json() for i in ids]
    return all(TaskState(b["state"]).finished for b in bodies)


# -- Flower ------------------------------------------------------------------------------

def test_flower_shows_the_shared_tasks(backend_name: str, base_env: dict[str, str],
                                       start_worker: Callable[..., Proc],
                                       client: httpx.AsyncClient) -> None:
    if backend_name != "celery":
        pytest.skip(f"Flower is Celery's dashboard: there is no Flower for {backend_name} "
                    "(queuebench's /dashboard is its equivalent, tested above)")
    port = free_port()
    flower = Proc(["-A", "backends.celery_impl.cli", "flower", f"--port={port}",
                   "--address=127.0.0.1"],
                  {**base_env, "QUEUE_BACKEND": "celery", "FLOWER_UNAUTHENTICATED_API": "true"},
                  python=venv_python("celery"), module="celery")
    try:
        def workers() -> dict[str, Any] | None:
            if not flower.alive():
                raise RuntimeError(f"flower exited:\n{flower.output()}")
            try:
                with urllib.request.urlopen(
                        f"http://127.0.0.1:{port}/api/workers?refresh=1", timeout=10) as r:
                    found: dict[str, Any] = json.loads(r.read())
            except OSError:
                return None
            return found if any(w.get("registered") for w in found.values()) else None

        found = wait_until(workers, timeout=60, every=0.5, what="flower's workers")
        registered = {name for w in found.values() for name in w["registered"]}
        assert {"divide", "add", "noop", "sleep", "cpu", "flaky", "fail"} <= registered
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/tasks", timeout=10) as page:
            assert page.status == 200
    finally:
        flower.stop()

