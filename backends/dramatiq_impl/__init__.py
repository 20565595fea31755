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
from core.options import TaskOptions
from core.records import TaskRecord
from core.settings import Settings
from core.workers import Heartbeat


class Backend(TaskBackend):
    name = "dramatiq"
    native_options = frozenset({"countdown", "eta", "queue"})

    async def enqueue(self, record: TaskRecord, arguments: dict[str, Any],
                      options: TaskOptions) -> None:
        made = broker(self.settings)
        queue = options.queue or DEFAULT_QUEUE
        if queue not in made.get_declared_queues():
            made.declare_queue(queue)
        message = Message(queue_name=queue, actor_name=record.name, args=(arguments,),
                          kwargs={}, options={}, message_id=record.id)
        await asyncio.to_thread(made.enqueue, message, delay=_delay_ms(options, record))


def _delay_ms(options: TaskOptions, record: TaskRecord) -> int | None:
    start = (record.submitted_at or 0) + (options.countdown or 0)
    if options.eta is not None:
        start = max(start, options.eta.timestamp())
    delay = start - (record.submitted_at or 0)
    return round(delay * 1000) if delay > 0 else None


def run_worker(settings: Settings, concurrency: int, queues: list[str]) -> None:
    """Dramatiq's own CLI: processes x threads = concurrency."""
    from dramatiq.cli import main, make_argument_parser

    processes = max(1, min(concurrency, os.cpu_count() or 1))
    threads = max(1, concurrency // processes)
    heartbeat = Heartbeat(settings.redis_url, "dramatiq", settings.worker_heartbeat,
                          concurrency=processes * threads, queues=queues).start()
    try:
        args = make_argument_parser().parse_args([
            "backends.dramatiq_impl.actors", "--processes", str(processes),
            "--threads", str(threads), "--queues", *queues,
        ])
        raise SystemExit(main(args))
    finally:
        heartbeat.stop()
