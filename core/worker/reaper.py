"""The reaper: a task whose worker died runs again within seconds, on every backend.

It runs in every `queuebench worker` process (a thread with its own event loop and
its own `TaskBackend`), not in the API: redelivery needs a live worker anyway, the
API may not run at all (the core interface is used directly, as the benchmark
does), and N workers give N reapers for free. They share the work through one
short lock per dead worker.

Each pass:
- a worker process whose heartbeat is older than REDELIVERY_AFTER is dead: each
  task it owned (`qb:owned:<worker>`, filled by the start script) goes back to
  PENDING and is sent again through the adapter, under a new delivery id. When the
  library redelivers the old message later (its visibility timeout), the start
  script finds the task finished, or STARTED by a live owner, and refuses it: the
  task runs once more, and only once;
- tasks whose run was cancelled in a live process (`qb:orphans`) are sent again
  the same way;
- tasks nobody runs (PENDING, RETRY) whose message was due REDELIVERY_AFTER ago and
  waits nowhere in their broker (`TaskBackend.waiting`) are sent again the same way:
  together these keep every accepted task final, running under a live owner, or
  queued where its library will deliver it;
- PENDING or RETRY tasks past their `expires` end EXPIRED, even when no worker
  consumes their queue.

After an error talking to Redis a reaper waits three heartbeats before it judges
anyone dead: the others need that long to beat again once Redis is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from core.errors import ConfigError
from core.store.keys import ORPHANS_KEY, OWNED_KEY, REAPING_KEY
from core.store.records import as_str
from core.store.workers import forget, workers
from core.worker.heartbeat import process_heartbeat

if TYPE_CHECKING:
    from core.backend import TaskBackend
    from core.settings import Settings

log = logging.getLogger("queuebench.reaper")

OVERDUE = "overdue"  # the lock of the overdue pass (a worker id has colons)
# Overdue tasks one pass looks into at most, oldest first.
OVERDUE_BATCH = 500


class Reaper:
    def __init__(self, backend: TaskBackend, me: str) -> None:
        self.backend = backend
        self.redis = backend.redis
        self.store = backend.store
        self.me = me
        settings = backend.settings
        self.lease = settings.redelivery_after
        self.every = max(0.2, min(5.0, self.lease / 4))
        self.settle = settings.worker_heartbeat * 3
        self._trusted_from = time.monotonic() + self.settle

    async def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                await self.sweep()
            except RedisError as exc:
                log.warning("reaper: %s", exc)
                self._trusted_from = time.monotonic() + self.settle
            except Exception:  # one bad record must not stop the reaper
                log.exception("reaper pass failed")
            await asyncio.sleep(self.every)

    async def sweep(self) -> int:
        """One pass; how many tasks were sent again."""
        sent = await self._orphans()
        if time.monotonic() >= self._trusted_from:
            for dead in await workers(self.redis, dead_for=self.lease):
                sent += await self._dead(dead["id"])
            sent += await self._overdue()
        for task_id in await self.store.expiring():
            await self.store.expire(task_id)
        return sent

    async def _dead(self, wid: str) -> int:
        if not await self.redis.set(REAPING_KEY.format(wid), self.me, nx=True, ex=60):
            return 0  # another reaper has it
        owned = OWNED_KEY.format(wid)
        try:
            sent = 0
            for task_id in await self.redis.smembers(owned):
                sent += await self._again(as_str(task_id), wid, owned)
            if not await self.redis.scard(owned):
                await forget(self.redis, wid)
            return sent
        finally:
            await self.redis.delete(REAPING_KEY.format(wid))

    async def _overdue(self) -> int:
        """Tasks nobody runs, due REDELIVERY_AFTER ago, whose message waits nowhere in
        their broker, are sent again: the message was lost (a broker restarted without
        it, kombu's take-then-record window, an API killed between a task's record and
        its message) or taken by a consumer that died before it started the task. Those
        still waiting are looked at again a lease later."""
        if not await self.redis.set(REAPING_KEY.format(OVERDUE), self.me, nx=True, ex=60):
            return 0  # another reaper has it
        try:
            before = time.time() - self.lease
            records = await self.store.overdue(before, OVERDUE_BATCH)
            if not records:
                return 0
            waiting = await self.backend.waiting(records)
            await self.store.still_due(sorted(waiting), time.time())
            sent = 0
            for record in records:
                if record.id in waiting:
                    continue
                again = await self.store.resend(record, before)
                if again is None:
                    continue
                try:
                    await self.backend.redeliver(again)
                except Exception as exc:  # due again: looked at once more a lease later
                    log.warning("reaper: task %s could not be sent again: %s", record.id, exc)
                    continue
                log.warning("task %s sent again (delivery %d): %s, its message nowhere in "
                            "the broker", record.id, again.deliveries, record.state.value)
                sent += 1
            return sent
        finally:
            await self.redis.delete(REAPING_KEY.format(OVERDUE))

    async def _orphans(self) -> int:
        return sum([await self._again(as_str(task_id), "", ORPHANS_KEY)
                    for task_id in await self.redis.smembers(ORPHANS_KEY)])

    async def _again(self, task_id: str, owner: str, owned_in: str) -> int:
        record = await self.store.reclaim(task_id, owner, owned_in)
        if record is None:
            return 0
        try:
            await self.backend.redeliver(record)
        except Exception as exc:  # it stays owned: the next pass tries again
            log.warning("reaper: task %s could not be sent again: %s", task_id, exc)
            return 0
        await self.redis.srem(owned_in, task_id)
        log.warning("task %s sent again (delivery %d): worker %s %s", task_id,
                    record.deliveries, record.worker, "is dead" if owner else "cancelled it")
        return 1


@contextlib.contextmanager
def worker_services(backend: type[TaskBackend], settings: Settings, concurrency: int,
                    queues: list[str], **info: Any) -> Iterator[None]:
    """What `queuebench worker` runs beside the library's worker (`backend.run_worker`):
    this process's heartbeat (role `worker`) and a reaper with a `backend` of its own."""
    heartbeat = process_heartbeat(settings.redis_url, settings.queue_backend,
                                  settings.worker_heartbeat, role="worker",
                                  concurrency=concurrency, queues=queues, **info)
    stop = threading.Event()

    def reap() -> None:
        async def main() -> None:
            made = backend(settings)
            try:
                await Reaper(made, heartbeat.id).run(stop)
            finally:
                await made.aclose()

        asyncio.run(main())

    thread = threading.Thread(target=reap, name="qb-reaper", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        heartbeat.stop()


def split_concurrency(concurrency: int, processes: int | None, cpus: int) -> tuple[int, int]:
    """(processes, tasks in flight per process) whose product is `concurrency`, for a
    library whose worker runs processes of threads or async slots (Dramatiq, taskiq):
    `processes` when given (it must divide it), else the largest divisor of it not
    above `cpus`."""
    if concurrency < 1:
        raise ConfigError("--concurrency must be at least 1")
    if processes is None:
        processes = max(p for p in range(1, min(concurrency, cpus) + 1) if concurrency % p == 0)
    elif concurrency % processes:
        raise ConfigError(f"--processes {processes} does not divide --concurrency "
                          f"{concurrency} (processes x tasks per process = concurrency)")
    return processes, concurrency // processes
