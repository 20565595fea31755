"""Celery's task message on kombu's Redis transport, as Redis commands (the native
producer).

The message is Celery's own: protocol 2 headers, properties and body from
`app.amqp.as_task_v2`, the body serialized by kombu's serializer registry. Around it
goes what kombu's virtual transport adds when it publishes (`prepare_message`, then
`Channel._inplace_augment_message`: a base64 body, a delivery tag, the delivery info
of the anonymous direct exchange), and it is pushed as kombu's Redis transport's
`_put` does: LPUSH on the queue's list, or on `<queue><sep><step>` for a priority
step above 0. tests/test_wire.py compares it, field by field, with what
`apply_async` writes, for every option combination.
"""

from __future__ import annotations

import base64
import json
import uuid
from bisect import bisect
from datetime import datetime
from typing import Any

from celery import Celery
from kombu.serialization import dumps
from kombu.transport.redis import Channel

from core.records import Command

PERSISTENT = 2  # kombu's delivery_mode for a durable queue's message


def task_commands(app: Celery, name: str, args: tuple[Any, ...], *, task_id: str,
                  queue: str, priority: int | None = None, countdown: float | None = None,
                  eta: datetime | None = None, time_limit: float | None = None,
                  soft_time_limit: float | None = None) -> list[Command]:
    conf = app.conf
    message = app.amqp.as_task_v2(
        task_id, name, args, {}, countdown=countdown, eta=eta, time_limit=time_limit,
        soft_time_limit=soft_time_limit, reply_to=app.thread_oid,
        ignore_result=app.tasks[name].ignore_result,
        create_sent_event=conf.task_send_sent_event)
    content_type, encoding, body = dumps(message.body, serializer=conf.task_serializer)
    if priority is None:
        priority = conf.task_default_priority
    envelope = {
        "body": base64.b64encode(body.encode() if isinstance(body, str) else body).decode(),
        "content-encoding": encoding,
        "content-type": content_type,
        "headers": message.headers,
        "properties": {
            **message.properties,
            "delivery_mode": PERSISTENT,
            "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": priority,
            "body_encoding": "base64",
            "delivery_tag": str(uuid.uuid4()),
        },
    }
    options = conf.broker_transport_options
    steps = options.get("priority_steps", Channel.priority_steps)
    step = steps[bisect(steps, priority) - 1]
    key = f"{queue}{options.get('sep', Channel.sep)}{step}" if step else queue
    return [("LPUSH", key, json.dumps(envelope))]
