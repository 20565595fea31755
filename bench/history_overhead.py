"""What durable task history costs in task throughput: the same burst of `noop`
tasks, submitted through core's interface, with history on and off.

On: the worker's record scripts add each finished id to the history stream and a
`queuebench history` process writes the rows; off: neither. Rounds alternate the
order, and each mode's median is reported with the ratio on/off.

    .venv/arq/bin/python -m bench.history_overhead --backend arq --tasks 5000 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import redis
from sqlalchemy import func, select

from core.backend import backend_class
from core.cli.procs import Proc, venv_python, wait_until
from core.db import TaskHistory, dispose_all, migrate, session
from core.settings import BACKENDS, Settings
from core.states import FINISHED
from core.store.keys import EVENTS_CHANNEL, HISTORY_STREAM, WORKERS_SEEN_KEY
from core.worker.heartbeat import host_and_pid

FINAL = {s.value for s in FINISHED}


async def burst(settings: Settings, tasks: int, chunk: int = 500) -> float:
    """Tasks per second from the first submit to the last task's final state."""
    backend = backend_class(settings.queue_backend)(settings)
    listener = backend.redis.pubsub()
    await listener.subscribe(EVENTS_CHANNEL)
    done: set[str] = set()
    try:
        for _ in range(50):  # warm the worker's connections and loops, untimed
            await backend.submit("noop")
        await asyncio.sleep(1)
        started = time.perf_counter()
        ids: set[str] = set()
        for first in range(0, tasks, chunk):
            submitted = await asyncio.gather(*(backend.submit("noop", [i]) for i in
                                               range(first, min(first + chunk, tasks))))
            ids.update(r.id for r in submitted)
        heard = time.perf_counter()
        while not ids <= done:
            message = await listener.get_message(ignore_subscribe_messages=True, timeout=1)
            if message is None:  # also what a subscribe confirmation reads as
                if time.perf_counter() - heard > 10:
                    raise TimeoutError(f"{len(ids - done)} tasks unfinished after 10 s of quiet")
                continue
            heard = time.perf_counter()
            event = _event(message)
            if event.get("state") in FINAL:
                done.add(event["id"])
        return tasks / (time.perf_counter() - started)
    finally:
        await listener.aclose()
        await backend.aclose()


def _event(message: dict[str, Any]) -> dict[str, Any]:
    data = message["data"]
    return dict(json.loads(data.decode() if isinstance(data, bytes) else data))


async def rows(database_url: str) -> int:
    try:
        async with session(database_url) as db:
            return int(await db.scalar(select(func.count()).select_from(TaskHistory)) or 0)
    finally:
        await dispose_all()


def _writer_reading(client: redis.Redis) -> bool:
    try:
        return any(group["consumers"] for group in client.xinfo_groups(HISTORY_STREAM))
    except redis.ResponseError:  # no stream yet
        return False


def one_run(args: argparse.Namespace, history: bool, database_url: str) -> dict[str, float]:
    redis.Redis.from_url(args.redis).flushdb()
    env = {"REDIS_URL": args.redis, "DATABASE_URL": database_url, "QUEUE_BACKEND": args.backend,
           "HISTORY_ENABLED": str(history).lower()}
    python = venv_python(args.backend)
    worker = Proc(["worker", "--backend", args.backend, "--concurrency",
                   str(args.concurrency)], env, python)
    procs = [worker]
    try:
        client = redis.Redis.from_url(args.redis)
        wait_until(lambda: any(host_and_pid(k.decode())[1] == worker.pid
                               for k in client.zrange(WORKERS_SEEN_KEY, 0, -1)),
                   timeout=60, what="worker heartbeat")
        if history:
            procs.append(Proc(["history"], env, python))
            # Timed once the writer reads (its start-up is not its steady cost).
            wait_until(lambda: _writer_reading(client), timeout=60, what="history writer")
        before = asyncio.run(rows(database_url))
        settings = Settings(redis_url=args.redis, database_url=database_url,
                            queue_backend=args.backend, history_enabled=history)
        rate = asyncio.run(burst(settings, args.tasks))
        result = {"rate": rate}
        if history:  # how long after the burst the last row lands
            start = time.perf_counter()
            wanted = before + args.tasks + 50
            wait_until(lambda: asyncio.run(rows(database_url)) >= wanted, timeout=120,
                       every=0.1, what="history rows")
            result["drain"] = time.perf_counter() - start
        return result
    finally:
        for proc in procs:
            proc.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="history_overhead", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", default="arq", choices=BACKENDS)
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/10",
                        help="a Redis database of its own: it is flushed every run")
    parser.add_argument("--database-url", help="default: a new SQLite file")
    args = parser.parse_args(argv)
    database_url = args.database_url or (
        f"sqlite+aiosqlite:///{Path(tempfile.mkdtemp()) / 'history.db'}")
    migrate.upgrade(database_url)

    results: dict[bool, list[dict[str, float]]] = {False: [], True: []}
    for n in range(args.rounds):
        for history in ((False, True) if n % 2 == 0 else (True, False)):
            run = one_run(args, history, database_url)
            results[history].append(run)
            print(f"round {n + 1} history {'on ' if history else 'off'}: "
                  f"{run['rate']:8.0f} tasks/s"
                  + (f", last row {run['drain']:.2f} s after the last task" if history else ""),
                  flush=True)
    off = statistics.median(r["rate"] for r in results[False])
    on = statistics.median(r["rate"] for r in results[True])
    print(f"\n{args.backend}, {args.tasks} noop tasks, concurrency {args.concurrency}, "
          f"{migrate.safe_url(database_url).split(':')[0]}, median of {args.rounds}:")
    print(f"  history off: {off:8.0f} tasks/s")
    print(f"  history on:  {on:8.0f} tasks/s   ratio on/off {on / off:.3f} "
          f"({(1 - on / off) * 100:+.1f}% slower)")


if __name__ == "__main__":
    main()
