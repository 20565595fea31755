"""What a task's two record transitions cost a worker: the start and finish scripts
awaited one after the other through redis-py's command path (as before core/worker/lane.py),
against a lane (the start awaited with the previous finish's reply, the finish sent
without waiting). N tasks one after another, no library, no task body; the blocking
client (Celery's and Dramatiq's worker threads) and the asyncio one (arq). Run it in
any backend's env:

    .venv/arq/bin/python -m bench.lane_cost -n 5000 --redis redis://127.0.0.1:6379/9

It prints, per client and way, the wall time and this process's CPU per task.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from redis import Redis as SyncRedis

from core.states import TaskState
from core.store.records import RecordStore, TaskRecord, connect, new_task_id
from core.worker.lane import new_lane

WORKER = "bench:1"


async def _records(store: RecordStore, n: int) -> list[str]:
    ids = [new_task_id() for _ in range(n)]
    for chunk in range(0, n, 500):
        await asyncio.gather(*(store.create(TaskRecord(id=i, name="noop", backend="bench",
                                                       submitted_at=time.time()))
                               for i in ids[chunk:chunk + 500]))
    return ids


async def _awaited(store: RecordStore, ids: list[str]) -> None:
    for i, task_id in enumerate(ids):
        await store.start(task_id, WORKER, str(i))
        await store.finish(task_id, TaskState.SUCCESS, result=None, worker=WORKER)


async def _lane(store: RecordStore, ids: list[str]) -> None:
    lane = new_lane(store)
    for i, task_id in enumerate(ids):
        await lane.start(task_id, WORKER, str(i))
        await lane.finish(task_id, TaskState.SUCCESS, {"result": None, "worker": WORKER})
    await lane.drain()
    await lane.close()


async def main(url: str, n: int) -> None:
    setup = RecordStore(connect(url), history=False)
    clients: dict[str, Any] = {
        "blocking": SyncRedis.from_url(url, single_connection_client=True),
        "asyncio": connect(url),
    }
    for client_name, client in clients.items():
        store = RecordStore(client, history=False)
        for way, run in (("awaited", _awaited), ("lane", _lane)):
            ids = await _records(setup, n)
            wall, cpu = time.perf_counter(), time.process_time()
            await run(store, ids)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            print(f"{client_name:8} {way:7}: {wall / n * 1e6:6.0f} µs wall, "
                  f"{cpu / n * 1e6:6.0f} µs CPU a task (start + finish)")
    await setup.redis.aclose()


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=5000, help="tasks per way")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/9")
    args = parser.parse_args()
    asyncio.run(main(args.redis, args.n))


if __name__ == "__main__":
    cli()
