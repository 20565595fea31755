"""arq: natively async. The shared tasks become arq functions of the same names."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

try:
    from arq import Retry, create_pool
    from arq.connections import ArqRedis, RedisSettings
    from arq.constants import in_progress_key_prefix, job_key_prefix, retry_key_prefix
    from arq.worker import Function, Worker, func
except ModuleNotFoundError as exc:  # the loader turns this into one clear line
    raise ModuleNotFoundError(exc.msg, name="arq") from None

from redis.exceptions import RedisError

from backends.arq_impl.wire import job_commands
from core.backend import DEFAULT_QUEUE, TaskBackend
from core.errors import ConfigError, RetryTask
from core.settings import Settings
from core.store.records import Command, TaskRecord, connect
from core.tasks import all_tasks
from core.tasks.features import Support
from core.tasks.options import TaskOptions
from core.tasks.registry import TaskSpec
from core.worker.reaper import worker_services
from core.worker.runner import OffloadRunner, Runner

if TYPE_CHECKING:
    from core.schedule.entries import Schedule

log = logging.getLogger("queuebench.arq")

QUEUE_PREFIX = "arq:queue:"
# arq counts every delivery as a try, and refuses a job past it without running it
# (its record would stay RETRY): the task's policy decides retries, and the reaper
# redelivers under a new job id, so arq's count must never be what stops a task.
MAX_TRIES = 2**31
# arq's timeout is per function and cancels the job: core enforces each task's own
# limit, so arq's is only a backstop far beyond any (a cancelled run is sent again).
# It also sets arq's in-progress mark, after which arq itself would redeliver.
FUNCTION_TIMEOUT = 7 * 86_400


class Backend(TaskBackend):
    name = "arq"
    features = {
        "retries": Support.NATIVE,
        # arq's timeout is per function, not per job: core enforces each task's own
        # limit on the event loop, and stops a sync task's thread (core/worker/interrupt.py).
        "time_limit": Support.CORE,
        "delay": Support.NATIVE,
        "cancel_pending": Support.NATIVE,
        # core's cancel listener stops the run (core/worker/interrupt.py), as on the other
        # backends: arq's abort would make every worker poll its abort set.
        "cancel_running": Support.CORE,
        "queues": Support.NATIVE,
        "graceful_shutdown": Support.NATIVE,
        # Celery beat / arq cron from core's schedule (`queuebench scheduler --native`);
        # core's scheduler runs on it too.
        "periodic": Support.NATIVE,
    }

    def __init__(self, settings: Settings, redis: Any = None) -> None:
        super().__init__(settings, redis)
        self._pool: ArqRedis | None = None
        self._pool_lock = asyncio.Lock()

    async def pool(self) -> ArqRedis:
        async with self._pool_lock:
            if self._pool is None:
                self._pool = await create_pool(RedisSettings.from_dsn(self.settings.broker))
            return self._pool

    async def enqueue(self, record: TaskRecord, arguments: dict[str, Any],
                      options: TaskOptions) -> None:
        pool = await self.pool()
        await pool.enqueue_job(
            record.name, arguments, self.meta(record, options), _job_id=record.delivery_id,
            _queue_name=QUEUE_PREFIX + (options.queue or DEFAULT_QUEUE),
            _defer_by=options.countdown, _defer_until=options.eta,
        )

    def commands(self, record: TaskRecord, arguments: dict[str, Any],
                 options: TaskOptions) -> list[Command]:
        return job_commands(record.name, (arguments, self.meta(record, options)),
                            record.delivery_id,
                            queue_name=QUEUE_PREFIX + (options.queue or DEFAULT_QUEUE),
                            defer_by=options.countdown, defer_until=options.eta)

    def depth_commands(self, queue: str) -> list[Command]:
        # arq's queue is one sorted set of job ids by run time: deferred jobs too, and
        # running ones (arq removes a job when it ends).
        return [("ZCARD", QUEUE_PREFIX + queue)]

    async def waiting(self, records: Sequence[TaskRecord]) -> set[str]:
        # arq keeps a job in its queue's sorted set until it ends; a job a worker took
        # has its in-progress key beside it.
        pool = await self.pool()
        async with pool.pipeline(transaction=False) as pipe:
            for record in records:
                pipe.zscore(QUEUE_PREFIX + (record.queue or DEFAULT_QUEUE), record.delivery_id)
                pipe.exists(in_progress_key_prefix + record.delivery_id)
            found = await pipe.execute()
        return {record.id for record, queued, taken in zip(records, found[::2], found[1::2],
                                                           strict=True)
                if queued is not None and not taken}

    async def revoke(self, record: TaskRecord) -> None:
        # Drop a queued job from arq's queue, as arq's abort does for a job not started
        # (without making workers poll an abort set: allow_abort_jobs is off, and a
        # running one is stopped by core's cancel listener). The record is REVOKED
        # already, so a worker that took the job just now does not start it.
        pool = await self.pool()
        async with pool.pipeline(transaction=True) as tr:
            tr.zrem(QUEUE_PREFIX + (record.queue or DEFAULT_QUEUE), record.delivery_id)
            tr.delete(job_key_prefix + record.delivery_id)
            await tr.execute()

    async def redeliver(self, record: TaskRecord) -> None:
        # The dead worker's job stays in arq's queue until its in-progress mark
        # expires: drop it, so arq does not hand it out again later.
        stale = replace(record, deliveries=record.deliveries - 1).delivery_id
        pool = await self.pool()
        async with pool.pipeline(transaction=True) as tr:
            tr.zrem(QUEUE_PREFIX + (record.queue or DEFAULT_QUEUE), stale)
            tr.delete(job_key_prefix + stale, in_progress_key_prefix + stale,
                      retry_key_prefix + stale)
            await tr.execute()
        await super().redeliver(record)

    async def aclose(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()
        await super().aclose()

    @classmethod
    def default_concurrency(cls, cpus: int) -> int:
        """arq's default max_jobs (one process, async jobs)."""
        return 10

    @classmethod
    def run_worker(cls, settings: Settings, concurrency: int, queues: list[str],
                   processes: int | None = None) -> None:
        """arq's own Worker, one per queue, in one process and one event loop; the
        concurrency is shared by all the queues."""
        if processes not in (None, 1):
            raise ConfigError("arq runs in one process: start more workers instead of "
                              "--processes")
        with worker_services(cls, settings, concurrency, queues):
            asyncio.run(_work(settings, concurrency, queues))

    @classmethod
    def run_native_scheduler(cls, settings: Settings, schedule: Schedule) -> None:
        """`queuebench scheduler --native`: an arq Worker running the schedule's cron
        jobs (backends/arq_impl/cron.py) on a queue of its own; the tasks they submit
        run on the ordinary workers."""
        from backends.arq_impl.cron import CRON_QUEUE, cron_jobs

        jobs, zone = cron_jobs(schedule)

        async def startup(ctx: dict[str, Any]) -> None:
            ctx["backend"] = cls(settings)

        async def shutdown(ctx: dict[str, Any]) -> None:
            if "backend" in ctx:
                await ctx["backend"].aclose()

        worker = Worker(functions=[], cron_jobs=jobs, queue_name=CRON_QUEUE, timezone=zone,
                        redis_settings=RedisSettings.from_dsn(settings.broker),
                        on_startup=startup, on_shutdown=shutdown, keep_result=0,
                        poll_delay=0.05, handle_signals=True)
        worker.run()


def _function(spec: TaskSpec, timeout: float) -> Function:
    async def run(ctx: dict[str, Any], arguments: dict[str, Any],
                  meta: dict[str, Any] | None = None) -> Any:
        runner: Runner = ctx["runner"]
        try:
            return await runner.run(ctx["job_id"], spec.name, arguments, meta)
        except RetryTask as retry:
            raise Retry(defer=retry.delay) from retry.cause

    run.__qualname__ = run.__name__ = spec.name
    return func(run, name=spec.name, timeout=timeout, max_tries=MAX_TRIES)


async def _keep_polling(worker: Worker) -> None:
    """arq's Worker ends at the first Redis error of its poll loop, leaving its jobs
    running without anyone to finish them: poll again (its jobs go on meanwhile)."""
    while True:
        try:
            return await worker.async_run()
        except (RedisError, OSError) as exc:
            log.warning("arq worker of %s: %s; polling again in 1 s", worker.queue_name, exc)
            await asyncio.sleep(1)


class _Slots:
    """Jobs in flight in this process, over all its queues' Workers."""

    taken = 0


class _SharedWorker(Worker):
    """arq's Worker, whose limit (`max_jobs`) counts the jobs of every queue's Worker
    in this process, not its own only. arq 0.28 keeps its jobs in flight in
    `job_counter`, compares it with max_jobs before it polls and before it starts each
    job, and adds or takes one as a job starts or ends (its semaphore, of max_jobs + 1
    permits, is never the bound): one counter shared by all makes max_jobs a limit for
    the process. A Worker whose queue waits while the others hold every slot does not
    poll, so it never blocks (its aborts and heartbeat go on)."""

    def __init__(self, *args: Any, slots: _Slots, **kwargs: Any) -> None:
        self._slots = slots
        super().__init__(*args, **kwargs)

    @property  # type: ignore[override]
    def job_counter(self) -> int:
        return self._slots.taken

    @job_counter.setter
    def job_counter(self, value: int) -> None:
        self._slots.taken = value

    async def run_job(self, job_id: str, score: int) -> None:
        """arq's run_job, whose job is handed out again when Redis failed it. arq reads
        the job and, at its end, removes it in Redis calls that raise when Redis is
        away: the job is left in its queue under the in-progress mark arq set, which
        lives FUNCTION_TIMEOUT (a week), so no worker would take it before. The mark is
        dropped once Redis answers: the job is taken again, and its record runs it if
        it never ran, or ends it at once if it did."""
        try:
            await super().run_job(job_id, score)
        except (RedisError, OSError) as exc:
            log.warning("arq job %s: %s; handing it out again once Redis answers", job_id, exc)
            delay = 0.1
            while True:
                try:
                    await self.pool.delete(in_progress_key_prefix + job_id)
                    return
                except (RedisError, OSError):
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 2.0)


async def _work(settings: Settings, concurrency: int, queues: list[str]) -> None:
    """The worker's event loop: a Worker per queue, all stopped by one signal."""

    async def startup(ctx: dict[str, Any]) -> None:
        if "runner" in ctx:  # a Worker polling again after a Redis error
            return
        # Records live in REDIS_URL, which need not be arq's broker (BROKER_URL).
        records = connect(settings.redis_url, settings.redis_max_connections)
        # A sync task runs in a thread, which an abort or its time limit stops too.
        ctx["runner"] = OffloadRunner(settings, records)

    functions = [_function(spec, FUNCTION_TIMEOUT) for spec in all_tasks().values()]
    slots = _Slots()  # --concurrency N: N jobs in flight over all the queues
    workers = [
        _SharedWorker(
            slots=slots,
            functions=functions,
            queue_name=QUEUE_PREFIX + queue,
            redis_settings=RedisSettings.from_dsn(settings.broker),
            on_startup=startup,
            max_jobs=concurrency,
            keep_result=0,  # results live in queuebench's task record
            poll_delay=0.05,
            allow_abort_jobs=False,  # DELETE: revoke() and core's listener
            job_completion_wait=round(settings.shutdown_timeout),
            handle_signals=False,  # one handler below stops every queue's Worker
        )
        for queue in queues
    ]
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(
            sig, lambda s=sig: [w.handle_sig_wait_for_completion(s) for w in workers])
    try:
        ended = await asyncio.gather(*(_keep_polling(w) for w in workers),
                                     return_exceptions=True)
        failed = [e for e in ended if isinstance(e, Exception)]
        if failed:  # not a signal's cancellation: say why before exiting
            raise failed[0]
    finally:
        for w in workers:
            await w.close()
