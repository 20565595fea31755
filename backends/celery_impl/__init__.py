"""Celery: prefork workers; publishing is blocking, so it runs in a thread."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

try:
    import celery  # noqa: F401
except ModuleNotFoundError as exc:  # the loader turns this into one clear line
    raise ModuleNotFoundError(exc.msg, name="celery") from None

from backends.celery_impl.app import celery_app
from core.backend import DEFAULT_QUEUE, TaskBackend
from core.options import TaskOptions
from core.records import TaskRecord
from core.settings import Settings
from core.workers import Heartbeat


class Backend(TaskBackend):
    name = "celery"
    native_options = frozenset({"countdown", "eta", "queue"})

    async def enqueue(self, record: TaskRecord, arguments: dict[str, Any],
                      options: TaskOptions) -> None:
        task = celery_app(self.settings).tasks[record.name]
        await asyncio.to_thread(
            task.apply_async, (arguments,), task_id=record.id,
            queue=options.queue or DEFAULT_QUEUE, countdown=options.countdown, eta=options.eta,
        )


def run_worker(settings: Settings, concurrency: int, queues: list[str]) -> None:
    """`celery worker` with the prefork pool, one child process per task in flight."""
    heartbeat = Heartbeat(settings.redis_url, "celery", settings.worker_heartbeat,
                          concurrency=concurrency, queues=queues).start()
    try:
        celery_app(settings).worker_main([
            "worker", "--loglevel=INFO", "--pool=prefork", f"--concurrency={concurrency}",
            f"--queues={','.join(queues)}", f"--hostname=queuebench@{socket.gethostname()}",
            "--without-gossip", "--without-mingle",
        ])
    finally:
        heartbeat.stop()
