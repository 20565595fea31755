"""taskiq's message in its own wire format, as the native producer sends it.

What `AsyncKicker.kiq` sends through the broker's default formatter and JSON
serializer: a `TaskiqMessage` (task id, task name, labels as strings with their
types, args, kwargs) as JSON. On Redis, `_StreamBroker.kick` (backends/taskiq_impl/broker.py):
XADD of `data` to the queue's stream, or ZADD to its delayed set at the due time. On
RabbitMQ, `AioPikaBroker.kick`: published persistent to the `taskiq` exchange with the
queue's name as routing key, headers task_id, task_name and the labels; delayed, up
core's delay ladder (core/brokers/delays.py), the delay's bits in the routing key.
tests/test_wire.py and tests/test_wire_amqp.py compare each with `kiq()`, field by field.
"""

from __future__ import annotations

import json
import time
from typing import Any

from taskiq.labels import prepare_label

from backends.taskiq_impl.broker import EXCHANGE, amqp_queue, delayed, stream
from core.brokers import delays
from core.brokers.amqp import PERSISTENT, Outgoing
from core.store.records import Command


def labels(label: str, delay: float | None) -> dict[str, Any]:
    """The labels queuebench's kicks carry: the queue's, and a delay in seconds."""
    return {"queue_name": label, "delay": delay} if delay else {"queue_name": label}


def message_body(name: str, task_id: str, args: list[Any], labelled: dict[str, Any]) -> bytes:
    prepared = {key: prepare_label(value) for key, value in labelled.items()}
    return json.dumps({"task_id": task_id, "task_name": name,
                       "labels": {k: v for k, (v, _) in prepared.items()},
                       "labels_types": {k: t for k, (_, t) in prepared.items()},
                       "args": args, "kwargs": {}}).encode()


def message_commands(body: bytes, queue: str, delay: float | None,
                     now: float | None = None) -> list[Command]:
    if delay:
        return [("ZADD", delayed(queue), (time.time() if now is None else now) + delay, body)]
    return [("XADD", stream(queue), "*", "data", body)]


def message_outgoing(body: bytes, name: str, task_id: str, queue: str,
                     labelled: dict[str, Any]) -> Outgoing:
    headers = {"task_id": task_id, "task_name": name,
               **{k: prepare_label(v)[0] for k, v in labelled.items()}}
    target = amqp_queue(queue)
    properties = {"delivery_mode": PERSISTENT, "priority": None}
    delay = labelled.get("delay")
    if delay:
        return Outgoing(queue=target, routing_key=delays.routing_key(float(delay), target),
                        body=body, headers=headers, properties=properties,
                        exchange=delays.ENTRY)
    return Outgoing(queue=target, routing_key=target, body=body, headers=headers,
                    properties=properties, exchange=EXCHANGE)
