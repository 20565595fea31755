"""The Dramatiq broker and the shared tasks as actors of the same names.

Dramatiq's worker processes import this module (`dramatiq backends.dramatiq_impl.actors`),
so the broker is made from the environment's settings at import.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import CurrentMessage

from core.backend import DEFAULT_QUEUE
from core.registry import TaskSpec, all_tasks
from core.runner import ThreadLoops
from core.settings import Settings


def _declare(broker: RedisBroker, loops: ThreadLoops, spec: TaskSpec) -> None:
    def run(arguments: dict[str, Any]) -> None:
        message = CurrentMessage.get_current_message()
        assert message is not None  # CurrentMessage is in the broker's middleware
        # The result is in queuebench's task record; returning it would only make
        # Dramatiq warn that no Results middleware keeps it.
        loops.run(message.message_id, spec.name, arguments,
                  attempt=message.options.get("retries", 0))

    run.__name__ = spec.name
    # Retries are off unless a task asks for them: Dramatiq would retry 20 times.
    dramatiq.actor(run, actor_name=spec.name, queue_name=DEFAULT_QUEUE, broker=broker,
                   max_retries=0)


@cache
def broker(settings: Settings) -> RedisBroker:
    made = RedisBroker(url=settings.broker)
    made.add_middleware(CurrentMessage())
    loops = ThreadLoops(settings)
    for spec in all_tasks().values():
        _declare(made, loops, spec)
    dramatiq.set_broker(made)
    return made


if __name__ != "__main__":
    broker(Settings())
