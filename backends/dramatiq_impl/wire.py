"""Dramatiq's message as the native producer sends it: in its Redis broker's wire
format as Redis commands (`message_commands`), or as its RabbitMQ broker publishes it
(`message_outgoing`).

What `RedisBroker.enqueue` and its `dispatch.lua` ("enqueue") write: the message,
encoded by Dramatiq's own `Message.encode`, under a fresh `redis_message_id` in the
hash `<namespace>:<queue>.msgs`, and that id pushed on the list `<namespace>:<queue>`;
a delayed message goes to the queue's delay queue (`.DQ`) with its `eta`. The
broker's enqueue hooks are not run: its default middleware adds nothing to a message
there (Prometheus only counts). tests/test_wire.py compares the two field by field.

`RabbitmqBroker.enqueue` publishes the encoded message to the anonymous exchange,
routed to the queue (or, delayed, to its delay queue with the `eta`), persistent;
the queue is the message's, already the broker's name (`dramatiq.<queue>` on
RabbitMQ: actors.broker_queue); the AMQP `message_id` property (pika leaves it
unset, aiormq needs one) is Dramatiq's.
"""

from __future__ import annotations

import time
from uuid import uuid4

from dramatiq import Message
from dramatiq.common import dq_name

from core.brokers.amqp import PERSISTENT, Outgoing
from core.store.records import Command


def message_commands(message: Message, *, namespace: str, delay_ms: int | None = None,
                     now_ms: int | None = None) -> list[Command]:
    queue_name = message.queue_name
    message = message.copy(options={"redis_message_id": str(uuid4())})
    if delay_ms is not None:
        queue_name = dq_name(queue_name)
        now = round(time.time() * 1000) if now_ms is None else now_ms
        message = message.copy(queue_name=queue_name, options={"eta": now + delay_ms})
    redis_id = message.options["redis_message_id"]
    return [("HSET", f"{namespace}:{queue_name}.msgs", redis_id, message.encode()),
            ("RPUSH", f"{namespace}:{queue_name}", redis_id)]


def message_outgoing(message: Message, delay_ms: int | None = None,
                     now_ms: int | None = None) -> Outgoing:
    queue = message.queue_name
    if delay_ms is not None:
        now = round(time.time() * 1000) if now_ms is None else now_ms
        message = message.copy(queue_name=dq_name(queue), options={"eta": now + delay_ms})
    return Outgoing(queue=queue, routing_key=message.queue_name, body=message.encode(),
                    properties={"delivery_mode": PERSISTENT, "message_id": message.message_id,
                                "priority": message.options.get("broker_priority")})
