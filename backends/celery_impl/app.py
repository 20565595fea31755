"""The Celery app: the shared tasks registered as Celery tasks of the same names."""

from __future__ import annotations

from functools import cache
from typing import Any

from celery import Celery, Task
from celery.exceptions import SoftTimeLimitExceeded
from kombu.transport import redis as redis_transport
from redis.exceptions import ConnectionError as RedisConnectionError

from core.backend import DEFAULT_QUEUE
from core.brokers.amqp import is_amqp
from core.errors import RetryTask
from core.settings import Settings
from core.tasks import all_tasks
from core.tasks.registry import TaskSpec
from core.worker.runner import ThreadLoops

# kombu's Redis transport: priority 0 is served first; queuebench's 9 is the highest.
# On RabbitMQ a higher number is served first, in queues declared with x-max-priority.
PRIORITY_STEPS = list(range(10))
MAX_PRIORITY = 9
DEFAULT_PRIORITY = 5
SEP = ":"  # between a queue's name and its priority step, in its Redis list's key


class _Channel(redis_transport.Channel):
    """kombu's Redis channel, failing as a lost connection should once its connection
    is gone. Celery 5.7, when Redis goes away, collects the broken connection (which
    drops the transport's client) and then closes it: the close restores unacked
    messages, and a task that ends next acknowledges its message (acks late), both
    through the old channel, which makes a client from `_connparams` and meets an
    AttributeError there. Celery handles a connection error on those paths (the
    restore is skipped, the ack logged as failed) but not that: the worker stopped
    ("Unrecoverable error"). The unacked messages stay in kombu's unacked hash, in Redis,
    restored after VISIBILITY_TIMEOUT (the record refuses a finished task's second run)."""

    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        if self.connection.client is None:
            raise RedisConnectionError("the broker connection was lost and collected")
        params: dict[str, Any] = super()._connparams(asynchronous)
        return params


class _Transport(redis_transport.Transport):
    Channel = _Channel


def _register(app: Celery, loops: ThreadLoops, spec: TaskSpec) -> None:
    def run(self: Task, arguments: dict[str, Any], meta: dict[str, Any] | None = None) -> Any:
        try:
            return loops.run(self.request.id, spec.name, arguments, meta)
        except RetryTask as retry:
            # Celery's own retry: the message is published again with retries + 1.
            raise self.retry(countdown=retry.delay, exc=retry.cause) from retry.cause

    # max_retries=None: the task's policy, not Celery's default of 3, decides.
    # shared=False: the tasks are this app's alone (another app in the same process,
    # as in the tests, would otherwise register them again, with a warning).
    app.task(name=spec.name, bind=True, max_retries=None, shared=False)(run)


def broker_priority(settings: Settings, priority: int) -> int:
    """The message's priority for queuebench's `priority` (0-9, 9 runs first)."""
    return priority if is_amqp(settings.broker) else MAX_PRIORITY - priority


def _transport_options(settings: Settings) -> dict[str, Any]:
    if is_amqp(settings.broker):
        return {}  # RabbitMQ redelivers a dead consumer's unacked messages at once
    return {
        "visibility_timeout": settings.visibility_timeout,
        # Look for a dead worker's unacked tasks a few times per visibility timeout
        # (kombu's default is every ~100 s whatever the timeout).
        "unacked_restore_interval": max(1, min(10, settings.visibility_timeout // 3)),
        "unacked_restore_throttle": 1,
        "priority_steps": PRIORITY_STEPS,
        "sep": SEP,
        "queue_order_strategy": "priority",
    }


@cache
def celery_app(settings: Settings) -> Celery:
    app = Celery("queuebench", broker=settings.broker, set_as_current=True)
    if settings.broker.startswith(("redis://", "rediss://", "unix://")):
        app.conf.broker_transport = f"{__name__}:_Transport"
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,  # results live in queuebench's task record
        task_default_queue=DEFAULT_QUEUE,
        task_default_priority=DEFAULT_PRIORITY,
        # A task is acknowledged after it ran, so a worker that dies mid-task does not
        # lose it: Redis redelivers it after the visibility timeout, RabbitMQ when the
        # worker's connection drops.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_transport_options=_transport_options(settings),
        # RabbitMQ: every queue Celery declares (the producer's and the workers') has
        # x-max-priority, or priorities are ignored. kombu's Redis transport has none.
        task_queue_max_priority=MAX_PRIORITY if is_amqp(settings.broker) else None,
        broker_connection_retry_on_startup=True,
        # Reconnect for as long as Redis is away (Celery's default gives up after 100
        # tries, some 45 minutes, and the worker exits).
        broker_connection_max_retries=None,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
    )
    loops = ThreadLoops(settings, time_limit_errors=(SoftTimeLimitExceeded,))
    for spec in all_tasks().values():
        _register(app, loops, spec)
    return app
