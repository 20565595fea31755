"""The worker-side wrapper every adapter applies around a shared task.

It moves the task's record through STARTED to its final state, skips a task that
was revoked, has expired, or already finished (a redelivery), and gives the task
its context. Async tasks run on an event loop: arq's own, or, for the thread-based
workers (Celery, Dramatiq), one loop per worker thread, made once and reused.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
from typing import Any

from redis.asyncio import Redis

from core.context import TaskContext, reset_current, set_current
from core.records import RecordStore, error_of
from core.registry import get_task
from core.settings import Settings
from core.states import TaskState

log = logging.getLogger("queuebench.runner")


class Runner:
    def __init__(self, settings: Settings, redis: Redis, *, offload_sync: bool) -> None:
        self.settings = settings
        self.redis = redis
        self.store = RecordStore(redis, ttl=settings.record_ttl, kept=settings.records_kept)
        self.offload_sync = offload_sync
        self.worker = f"{socket.gethostname()}:{os.getpid()}"

    async def run(self, task_id: str, name: str, arguments: dict[str, Any], *,
                  attempt: int = 0, will_retry: bool = False) -> Any:
        """Run one delivery of a task. Exceptions are recorded (RETRY when the
        library will run it again, else FAILURE) and re-raised to the library."""
        found = await self.store.start(task_id, attempt, self.worker)
        if found is not None and found.finished:
            log.info("task %s not run: it is %s", task_id, found.value)
            return None
        spec = get_task(name)
        token = set_current(TaskContext(task_id, name, attempt, self.settings, self.redis))
        try:
            result = await spec.call(arguments, offload_sync=self.offload_sync)
        except Exception as exc:
            state = TaskState.RETRY if will_retry else TaskState.FAILURE
            await self.store.finish(task_id, state, error=error_of(exc), retries=attempt)
            raise
        finally:
            reset_current(token)
        await self.store.finish(task_id, TaskState.SUCCESS, result=result, retries=attempt)
        return result


class ThreadLoops:
    """Runs tasks from synchronous worker threads: one event loop, Redis client and
    Runner per thread, made on first use and kept, so a task costs one
    run_until_complete and no loop set-up."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._local = threading.local()

    def _runner(self) -> tuple[asyncio.AbstractEventLoop, Runner]:
        made = getattr(self._local, "made", None)
        if made is None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            runner = Runner(self.settings, Redis.from_url(self.settings.redis_url),
                            offload_sync=False)
            made = self._local.made = (loop, runner)
        return made

    def run(self, task_id: str, name: str, arguments: dict[str, Any], *,
            attempt: int = 0, will_retry: bool = False) -> Any:
        loop, runner = self._runner()
        return loop.run_until_complete(
            runner.run(task_id, name, arguments, attempt=attempt, will_retry=will_retry)
        )
