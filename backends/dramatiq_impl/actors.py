"""The Dramatiq broker and the shared tasks as actors of the same names.

Dramatiq's worker processes import this module (`dramatiq backends.dramatiq_impl.actors`),
so the broker is made from the environment's settings at import: Dramatiq's Redis
broker, or its RabbitMQ broker when BROKER_URL is `amqp://...`.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import dramatiq
from dramatiq import Broker, Retry
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import CurrentMessage, Middleware, TimeLimit, TimeLimitExceeded

from core.backend import DEFAULT_QUEUE
from core.brokers.amqp import is_amqp, pika_url
from core.errors import RetryTask
from core.errors import TimeLimitExceeded as CoreTimeLimitExceeded
from core.settings import Settings
from core.tasks import all_tasks
from core.tasks.registry import TaskSpec
from core.worker.runner import ThreadLoops

AMQP_PREFIX = "dramatiq."


def broker_queue(settings: Settings, queue: str) -> str:
    """The name Dramatiq's broker gives queuebench's `queue`: on RabbitMQ
    `dramatiq.<queue>` (its delay and dead-letter queues follow, `.DQ` and `.XQ`
    after it). A vhost may hold Celery's queues of the same names (switching
    QUEUE_BACKEND on one broker), declared with other arguments (x-max-priority, where
    Dramatiq's dead-letter to `.XQ`), and RabbitMQ refuses a queue declared again with
    different ones. Dramatiq's are the ones namespaced: Celery's names show in its
    worker's banner and its own tools, Dramatiq's nowhere but the broker. On Redis the
    keys are apart already (`dramatiq:` before each)."""
    return AMQP_PREFIX + queue if is_amqp(settings.broker) else queue


def _declare(broker: Broker, loops: ThreadLoops, spec: TaskSpec, queue: str) -> None:
    def run(arguments: dict[str, Any], meta: dict[str, Any] | None = None) -> None:
        message = CurrentMessage.get_current_message()
        assert message is not None  # CurrentMessage is in the broker's middleware
        try:
            # The result is in queuebench's task record; returning it would only make
            # Dramatiq warn that no Results middleware keeps it.
            loops.run(message.message_id, spec.name, arguments, meta)
        except RetryTask as retry:
            # Dramatiq's Retries middleware sends it again after core's delay (its
            # own backoff formula is not used), as Celery's and arq's retries do.
            raise Retry(f"{type(retry.cause).__name__}: {retry.cause}",
                        delay=max(0, round(retry.delay * 1000))) from retry.cause

    run.__name__ = spec.name
    # Retried only when core's policy says so (a Retry above), never by Dramatiq's own
    # count; a run over its time limit is a final failure, as on every backend.
    dramatiq.actor(run, actor_name=spec.name, queue_name=queue, broker=broker,
                   retry_when=_core_says_retry, throws=(TimeLimitExceeded, CoreTimeLimitExceeded))


def _core_says_retry(retries: int, exception: BaseException) -> bool:
    return isinstance(exception, Retry)


# Milliseconds between a Dramatiq consumer's looks for due delayed messages (a retry,
# a countdown, an eta), and its longest wait for new ones. Dramatiq's default, 1 s per
# hop (the delay queue's consumer, then the queue's), would start a retry up to 2 s
# after core's delay; Celery's and arq's start within a few tens of milliseconds.
PROMPT_MS = 100


class _Prompt(Middleware):
    def before_worker_boot(self, broker: Any, worker: Any) -> None:
        worker.worker_timeout = PROMPT_MS  # before its consumers and threads are made


def _made(settings: Settings) -> Broker:
    if is_amqp(settings.broker):
        from dramatiq.brokers.rabbitmq import RabbitmqBroker

        # RabbitMQ hands a dead worker's unacked messages out again when its
        # connection drops; confirms: an enqueue returns once the broker has it.
        return RabbitmqBroker(url=pika_url(settings.broker), confirm_delivery=True)
    return RedisBroker(
        url=settings.broker,
        # A worker that stops heartbeating for this long is dead: its unacked
        # messages go back on the queue.
        heartbeat_timeout=settings.visibility_timeout * 1000,
        maintenance_chance=settings.dramatiq_maintenance_chance,
    )


@cache
def broker(settings: Settings) -> Broker:
    made = _made(settings)
    made.add_middleware(CurrentMessage())
    made.add_middleware(_Prompt())
    for middleware in made.middleware:
        if isinstance(middleware, TimeLimit):
            # No limit but a task's own, as on every backend (Dramatiq's default is
            # 10 minutes for every actor).
            middleware.time_limit = float("inf")
    loops = ThreadLoops(settings, time_limit_errors=(TimeLimitExceeded,))
    for spec in all_tasks().values():
        _declare(made, loops, spec, broker_queue(settings, DEFAULT_QUEUE))
    dramatiq.set_broker(made)
    return made


if __name__ != "__main__":
    broker(Settings())
