"""The worker-side wrapper every adapter applies around a shared task.

It moves the task's record through STARTED to its final state, skips a task that
was revoked, has expired, or already finished (a redelivery), enforces an async
task's time limit, decides retries by the task's policy, and gives the task its
context. Async tasks run on an event loop: arq's own, or, for the thread-based
workers (Celery, Dramatiq), one loop per worker thread, made once and reused.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
from typing import Any

from redis import Redis as SyncRedis
from redis.asyncio import Redis

from core.context import TaskContext, reset_current, set_current
from core.errors import RetryTask, TimeLimitExceeded
from core.policy import Policy
from core.records import RecordStore, connect, error_of
from core.registry import TaskSpec, get_task
from core.settings import Settings
from core.states import TaskState

log = logging.getLogger("queuebench.runner")

LimitErrors = tuple[type[BaseException], ...]


class Runner:
    def __init__(self, settings: Settings, redis: Redis, *, offload_sync: bool,
                 time_limit_errors: LimitErrors = (),
                 records: SyncRedis | None = None) -> None:
        """`redis` is the tasks' client (TaskContext); the record transitions go
        through `records` when given: a blocking client, for a loop that runs one
        task at a time, costs half the CPU of an asyncio one per call."""
        self.settings = settings
        self.redis = redis
        self.store = RecordStore(records or redis, ttl=settings.record_ttl,
                                 kept=settings.records_kept, history=settings.history_enabled)
        self.offload_sync = offload_sync
        # A library's own time-limit exception (raised into a sync task) counts as ours.
        self.limit_errors: LimitErrors = (TimeLimitExceeded, *time_limit_errors)
        self.worker = f"{socket.gethostname()}:{os.getpid()}"

    async def run(self, task_id: str, name: str, arguments: dict[str, Any],
                  policy: Policy | None = None) -> Any:
        """Run one delivery of a task. A failure is recorded and raised to the
        library: as RetryTask when the policy allows another run, as
        TimeLimitExceeded (never retried) for a run over its limit, else as is."""
        policy = policy or Policy()
        found, attempt = await self.store.start(task_id, self.worker)
        if found is not None and found.finished:
            log.info("task %s not run: it is %s", task_id, found.value)
            return None
        spec = get_task(name)
        token = set_current(TaskContext(task_id, name, attempt, self.settings, self.redis))
        try:
            result = await self._call(spec, arguments, policy)
        except (Exception, *self.limit_errors) as exc:
            outcome = await self._failed(task_id, exc, policy, attempt)
            if outcome is exc:
                raise
            raise outcome from exc
        finally:
            reset_current(token)
        await self.store.finish(task_id, TaskState.SUCCESS, result=result, retries=attempt)
        return result

    async def _call(self, spec: TaskSpec, arguments: dict[str, Any], policy: Policy) -> Any:
        if policy.time_limit is None or not (spec.is_async or self.offload_sync):
            return await spec.call(arguments, offload_sync=self.offload_sync)
        try:
            async with asyncio.timeout(policy.time_limit):
                return await spec.call(arguments, offload_sync=self.offload_sync)
        except TimeoutError:
            raise TimeLimitExceeded(f"{spec.name} ran over its {policy.time_limit}s") from None

    async def _failed(self, task_id: str, exc: BaseException, policy: Policy,
                      attempt: int) -> BaseException:
        """Record a failed run; the exception to raise to the library."""
        if isinstance(exc, self.limit_errors):
            error = {"type": "TimeLimitExceeded", "message": str(exc) or "time limit exceeded"}
            await self.store.finish(task_id, TaskState.FAILURE, error=error, retries=attempt)
            return exc
        if policy.will_retry(attempt):
            await self.store.finish(task_id, TaskState.RETRY, error=error_of(exc),
                                    retries=attempt)
            return RetryTask(policy.backoff(attempt), exc)
        await self.store.finish(task_id, TaskState.FAILURE, error=error_of(exc), retries=attempt)
        return exc


class ThreadLoops:
    """Runs tasks from synchronous worker threads: one event loop, Redis client and
    Runner per thread, made on first use and kept, so a task costs one
    run_until_complete and no loop set-up."""

    def __init__(self, settings: Settings, time_limit_errors: LimitErrors = ()) -> None:
        self.settings = settings
        self.time_limit_errors = time_limit_errors
        self._local = threading.local()

    def _runner(self) -> tuple[asyncio.AbstractEventLoop, Runner]:
        made = getattr(self._local, "made", None)
        if made is None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            # This loop runs one task at a time: blocking record calls cost it nothing.
            runner = Runner(self.settings, connect(self.settings.redis_url, 8),
                            offload_sync=False, time_limit_errors=self.time_limit_errors,
                            records=SyncRedis.from_url(self.settings.redis_url))
            made = self._local.made = (loop, runner)
        return made

    def run(self, task_id: str, name: str, arguments: dict[str, Any],
            policy: Policy | None = None) -> Any:
        loop, runner = self._runner()
        return loop.run_until_complete(runner.run(task_id, name, arguments, policy))
