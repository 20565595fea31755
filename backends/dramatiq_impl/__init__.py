"""Dramatiq: worker processes with threads; enqueueing is blocking, so it runs in a thread."""

from __future__ import annotations

import asyncio
import os
from typing import Any

try:
    import dramatiq  # noqa: F401
except ModuleNotFoundError as exc:  # the loader turns this into one clear line
    raise ModuleNotFoundError(exc.msg, name="dramatiq") from None

from dramatiq import Message
from dramatiq.common import dq_name

from backends.dramatiq_impl.actors import broker, broker_queue
from backends.dramatiq_impl.wire import message_commands, message_outgoing
from core.backend import DEFAULT_QUEUE, TaskBackend, delay_of
from core.brokers.amqp import Outgoing
from core.settings import Settings
from core.store.records import Command, TaskRecord, task_of
from core.tasks.features import Support
from core.tasks.options import TaskOptions
from core.worker.reaper import split_concurrency, worker_services

# A task's time limit is enforced by core (an async task's on its event loop, a sync
# task's by core/worker/interrupt.py); Dramatiq's TimeLimit stands behind it, a little later
# (it checks once a second), so the two never both raise in one run.
LIMIT_GRACE = 1.0


class Backend(TaskBackend):
    name = "dramatiq"
    brokers = ("redis", "amqp")
    features = {
        "retries": Support.NATIVE,
        "time_limit": Support.CORE,
        "delay": Support.NATIVE,
        # Dramatiq cannot stop a running task: core does (core/worker/interrupt.py).
        "cancel_running": Support.CORE,
        "queues": Support.NATIVE,
        "graceful_shutdown": Support.NATIVE,
    }

    def _message(self, record: TaskRecord, arguments: dict[str, Any],
                 options: TaskOptions) -> Message:
        # Retries: Dramatiq's Retries middleware retries when (and after the delay)
        # core's policy says (backends/dramatiq_impl/actors.py), not by its own count.
        dramatiq_options: dict[str, Any] = {}
        if options.time_limit is not None:
            dramatiq_options["time_limit"] = round((options.time_limit + LIMIT_GRACE) * 1000)
        return Message(queue_name=broker_queue(self.settings, options.queue or DEFAULT_QUEUE),
                       actor_name=record.name,
                       args=(arguments, self.meta(record, options)), kwargs={},
                       options=dramatiq_options, message_id=record.delivery_id)

    async def enqueue(self, record: TaskRecord, arguments: dict[str, Any],
                      options: TaskOptions) -> None:
        message = self._message(record, arguments, options)
        made = broker(self.settings)
        if message.queue_name not in made.get_declared_queues():
            made.declare_queue(message.queue_name)
        await asyncio.to_thread(made.enqueue, message, delay=_delay_ms(options, record))

    def commands(self, record: TaskRecord, arguments: dict[str, Any],
                 options: TaskOptions) -> list[Command]:
        return message_commands(self._message(record, arguments, options),
                                namespace=broker(self.settings).namespace,
                                delay_ms=_delay_ms(options, record))

    def outgoing(self, record: TaskRecord, arguments: dict[str, Any],
                 options: TaskOptions) -> Outgoing:
        return message_outgoing(self._message(record, arguments, options),
                                _delay_ms(options, record))

    def declare(self, queue: str) -> None:
        broker(self.settings).declare_queue(queue, ensure=True)

    def depth_commands(self, queue: str) -> list[Command]:
        # Dramatiq's Redis broker: a list of message ids per queue, and one per delay
        # queue (`.DQ`); a message a worker fetched has left the list.
        namespace = broker(self.settings).namespace
        return [("LLEN", f"{namespace}:{name}") for name in (queue, dq_name(queue))]

    def amqp_queues(self, queue: str) -> list[str]:
        name = broker_queue(self.settings, queue)  # `dramatiq.<queue>`, and its delay queue
        return [name, dq_name(name)]

    async def waiting_in(self, queue: str) -> set[str] | None:
        # The lists hold the broker's own message ids (a fetched one has left them);
        # the messages are in a hash beside each list.
        client = self._broker()
        if client is None:  # RabbitMQ: its broker has no namespace, and is trusted
            return None
        namespace = broker(self.settings).namespace
        found: set[str] = set()
        for name in (queue, dq_name(queue)):
            ids = await self.listed([f"{namespace}:{name}"])
            if ids is None:
                return None
            if ids:
                bodies = await client.hmget(f"{namespace}:{name}.msgs", ids)
                found.update(task_of(Message.decode(body).message_id)
                             for body in bodies if body is not None)
        return found

    @classmethod
    def default_concurrency(cls, cpus: int) -> int:
        """Dramatiq's default: a process per CPU, 8 threads each."""
        return 8 * cpus

    @classmethod
    def run_worker(cls, settings: Settings, concurrency: int, queues: list[str],
                   processes: int | None = None) -> None:
        """Dramatiq's own CLI: processes x threads = concurrency, exactly."""
        from dramatiq import worker as dramatiq_worker
        from dramatiq.cli import main, make_argument_parser

        processes, threads = split_concurrency(concurrency, processes, os.cpu_count() or 1)
        consumed = [broker_queue(settings, queue) for queue in queues]
        # Worker processes consume only the queues their broker declared; they are
        # forked from this process, so declaring here reaches them all.
        for queue in consumed:
            broker(settings).declare_queue(queue)
        # A process holds no more messages than it has threads (Dramatiq prefetches 2 x
        # threads by default), as Celery's prefetch of 1 with acks late: every message
        # a worker holds is a running task, whose record names its owner, so the reaper
        # sends all of a dead worker's tasks again (a prefetched one would wait for
        # Dramatiq's own requeue, VISIBILITY_TIMEOUT later). Read when dramatiq.worker
        # is imported (the environment, for spawned processes) and at each Worker's start.
        os.environ["dramatiq_queue_prefetch"] = str(threads)  # noqa: SIM112 (its name)
        dramatiq_worker.QUEUE_PREFETCH = threads
        with worker_services(cls, settings, concurrency, queues, processes=processes,
                             threads=threads):
            args = make_argument_parser().parse_args([
                "backends.dramatiq_impl.actors", "--processes", str(processes),
                "--threads", str(threads), "--queues", *consumed,
                "--worker-shutdown-timeout", str(round(settings.shutdown_timeout * 1000)),
            ])
            raise SystemExit(main(args))


def _delay_ms(options: TaskOptions, record: TaskRecord) -> int | None:
    delay = delay_of(record, options)
    return round(delay * 1000) if delay else None
