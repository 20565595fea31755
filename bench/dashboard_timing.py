"""How fast the dashboard's pages answer with 100,000 task records kept.

    .venv/arq/bin/python -m bench.dashboard_timing --redis redis://127.0.0.1:6379/15

FLUSHES the Redis database given, fills it with `--records` records (through the
record scripts, in pipelines: states, names and submit times mixed over the last
day), starts `queuebench serve` and one idle `queuebench worker` on it, and times
each page over HTTP: the median and p95 of `--repeat` requests after a warm-up.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import redis

from core.cli.procs import Proc, Server, wait_until
from core.states import TaskState
from core.store.keys import WORKERS_KEY
from core.store.records import RecordStore, TaskRecord, connect

NAMES = ("add", "divide", "noop", "sleep", "cpu", "fail")
STATES = (TaskState.SUCCESS,) * 6 + (TaskState.FAILURE, TaskState.PENDING, TaskState.REVOKED)


async def fill(url: str, n: int, batch: int = 2_000) -> str:
    """n records over the last day, newest last; the id of one of them."""
    client = connect(url)
    store = RecordStore(client, history=False, kept=n)
    now = time.time()
    for start in range(0, n, batch):
        records = []
        for i in range(start, min(n, start + batch)):
            submitted = now - 86_000 + 86_000 * i / n
            state = STATES[i % len(STATES)]
            records.append(TaskRecord(
                id=f"bench-{i:07d}", name=NAMES[i % len(NAMES)], backend="arq",
                state=state, args=[i, 2], submitted_at=submitted,
                started_at=None if state is TaskState.PENDING else submitted + 0.01,
                finished_at=None if state is TaskState.PENDING else submitted + 0.02,
                result=i / 2 if state is TaskState.SUCCESS else None, worker="bench:1"))
        await store.create_many([(r, None, None, None) for r in records])
    await client.aclose()
    return f"bench-{n // 2:07d}"


def pages(task_id: str) -> dict[str, str]:
    return {
        "overview": "/dashboard",
        "tasks, newest": "/dashboard/tasks",
        "tasks, page at 50,000": "/dashboard/tasks?cursor=50000",
        "tasks, state=FAILURE": "/dashboard/tasks?state=FAILURE",
        "tasks, name=cpu, 1h": "/dashboard/tasks?name=cpu&since=1h",
        "tasks, state=EXPIRED (none: scans its limit)": "/dashboard/tasks?state=EXPIRED",
        "task page": f"/dashboard/tasks/{task_id}",
        "workers": "/dashboard/workers",
        "queues": "/dashboard/queues",
        "metrics": "/metrics",
    }


def time_pages(base: str, paths: dict[str, str], repeat: int) -> list[tuple[str, float, float]]:
    out = []
    with httpx.Client(base_url=base, timeout=30) as http:
        for label, path in paths.items():
            for _ in range(3):
                http.get(path).raise_for_status()
            took = []
            for _ in range(repeat):
                start = time.perf_counter()
                http.get(path).raise_for_status()
                took.append((time.perf_counter() - start) * 1000)
            took.sort()
            out.append((label, statistics.median(took), took[max(0, round(0.95 * len(took)) - 1)]))
    return out


@contextmanager
def stack(redis_url: str, backend: str, concurrency: int, **env: str) -> Iterator[str]:
    """A worker and the API (its URL) on `redis_url`, with a scratch SQLite history."""
    with processes(redis_url, backend, concurrency, **env) as (server, _):
        yield server.url


@contextmanager
def processes(redis_url: str, backend: str, concurrency: int | None,
              **env: str) -> Iterator[tuple[Server, Proc]]:
    """`stack`'s API server and worker processes (the soak samples their memory);
    `concurrency` None: the library's default."""
    from core.db.migrate import upgrade

    db = Path(tempfile.mkdtemp(prefix="qb-dash-")) / "history.db"
    env = {"REDIS_URL": redis_url, "DATABASE_URL": f"sqlite+aiosqlite:///{db}",
           "WORKER_HEARTBEAT": "1", **env}
    upgrade(env["DATABASE_URL"])
    slots = [] if concurrency is None else ["--concurrency", str(concurrency)]
    worker = Proc(["worker", "--backend", backend, *slots], env)
    server = None
    try:
        wait_until(lambda: redis.Redis.from_url(redis_url).hlen(WORKERS_KEY), timeout=60,
                   what="worker heartbeat")
        server = Server(backend, env)
        yield server, worker
    finally:
        if server is not None:
            server.stop()
        worker.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--redis", required=True, help="a Redis database URL it may FLUSH")
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--backend", default="arq")
    args = parser.parse_args(argv)

    redis.Redis.from_url(args.redis).flushdb()
    start = time.perf_counter()
    task_id = asyncio.run(fill(args.redis, args.records))
    print(f"filled {args.records:,} records in {time.perf_counter() - start:.1f} s")

    with stack(args.redis, args.backend, 2, RECORDS_KEPT=str(args.records),
               HISTORY_ENABLED="false") as url:
        rows = time_pages(url, pages(task_id), args.repeat)
    print(f"\n{args.records:,} records, {args.repeat} requests each (ms)\n")
    print("| page | median | p95 |\n| --- | ---: | ---: |")
    for label, median, p95 in rows:
        print(f"| {label} | {median:.1f} | {p95:.1f} |")


if __name__ == "__main__":
    main()
