"""The worker-side wrapper every adapter applies around a shared task.

It moves the task's record through STARTED to its final state, skips a task that
was revoked, has expired, or already finished (a redelivery), enforces an async
task's time limit, decides retries by the task's policy, and gives the task its
context. Async tasks run on an event loop: arq's own, or, for the thread-based
workers (Celery, Dramatiq), one loop per worker thread, made once and reused.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import itertools
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from redis import Redis as SyncRedis
from redis.asyncio import Redis
from redis.exceptions import RedisError

from core.errors import RetryTask, TimeLimitExceeded
from core.settings import Settings
from core.states import TaskState
from core.store.records import (
    BUSY,
    CONNECT_TIMEOUT,
    LOST,
    SOCKET_TIMEOUT,
    RecordStore,
    connect,
    error_of,
)
from core.tasks import get_task
from core.tasks.context import TaskContext, reset_current, set_current
from core.tasks.policy import Policy
from core.tasks.registry import TaskSpec
from core.worker.audit import OwnedAudit
from core.worker.heartbeat import process_heartbeat
from core.worker.interrupt import OverTime, Revoked, Run, Stopper, process_stopper
from core.worker.lane import DRAIN_AFTER, FINAL, Lane, Sent, new_lane, thread_drain

log = logging.getLogger("queuebench.runner")
T = TypeVar("T")

LimitErrors = tuple[type[BaseException], ...]
# Each delivery's token in this process (the start script's `run`).
_RUNS = itertools.count(1)
# Seconds between tries of a final write that Redis refused, before the heartbeat
# thread takes it over (core/worker/heartbeat.py).
FINISH_RETRIES = (0.1, 0.5, 1.0, 2.0)
# Longest pause between tries of a start or a RETRY that Redis refuses.
REDIS_RETRY_MAX = 2.0


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
                                 kept=settings.records_kept, history=settings.history_enabled,
                                 lease=settings.redelivery_after)
        self.offload_sync = offload_sync
        # A library's own time-limit exception (raised into a sync task) counts as ours.
        self.limit_errors: LimitErrors = (TimeLimitExceeded, *time_limit_errors)
        # This process's heartbeat is the lease of every task it runs.
        self.heartbeat = process_heartbeat(settings.redis_url, settings.queue_backend,
                                           settings.worker_heartbeat)
        self.worker = self.heartbeat.id
        # A store on the heartbeat's client, which any thread may use: for the writes
        # that the heartbeat, or another thread than the runner's, does.
        self.later = RecordStore(self.heartbeat.client, ttl=self.store.ttl,
                                 kept=self.store.kept, history=settings.history_enabled,
                                 lease=self.store.lease)
        self._lanes: list[Lane] = []
        self._draining: asyncio.Future[None] | None = None

    async def run(self, library_id: str, name: str, arguments: dict[str, Any],
                  meta: dict[str, Any] | None = None) -> Any:
        """Run one delivery of a task (`meta`: what the adapter's message carries
        beside the arguments: the task id and its policy). A failure is recorded and
        raised to the library: as RetryTask when the policy allows another run, as
        TimeLimitExceeded (never retried) for a run over its limit, else as is."""
        meta = meta or {}
        task_id = meta.get("task_id") or library_id
        policy = Policy.from_wire(meta)
        found, attempt = await self._start(task_id)
        if found == LOST:
            log.warning("task %s not run: its record is gone from Redis", task_id)
            return None
        if found == BUSY:
            log.warning("task %s not run: a live worker runs it already", task_id)
            return None
        if found is not None and TaskState(found).finished:
            log.info("task %s not run: it is %s", task_id, found)
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
        except BaseException:  # cancelled (a shutdown, arq's job timeout): run it again
            with contextlib.suppress(RedisError):
                await self.store.orphan(task_id, self.worker)
            raise
        finally:
            reset_current(token)
        await self._finish(task_id, TaskState.SUCCESS, result=result, retries=attempt)
        return result

    # -- the record's transitions: the start, the outcome, and what a lane could not confirm
    async def _start(self, task_id: str) -> tuple[str | None, int]:
        """Mark the record STARTED: the start script on a lane (core/worker/lane.py),
        whose round trip also reads the replies of the final writes sent before it
        (what those could not confirm: `_redo`). When the lane gets no answer, the
        slow way: tried until Redis answers. The task has not run, and the message
        this worker holds is all there is of it while Redis is away: raising would
        have the library count the delivery as done (failed) and drop it. So the slow
        start waits for Redis; with nothing on disk, Redis comes back without the
        record (LOST: not run)."""
        run = str(next(_RUNS))
        lane = self._take_lane()
        try:
            found, undone = await lane.start(task_id, self.worker, run)
        finally:
            self._give_lane(lane)
        if undone:
            await self._redo(undone)
        if found is None:
            found = await _until_answered(task_id, "start it",
                                          lambda: self.store.start(task_id, self.worker, run))
        return found

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
            await self._finish(task_id, TaskState.FAILURE, error=error, retries=attempt)
            return exc
        if policy.will_retry(attempt):
            delay = policy.backoff(attempt)
            await self._finish(task_id, TaskState.RETRY, error=error_of(exc), retries=attempt,
                               due=time.time() + delay)
            return RetryTask(delay, exc)
        await self._finish(task_id, TaskState.FAILURE, error=error_of(exc), retries=attempt)
        return exc

    async def _finish(self, task_id: str, state: TaskState, **outcome: Any) -> None:
        """Write the run's outcome, one way by its kind.

        A final state (SUCCESS, FAILURE) is sent on a lane and not waited for: its
        reply is read with the next start's, or by a drain of the idle lane; what the
        lane could not confirm goes to `_redo`.

        A RETRY is tried until Redis answers, holding the run: the library schedules
        the next run only when this one returns, and that run must find RETRY. Written
        later (by the heartbeat), the next run would find the task STARTED under this
        live worker, be refused as BUSY, and nothing would be left to run it."""
        outcome["worker"] = self.worker
        if state not in FINAL:
            await _until_answered(task_id, f"write {state.value}",
                                  lambda: self.store.finish(task_id, state, **outcome))
            return
        lane = self._take_lane()
        try:
            undone = await lane.finish(task_id, state, outcome)
        finally:
            self._give_lane(lane)
        if undone:
            await self._redo(undone)

    async def _redo(self, writes: Sequence[Sent], store: RecordStore | None = None) -> None:
        """The final writes a lane could not confirm (Redis refused them, or its
        connection failed), written again through the store (`store`: one for
        another thread than the runner's), waiting for Redis's reply. Each is tried
        again a few times; what Redis still refuses the heartbeat thread writes once
        Redis takes it. Meanwhile this process keeps beating, so it keeps the task:
        never left STARTED, never run again."""
        store = store or self.store
        for write in writes:
            for delay in (*FINISH_RETRIES, None):
                try:
                    await store.finish(write.task_id, write.state, **write.outcome)
                    break
                except RedisError as exc:
                    if delay is None:
                        log.warning("task %s: Redis refuses its %s (%s); the heartbeat "
                                    "writes it later", write.task_id, write.state.value, exc)
                        self.heartbeat.defer(functools.partial(_write_later, self.later, write))
                        break
                    log.warning("task %s: writing %s failed (%s); trying again",
                                write.task_id, write.state.value, exc)
                    await asyncio.sleep(delay)

    # -- lanes (core/worker/lane.py): an asyncio runner's jobs share a few, taken per call --------
    def _take_lane(self) -> Lane:
        return self._lanes.pop() if self._lanes else new_lane(self.store)

    def _give_lane(self, lane: Lane) -> None:
        self._lanes.append(lane)
        if lane.sent and self._draining is None:
            self._draining = asyncio.ensure_future(self._drain_idle())

    async def _drain_idle(self) -> None:
        """Read the replies left on idle lanes (no start came to read them)."""
        try:
            while any(lane.sent for lane in self._lanes):
                await asyncio.sleep(DRAIN_AFTER)
                for lane in [lane for lane in self._lanes if lane.idle_for(DRAIN_AFTER)]:
                    self._lanes.remove(lane)
                    try:
                        undone = await lane.drain()
                    finally:
                        self._lanes.append(lane)
                    if undone:
                        await self._redo(undone)
        finally:
            self._draining = None


def _write_later(store: RecordStore, write: Sent) -> None:
    """`write`, from the heartbeat thread (`store` is on its blocking client)."""
    asyncio.run(store.finish(write.task_id, write.state, **write.outcome))


async def _until_answered(task_id: str, what: str, call: Callable[[], Awaitable[T]]) -> T:
    """`call` tried until Redis answers. For a write the task's run cannot go on
    without: the message this worker holds is all there is of the task while Redis is
    away, and raising would have the library count the delivery as done and drop it."""
    delay = 0.1
    while True:
        try:
            return await call()
        except RedisError as exc:
            log.warning("task %s: cannot %s (%s); trying again in %.1fs", task_id, what,
                        exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, REDIS_RETRY_MAX)


# The run (core/worker/interrupt.py) of the task this asyncio task runs, if it can be stopped.
_current_run: contextvars.ContextVar[Run | None] = contextvars.ContextVar("qb_run",
                                                                          default=None)


class StoppableRunner(Runner):
    """A Runner whose task can be stopped while it runs (core/worker/interrupt.py): by DELETE,
    through the process's cancel listener, and a sync task by its time limit, which
    the libraries enforce only in some pools. An async task is cancelled on its loop;
    a sync task is stopped in its thread (`_call_sync`)."""

    def __init__(self, *args: Any, stopper: Stopper, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stopper = stopper
        # The process's tasks that Redis says it runs and it does not (core/worker/audit.py).
        self.heartbeat.every_beat("owned", OwnedAudit(
            self.heartbeat.client, self.worker, stopper, self.heartbeat.interval).check)

    async def run(self, library_id: str, name: str, arguments: dict[str, Any],
                  meta: dict[str, Any] | None = None) -> Any:
        task_id = (meta or {}).get("task_id") or library_id
        with self.stopper.watch(task_id, asyncio.get_running_loop()) as run:
            token = _current_run.set(run)
            try:
                return await super().run(library_id, name, arguments, meta)
            finally:
                _current_run.reset(token)

    async def _call(self, spec: TaskSpec, arguments: dict[str, Any], policy: Policy) -> Any:
        run = _current_run.get()
        if run is None:
            return await super()._call(spec, arguments, policy)
        try:
            if spec.is_async:
                with self.stopper.awaiting(run):
                    return await super()._call(spec, arguments, policy)
            return await self._call_sync(run, spec, arguments, policy)
        except asyncio.CancelledError:
            if not (run.cancelled and run.stopped is Revoked):
                raise  # the library's own cancellation (shutdown, its timeout)
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
        except Revoked:
            pass
        except OverTime:
            raise TimeLimitExceeded(f"{spec.name} ran over its {policy.time_limit}s") from None
        # Cancelled by DELETE: the record is REVOKED and stays so, whatever the runner
        # writes next; no result is kept.
        log.info("task %s stopped: it was revoked while it ran", run.task_id)
        return None

    async def _call_sync(self, run: Run, spec: TaskSpec, arguments: dict[str, Any],
                         policy: Policy) -> Any:
        raise NotImplementedError


class ThreadRunner(StoppableRunner):
    """On a worker thread's own loop (ThreadLoops), which runs one task at a time: a
    sync task runs right here, in the worker's thread. Its one lane is read by the
    process's drain thread when idle."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lane = new_lane(self.store)
        # Read by the process's drain thread when idle; what it could not confirm is
        # written again from there, through a store that thread may use.
        thread_drain().add(self._lane,
                           lambda undone: asyncio.run(self._redo(undone, self.later)))

    def _take_lane(self) -> Lane:
        self._lane.lock.acquire()
        return self._lane

    def _give_lane(self, lane: Lane) -> None:
        lane.lock.release()

    async def _call_sync(self, run: Run, spec: TaskSpec, arguments: dict[str, Any],
                         policy: Policy) -> Any:
        return self.stopper.call_sync(run, spec.fn, arguments, policy.time_limit)


class OffloadRunner(StoppableRunner):
    """On arq's loop, where a sync task runs in a thread: when its run is cancelled
    (DELETE, arq's own cancellation, the time limit's timeout) its thread is stopped
    too, rather than left to run on unseen."""

    def __init__(self, settings: Settings, redis: Redis, **kwargs: Any) -> None:
        super().__init__(settings, redis, offload_sync=True,
                         stopper=process_stopper(settings.redis_url), **kwargs)

    async def _call_sync(self, run: Run, spec: TaskSpec, arguments: dict[str, Any],
                         policy: Policy) -> Any:
        try:
            async with asyncio.timeout(policy.time_limit):
                return await self.stopper.offload(run, spec.fn, arguments)
        except TimeoutError:
            raise TimeLimitExceeded(f"{spec.name} ran over its {policy.time_limit}s") from None


class ThreadLoops:
    """Runs tasks from synchronous worker threads: one event loop, Redis client and
    Runner per thread, made on first use and kept, so a task costs one
    run_until_complete and no loop set-up. A running task can be stopped (see
    ThreadRunner), and a task stopped by DELETE returns None to the library."""

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
            runner = ThreadRunner(self.settings, connect(self.settings.redis_url, 8),
                                  offload_sync=False, time_limit_errors=self.time_limit_errors,
                                  records=SyncRedis.from_url(self.settings.redis_url,
                                                             socket_connect_timeout=CONNECT_TIMEOUT,
                                                             socket_timeout=SOCKET_TIMEOUT,
                                                             single_connection_client=True),
                                  stopper=process_stopper(self.settings.redis_url))
            made = self._local.made = (loop, runner)
        return made

    def run(self, library_id: str, name: str, arguments: dict[str, Any],
            meta: dict[str, Any] | None = None) -> Any:
        loop, runner = self._runner()
        return loop.run_until_complete(runner.run(library_id, name, arguments, meta))
