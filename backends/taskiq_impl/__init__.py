"""taskiq: natively async, broker-agnostic; taskiq-redis's stream broker on Redis and
taskiq-aio-pika on RabbitMQ (backends/taskiq_impl/broker.py says why those). The
shared tasks are taskiq tasks of the same names, run by taskiq's own worker CLI."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

try:
    import taskiq  # noqa: F401
except ModuleNotFoundError as exc:  # the loader turns this into one clear line
    raise ModuleNotFoundError(exc.msg, name="taskiq") from None

from taskiq import AsyncBroker

from backends.taskiq_impl.broker import GROUP, amqp_queue, delayed, make_broker, queue_label, stream
from backends.taskiq_impl.wire import labels, message_body, message_commands, message_outgoing
from core.backend import DEFAULT_QUEUE, WAITING_SCAN_MAX, TaskBackend, delay_of
from core.brokers.amqp import Outgoing
from core.settings import Settings
from core.store.records import Command, TaskRecord, as_str
from core.tasks.features import Support
from core.tasks.options import TaskOptions
from core.worker.reaper import split_concurrency, worker_services

if TYPE_CHECKING:
    from core.schedule.entries import Schedule

# taskiq's worker CLI defaults: 2 processes (`--workers`), 100 async tasks each.
WORKERS = 2
MAX_ASYNC_TASKS = 100

# Messages waiting in a queue on Redis: its stream's entries not yet acked minus those
# read and pending on a consumer (an acked entry is deleted, broker.py), plus its
# delayed ones. KEYS: the stream, the delayed set; ARGV[1]: the consumer group.
DEPTH = """
local n = redis.call('XLEN', KEYS[1])
local ok, pending = pcall(redis.call, 'XPENDING', KEYS[1], ARGV[1])
if ok then n = n - pending[1] end
return n + redis.call('ZCARD', KEYS[2])
"""


class Backend(TaskBackend):
    name = "taskiq"
    brokers = ("redis", "amqp")
    features = {
        # taskiq's retry middleware (SmartRetryMiddleware) sends the task again when,
        # and after the delay, core's policy says (broker.py: _CoreRetries).
        "retries": Support.NATIVE,
        # taskiq's `timeout` label cannot stop a sync task: core enforces every limit.
        "time_limit": Support.CORE,
        # taskiq's `delay` label, which a stock taskiq worker's queue receives when due.
        # taskiq-redis ignores it: the adapter's stream broker holds the message. On
        # RabbitMQ it goes up core's delay ladder, not taskiq-aio-pika's delay queue
        # (where a countdown waits behind every longer one: core/brokers/delays.py).
        "delay": Support.NATIVE,
        # taskiq cannot stop a running task (taskiq#305): core does.
        "cancel_running": Support.CORE,
        "queues": Support.NATIVE,  # the `queue_name` label: a stream / queue each
        "graceful_shutdown": Support.NATIVE,
        # taskiq's scheduler from core's schedule (`queuebench scheduler --native`,
        # scheduler.py); core's scheduler runs on it too.
        "periodic": Support.NATIVE,
    }

    def __init__(self, settings: Settings, redis: Any = None) -> None:
        super().__init__(settings, redis)
        self._client: AsyncBroker | None = None
        self._client_lock = asyncio.Lock()

    def _labels(self, record: TaskRecord, options: TaskOptions) -> dict[str, Any]:
        return labels(queue_label(self.settings, options.queue or DEFAULT_QUEUE),
                      delay_of(record, options))

    def _body(self, record: TaskRecord, arguments: dict[str, Any], options: TaskOptions,
              labelled: dict[str, Any]) -> bytes:
        return message_body(record.name, record.delivery_id,
                            [arguments, self.meta(record, options)], labelled)

    async def client(self) -> AsyncBroker:
        """taskiq's broker as a client (its startup run once): the library producer."""
        async with self._client_lock:
            if self._client is None:
                made = make_broker(self.settings)
                await made.startup()
                self._client = made
            return self._client

    async def enqueue(self, record: TaskRecord, arguments: dict[str, Any],
                      options: TaskOptions) -> None:
        broker = await self.client()
        task = broker.find_task(record.name)
        assert task is not None, record.name  # every shared task is registered
        await (task.kicker().with_task_id(record.delivery_id)
               .with_labels(**self._labels(record, options))
               .kiq(arguments, self.meta(record, options)))

    def commands(self, record: TaskRecord, arguments: dict[str, Any],
                 options: TaskOptions) -> list[Command]:
        labelled = self._labels(record, options)
        return message_commands(self._body(record, arguments, options, labelled),
                                options.queue or DEFAULT_QUEUE, labelled.get("delay"),
                                now=record.submitted_at)

    def outgoing(self, record: TaskRecord, arguments: dict[str, Any],
                 options: TaskOptions) -> Outgoing:
        labelled = self._labels(record, options)
        return message_outgoing(self._body(record, arguments, options, labelled),
                                record.name, record.delivery_id,
                                options.queue or DEFAULT_QUEUE, labelled)

    def declare(self, queue: str) -> None:
        """`queue` (`taskiq.<name>`), declared by taskiq-aio-pika's own startup as a
        worker of that queue declares it, and bound at the foot of the delay ladder."""
        async def run() -> None:
            made = make_broker(self.settings, [queue.removeprefix("taskiq.")])
            await made.startup()
            await made.shutdown()

        asyncio.run(run())

    def depth_commands(self, queue: str) -> list[Command]:
        return [("EVAL", DEPTH, 2, stream(queue), delayed(queue), GROUP)]

    def amqp_queues(self, queue: str) -> list[str]:
        # A delayed message waits on core's delay ladder, shared by every queue:
        # counted once it lands in its queue.
        return [amqp_queue(queue)]

    async def waiting_in(self, queue: str) -> set[str] | None:
        # Entries past the group's last delivered one (none read yet), and the delayed
        # messages; an entry a consumer read is taken (the reaper's rule).
        client = self._broker()
        if client is None:  # RabbitMQ: trusted to hand a dead consumer's messages out
            return None
        key = stream(queue)
        start = "-"
        if await client.exists(key):
            groups = await client.xinfo_groups(key)
            for group in groups:
                if as_str(group["name"]) == GROUP:
                    start = "(" + as_str(group["last-delivered-id"])
        entries = await client.xrange(key, start, "+", count=WAITING_SCAN_MAX + 1)
        held = await client.zrange(delayed(queue), 0, WAITING_SCAN_MAX)
        if len(entries) > WAITING_SCAN_MAX or len(held) > WAITING_SCAN_MAX:
            return None
        bodies = [fields[b"data"] for _, fields in entries] + held
        return {json.loads(body)["args"][1]["task_id"] for body in bodies}

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.shutdown()
        await super().aclose()

    @classmethod
    def default_concurrency(cls, cpus: int) -> int:
        """taskiq's worker CLI default: 2 processes x 100 async tasks."""
        return WORKERS * MAX_ASYNC_TASKS

    @classmethod
    def run_worker(cls, settings: Settings, concurrency: int, queues: list[str],
                   processes: int | None = None) -> None:
        """taskiq's own worker (`taskiq worker`, its ProcessManager and Receiver):
        processes x async tasks = concurrency, in at most 2 processes by default (as
        taskiq's `--workers`); a sync task runs in a thread core can stop."""
        from taskiq.cli.worker.args import WorkerArgs
        from taskiq.cli.worker.run import run_worker

        processes, slots = split_concurrency(concurrency, processes, WORKERS)
        broker = make_broker(settings, queues, slots)
        with worker_services(cls, settings, concurrency, queues, processes=processes,
                             slots=slots):
            args = WorkerArgs(broker=broker,  # type: ignore[arg-type] # an instance is taken
                              modules=[], workers=processes, max_async_tasks=slots,
                              log_level=settings.log_level,  # type: ignore[arg-type]
                              wait_tasks_timeout=settings.shutdown_timeout)
            raise SystemExit(run_worker(args))

    @classmethod
    def run_native_scheduler(cls, settings: Settings, schedule: Schedule) -> None:
        """`queuebench scheduler --native`: taskiq's own scheduler (TaskiqScheduler and
        its loop, as `taskiq scheduler` runs them) on core's schedule
        (backends/taskiq_impl/scheduler.py); the tasks it fires run on the ordinary
        workers."""
        from backends.taskiq_impl.scheduler import run

        run(cls, settings, schedule)


__all__ = ["Backend"]
