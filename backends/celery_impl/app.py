"""The Celery app: the shared tasks registered as Celery tasks of the same names."""

from __future__ import annotations

from functools import cache
from typing import Any

from celery import Celery, Task

from core.backend import DEFAULT_QUEUE
from core.registry import TaskSpec, all_tasks
from core.runner import ThreadLoops
from core.settings import Settings


def _register(app: Celery, loops: ThreadLoops, spec: TaskSpec) -> None:
    def run(self: Task, arguments: dict[str, Any]) -> Any:
        return loops.run(self.request.id, spec.name, arguments, attempt=self.request.retries)

    app.task(name=spec.name, bind=True)(run)


@cache
def celery_app(settings: Settings) -> Celery:
    app = Celery("queuebench", broker=settings.broker, set_as_current=True)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,  # results live in queuebench's task record
        task_default_queue=DEFAULT_QUEUE,
        # A task is acknowledged after it ran, so a worker that dies mid-task does not
        # lose it: Redis redelivers it after the visibility timeout.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_transport_options={"visibility_timeout": settings.visibility_timeout},
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
    )
    loops = ThreadLoops(settings)
    for spec in all_tasks().values():
        _register(app, loops, spec)
    return app
