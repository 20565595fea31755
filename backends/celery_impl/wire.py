"""Celery's task message, as the native producer sends it: on kombu's Redis transport
as Redis commands (`task_commands`), on RabbitMQ as an AMQP message (`task_outgoing`).

The message is Celery's own: protocol 2 headers, properties and body from
`app.amqp.as_task_v2`, the body serialized by kombu's serializer registry. Around it
goes what kombu's virtual transport adds when it publishes (`prepare_message`, then
`Channel._inplace_augment_message`: a base64 body, a delivery tag, the delivery info
of the anonymous direct exchange), and it is pushed as kombu's Redis transport's
`_put` does: LPUSH on the queue's list, or on `<queue><sep><step>` for a priority
step above 0. tests/test_wire.py compares it, field by field, with what
`apply_async` writes, for every option combination. On RabbitMQ, kombu's py-amqp
transport sends the same headers, properties and body as they are, to the anonymous
exchange with the queue's name as routing key (Celery's `send_task_message`); the
AMQP `message_id` property, which kombu leaves unset, is the task's id (aiormq needs
one on every message it publishes). tests/test_wire_amqp.py compares both messages
as RabbitMQ hands them out.
"""

from __future__ import annotations

import base64
import functools
import uuid
from bisect import bisect
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from celery import Celery
from celery.utils.saferepr import saferepr
from kombu.serialization import dumps
from kombu.transport.redis import Channel
from pydantic_core import to_json

from core.brokers.amqp import PERSISTENT, Outgoing
from core.store.records import Command, TaskRecord


@dataclass(frozen=True)
class _Conf:
    """What the message's making reads of the app's configuration, read once: a
    Celery setting is a lookup through several mappings each time."""

    repr_levels: int
    args_size: int
    kwargs_size: int
    sent_event: bool
    serializer: str
    priority: int | None
    steps: list[int]
    sep: str


@functools.cache
def _conf(app: Celery) -> _Conf:
    conf, options = app.conf, app.conf.broker_transport_options
    return _Conf(conf.task_repr_maxlevels, app.amqp.argsrepr_maxsize,
                 app.amqp.kwargsrepr_maxsize, conf.task_send_sent_event,
                 conf.task_serializer, conf.task_default_priority,
                 options.get("priority_steps", Channel.priority_steps),
                 options.get("sep", Channel.sep))


def shown(app: Celery, record: TaskRecord) -> dict[str, str]:
    """The message's `argsrepr` and `kwargsrepr`: what Flower and Celery's events show
    as the task's arguments. The arguments as the client gave them, by Celery's
    saferepr: not the (arguments, policy) pair the message carries (core's), whose repr
    would show the policy too and cost most of the message's making."""
    conf = _conf(app)
    return {"argsrepr": saferepr(tuple(record.args), conf.args_size,
                                 maxlevels=conf.repr_levels) if record.args else "()",
            "kwargsrepr": saferepr(record.kwargs, conf.kwargs_size,
                                   maxlevels=conf.repr_levels) if record.kwargs else "{}"}


def _message(app: Celery, name: str, args: tuple[Any, ...], task_id: str,
             countdown: float | None, eta: datetime | None, time_limit: float | None,
             soft_time_limit: float | None, argsrepr: str | None,
             kwargsrepr: str | None) -> tuple[Any, str, str, bytes]:
    """Celery's protocol 2 message, and its content type, encoding and serialized body."""
    conf = _conf(app)
    message = app.amqp.as_task_v2(
        task_id, name, args, {}, countdown=countdown, eta=eta, time_limit=time_limit,
        soft_time_limit=soft_time_limit, reply_to=app.thread_oid,
        ignore_result=app.tasks[name].ignore_result, create_sent_event=conf.sent_event,
        argsrepr=argsrepr, kwargsrepr=kwargsrepr)
    content_type, encoding, body = dumps(message.body, serializer=conf.serializer)
    return message, content_type, encoding, body.encode() if isinstance(body, str) else body


def task_outgoing(app: Celery, name: str, args: tuple[Any, ...], *, task_id: str,
                  queue: str, priority: int | None = None, countdown: float | None = None,
                  eta: datetime | None = None, time_limit: float | None = None,
                  soft_time_limit: float | None = None, argsrepr: str | None = None,
                  kwargsrepr: str | None = None) -> Outgoing:
    message, content_type, encoding, body = _message(
        app, name, args, task_id, countdown, eta, time_limit, soft_time_limit, argsrepr,
        kwargsrepr)
    priority = _conf(app).priority if priority is None else priority
    return Outgoing(queue=queue, routing_key=queue, body=body, headers=message.headers,
                    properties={**message.properties, "content_type": content_type,
                                "content_encoding": encoding, "delivery_mode": PERSISTENT,
                                "priority": priority, "message_id": task_id})


def task_commands(app: Celery, name: str, args: tuple[Any, ...], *, task_id: str,
                  queue: str, priority: int | None = None, countdown: float | None = None,
                  eta: datetime | None = None, time_limit: float | None = None,
                  soft_time_limit: float | None = None, argsrepr: str | None = None,
                  kwargsrepr: str | None = None) -> list[Command]:
    conf = _conf(app)
    message, content_type, encoding, body = _message(
        app, name, args, task_id, countdown, eta, time_limit, soft_time_limit, argsrepr,
        kwargsrepr)
    if priority is None:
        priority = conf.priority
    envelope = {
        "body": base64.b64encode(body).decode(),
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
            # apply_async hands its argsrepr and kwargsrepr on to the publish too,
            # which kombu's virtual transport keeps as properties (py-amqp drops them)
            **{k: v for k, v in (("argsrepr", argsrepr), ("kwargsrepr", kwargsrepr))
               if v is not None},
        },
    }
    step = conf.steps[bisect(conf.steps, priority) - 1]
    key = f"{queue}{conf.sep}{step}" if step else queue
    return [("LPUSH", key, to_json(envelope))]  # (pydantic-core: a third of json.dumps)
