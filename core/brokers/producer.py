"""How a backend's submits reach its broker: the producer, chosen once per backend
instance (`choose`, from TaskBackend.__init__) from PRODUCER, BROKER_URL and REDIS_URL.

- `script`: PRODUCER=native with the broker on REDIS_URL. The adapter's `commands`
  builds the library's message as Redis commands in its own wire format
  (backends/<lib>_impl/wire.py), run inside the script that creates the record: one
  round trip, and the record never exists without its message. An adapter whose
  `commands` gives None has no wire of its own, and is sent as by `library`; so is a
  redelivery (`send`).
- `amqp`: PRODUCER=native with RabbitMQ as the broker, for an adapter that speaks it
  (`brokers` holds "amqp"). The adapter's `outgoing` builds the message, which
  core/brokers/amqp.py's Publisher publishes from the event loop, after the record.
- `library`: PRODUCER=library, a Redis broker apart from REDIS_URL, or RabbitMQ for
  an adapter that does not speak it: the adapter's `enqueue`, the library's own
  client, after the record.

Adapters only build messages; nothing on the submit path asks which producer runs.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from core.brokers.amqp import Outgoing, Publisher, is_amqp

if TYPE_CHECKING:
    from core.backend import TaskBackend
    from core.store.records import Command, TaskRecord
    from core.tasks.options import TaskOptions

    #: sends one created task's message: (record, bound arguments, options)
    Send = Callable[[TaskRecord, dict[str, Any], TaskOptions], Awaitable[None]]
    #: its message as Redis commands for the creating script; None: sent by `Send`
    Commands = Callable[[TaskRecord, dict[str, Any], TaskOptions], list[Command] | None]


@dataclass(frozen=True, slots=True)
class Producer:
    kind: Literal["script", "amqp", "library"]
    #: sends a task after its record is created: every submit but the `script`
    #: producer's, and every redelivery
    send: Send
    #: the message inside the record's create script (`script` only)
    commands: Commands | None = None
    publisher: Publisher | None = None

    async def aclose(self) -> None:
        if self.publisher is not None:
            await self.publisher.aclose()


def choose(backend: TaskBackend) -> Producer:
    settings = backend.settings
    if settings.producer == "native" and settings.broker == settings.redis_url:
        return Producer("script", backend.enqueue, backend.commands)
    if settings.producer == "native" and is_amqp(settings.broker) and "amqp" in backend.brokers:
        publisher = Publisher(settings.broker, backend.declare)
        return Producer("amqp", _publishing(publisher, backend.outgoing), publisher=publisher)
    return Producer("library", backend.enqueue)


def _publishing(publisher: Publisher,
                outgoing: Callable[[TaskRecord, dict[str, Any], TaskOptions], Outgoing]) -> Send:
    async def send(record: TaskRecord, arguments: dict[str, Any], options: TaskOptions) -> None:
        await publisher.publish(outgoing(record, arguments, options))

    return send
