"""Celery: prefork workers; publishing is blocking, so it runs in a thread."""

from __future__ import annotations

import asyncio
import json
import os
import socket
from typing import TYPE_CHECKING, Any

try:
    import celery  # noqa: F401
except ModuleNotFoundError as exc:  # the loader turns this into one clear line
    raise ModuleNotFoundError(exc.msg, name="celery") from None

from backends.celery_impl.app import PRIORITY_STEPS, SEP, broker_priority, celery_app
from backends.celery_impl.wire import shown, task_commands, task_outgoing
from core.backend import DEFAULT_QUEUE, TaskBackend
from core.brokers.amqp import Outgoing
from core.errors import ConfigError
from core.settings import Settings
from core.store.records import Command, TaskRecord, task_of
from core.tasks.features import Support
from core.tasks.options import TaskOptions
from core.worker.reaper import worker_services

if TYPE_CHECKING:
    from core.schedule.entries import Schedule

# A task's time limit is enforced by core (an async task's on its event loop, a sync
# task's by core/worker/interrupt.py), in both pools: Celery's own limits work in prefork
# only. They stand behind core's, a little later: the soft one raises in a child
# process, the hard one ends it (a task blocked in a C call that core cannot stop).
LIMIT_GRACE = 1.0
HARD_GRACE = 10.0


class Backend(TaskBackend):
    name = "celery"
    brokers = ("redis", "amqp")
    features = {
        "retries": Support.NATIVE,
        # Celery's threads pool (`--processes 1`) enforces no limit and stops no running
        # task: core does both, in either pool (core/worker/interrupt.py).
        "time_limit": Support.CORE,
        "delay": Support.NATIVE,
        "cancel_pending": Support.NATIVE,
        "cancel_running": Support.CORE,
        "queues": Support.NATIVE,
        "priority": Support.NATIVE,
        "graceful_shutdown": Support.NATIVE,
        # Celery beat / arq cron from core's schedule (`queuebench scheduler --native`);
        # core's scheduler runs on it too.
        "periodic": Support.NATIVE,
    }

    def _publish(self, record: TaskRecord, arguments: dict[str, Any],
                 options: TaskOptions) -> dict[str, Any]:
        """What the task is published with: `apply_async`'s arguments."""
        extra: dict[str, Any] = {}
        if options.time_limit is not None:
            soft = options.time_limit + LIMIT_GRACE
            extra.update(soft_time_limit=soft, time_limit=soft + HARD_GRACE)
        if options.priority is not None:
            extra["priority"] = broker_priority(self.settings, options.priority)
        return {"args": (arguments, self.meta(record, options)), "task_id": record.delivery_id,
                "queue": options.queue or DEFAULT_QUEUE, "countdown": options.countdown,
                "eta": options.eta, **shown(celery_app(self.settings), record), **extra}

    async def enqueue(self, record: TaskRecord, arguments: dict[str, Any],
                      options: TaskOptions) -> None:
        task = celery_app(self.settings).tasks[record.name]
        await asyncio.to_thread(task.apply_async, **self._publish(record, arguments, options))

    def commands(self, record: TaskRecord, arguments: dict[str, Any],
                 options: TaskOptions) -> list[Command]:
        return task_commands(celery_app(self.settings), record.name,
                             **self._publish(record, arguments, options))

    def outgoing(self, record: TaskRecord, arguments: dict[str, Any],
                 options: TaskOptions) -> Outgoing:
        return task_outgoing(celery_app(self.settings), record.name,
                             **self._publish(record, arguments, options))

    def declare(self, queue: str) -> None:
        app = celery_app(self.settings)
        with app.connection_for_write() as connection:
            app.amqp.queues[queue].bind(connection.default_channel).declare()

    def depth_commands(self, queue: str) -> list[Command]:
        return [("LLEN", key) for key in _step_lists(queue)]

    def amqp_queues(self, queue: str) -> list[str]:
        return [queue]  # Celery's queue on RabbitMQ has queuebench's name

    async def waiting_in(self, queue: str) -> set[str] | None:
        # A message a worker took is in kombu's unacked hash, no longer in the lists.
        messages = await self.listed(_step_lists(queue))
        if messages is None:
            return None
        return {task_of(json.loads(message)["headers"]["id"]) for message in messages}

    async def revoke(self, record: TaskRecord) -> None:
        # Celery's revoke: workers drop the message if it is queued. A running task is
        # stopped by core (TaskBackend.cancel), in either pool; Celery's terminate
        # would end a prefork child, and cannot stop a thread.
        await asyncio.to_thread(celery_app(self.settings).control.revoke, record.delivery_id)

    @classmethod
    def default_concurrency(cls, cpus: int) -> int:
        """Celery's default: a prefork child per CPU."""
        return cpus

    @classmethod
    def run_worker(cls, settings: Settings, concurrency: int, queues: list[str],
                   processes: int | None = None) -> None:
        """`celery worker`: the prefork pool, one child process per task in flight; or,
        with one process, the threads pool (so in-flight tasks can match Dramatiq's and
        arq's)."""
        if processes not in (None, 1, concurrency):
            raise ConfigError("celery: --processes is 1 (threads pool) or --concurrency "
                              "(prefork)")
        pool = "threads" if processes == 1 else "prefork"
        with worker_services(cls, settings, concurrency, queues, pool=pool):
            celery_app(settings).worker_main([
                "worker", f"--loglevel={settings.log_level}", f"--pool={pool}",
                f"--concurrency={concurrency}",
                f"--queues={','.join(queues)}",
                f"--hostname=queuebench-{os.getpid()}@{socket.gethostname()}",
                "--without-gossip", "--without-mingle",
            ])

    @classmethod
    def run_native_scheduler(cls, settings: Settings, schedule: Schedule) -> None:
        """`queuebench scheduler --native`: Celery beat, its schedule generated from
        core's (backends/celery_impl/beat.py)."""
        from backends.celery_impl.beat import SCHEDULER, configure

        app = configure(celery_app(settings), settings, schedule)
        app.start(["beat", "--loglevel=INFO", f"--scheduler={SCHEDULER}"])


def _step_lists(queue: str) -> list[str]:
    """kombu's Redis transport keeps a queue as one list per priority step: `queue` for
    step 0 and `queue<sep><step>` for the others (a countdown waits in the worker)."""
    return [queue if not step else f"{queue}{SEP}{step}" for step in PRIORITY_STEPS]

