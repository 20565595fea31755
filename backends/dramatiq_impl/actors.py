"""The Dramatiq broker and the shared tasks as actors of the same names.

Dramatiq's worker processes import this module (`dramatiq backends.dramatiq_impl.actors`),
so the broker is made from the environment's settings at import.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import CurrentMessage, TimeLimitExceeded

from core.backend import DEFAULT_QUEUE
from core.errors import RetryTask
from core.errors import TimeLimitExceeded as CoreTimeLimitExceeded
from core.registry import TaskSpec, all_tasks
from core.runner import ThreadLoops
from core.settings import Settings


def _declare(broker: RedisBroker, loops: ThreadLoops, spec: TaskSpec) -> None:
    def run(arguments: dict[str, Any], meta: dict[str, Any] | None = None) -> None:
        message = CurrentMessage.get_current_message()
        assert message is not None  # CurrentMessage is in the broker's middleware
        try:
            # The result is in queuebench's task record; returning it would only make
            # Dramatiq warn that no Results middleware keeps it.
            loops.run(message.message_id, spec.name, arguments, meta)
        except RetryTask as retry:
            # Dramatiq's Retries middleware retries it, with the message's own
            # max_retries and backoff options (set at enqueue).
            raise retry.cause from None

    run.__name__ = spec.name
    # No retries unless the task's policy asks (Dramatiq's default is 20), and a run
    # over its time limit is a final failure, as on every backend.
    dramatiq.actor(run, actor_name=spec.name, queue_name=DEFAULT_QUEUE, broker=broker,
                   max_retries=0, throws=(TimeLimitExceeded, CoreTimeLimitExceeded))


@cache
def broker(settings: Settings) -> RedisBroker:
    made = RedisBroker(
        url=settings.broker,
        # A worker that stops heartbeating for this long is dead: its unacked
        # messages go back on the queue.
        heartbeat_timeout=settings.visibility_timeout * 1000,
        maintenance_chance=settings.dramatiq_maintenance_chance,
    )
    made.add_middleware(CurrentMessage())
    loops = ThreadLoops(settings, time_limit_errors=(TimeLimitExceeded,))
    for spec in all_tasks().values():
        _declare(made, loops, spec)
    dramatiq.set_broker(made)
    return made


if __name__ != "__main__":
    broker(Settings())
