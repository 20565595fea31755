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

from backends.dramatiq_impl.actors import broker
from core.backend import DEFAULT_QUEUE, TaskBackend
from core.features import Support
from core.options import TaskOptions
from core.reaper import worker_services
from core.records import TaskRecord
from core.registry import get_task
from core.settings import Settings

# An async task's limit is enforced by core on its event loop; Dramatiq's TimeLimit
# stands behind it, a little later, and alone for sync tasks.
ASYNC_GRACE = 1.0


class Backend(TaskBackend):
    name = "dramatiq"
    features = {
        "retries": Support.NATIVE,
        "time_limit": Support.NATIVE,
        "delay": Support.NATIVE,
        "queues": Support.NATIVE,
        "graceful_shutdown": Support.NATIVE,
    }

    async def enqueue(self, record: TaskRecord, arguments: dict[str, Any],
                      options: TaskOptions) -> None:
        made = broker(self.settings)
        queue = options.queue or DEFAULT_QUEUE
        if queue not in made.get_declared_queues():
            made.declare_queue(queue)
        policy = self.policy(options)
        dramatiq_options: dict[str, Any] = {
            "max_retries": policy.max_retries,
            "min_backoff": round(policy.retry_backoff * 1000),
            "max_backoff": round(policy.backoff_cap * 1000),
        }
        if policy.time_limit is not None:
            grace = ASYNC_GRACE if get_task(record.name).is_async else 0
            dramatiq_options["time_limit"] = round((policy.time_limit + grace) * 1000)
        message = Message(queue_name=queue, actor_name=record.name,
                          args=(arguments, self.meta(record, options)), kwargs={},
                          options=dramatiq_options, message_id=record.delivery_id)
        await asyncio.to_thread(made.enqueue, message, delay=_delay_ms(options, record))


def _delay_ms(options: TaskOptions, record: TaskRecord) -> int | None:
    start = (record.submitted_at or 0) + (options.countdown or 0)
    if options.eta is not None:
        start = max(start, options.eta.timestamp())
    delay = start - (record.submitted_at or 0)
    return round(delay * 1000) if delay > 0 else None


def run_worker(settings: Settings, concurrency: int, queues: list[str],
               processes: int | None = None) -> None:
    """Dramatiq's own CLI: processes x threads = concurrency."""
    from dramatiq.cli import main, make_argument_parser

    # Worker processes consume only the queues their broker declared; they are
    # forked from this process, so declaring here reaches them all.
    for queue in queues:
        broker(settings).declare_queue(queue)
    processes = processes or max(1, min(concurrency, os.cpu_count() or 1))
    threads = max(1, concurrency // processes)
    with worker_services(settings, processes * threads, queues):
        args = make_argument_parser().parse_args([
            "backends.dramatiq_impl.actors", "--processes", str(processes),
            "--threads", str(threads), "--queues", *queues,
            "--worker-shutdown-timeout", str(round(settings.shutdown_timeout * 1000)),
        ])
        raise SystemExit(main(args))
