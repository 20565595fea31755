"""Golden tests of the native producers on RabbitMQ (core/brokers/amqp.py, backends/*/wire.py):
the same task published by the library's own producer and by queuebench's, both
taken back from their queue with basic.get, compared field by field (body, headers,
properties, exchange and routing key; ids and timestamps aside: the native message
alone has an AMQP message_id, which aiormq needs, set to the task's id).

They need RabbitMQ: run with `--broker rabbitmq` (the session's own vhost); with the
Redis broker each case says so and skips. Each library's cases run in its own
backend's run, as in tests/test_wire.py."""

from __future__ import annotations

import itertools
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from core.brokers.amqp import Outgoing, Publisher, pika_url
from core.settings import Settings
from tests.conftest import redis_database
from tests.test_wire import SHOWN, WIRE_DB, _close, _only

SOON = datetime.now(UTC) + timedelta(minutes=5)
PROPERTIES = ("content_type", "content_encoding", "delivery_mode", "priority",
              "correlation_id", "reply_to", "expiration", "message_id", "type", "user_id",
              "app_id")


@pytest.fixture
def amqp_url(request: pytest.FixtureRequest, broker_url: str) -> str:
    if request.config.getoption("--broker") != "rabbitmq":
        pytest.skip("the AMQP wire format is tested with --broker rabbitmq")
    return broker_url


async def _taken(url: str, queue: str) -> dict[str, Any]:
    """The one message in `queue`, taken with basic.get, as plain fields."""
    import aio_pika

    connection = await aio_pika.connect(pika_url(url))
    try:
        channel = await connection.channel()
        found = await channel.get_queue(queue, ensure=True)
        message = await found.get(no_ack=True, fail=True)
        assert message is not None
        assert await found.get(no_ack=True, fail=False) is None, f"{queue} held two"
        return {"body": message.body, "headers": dict(message.headers or {}),
                "exchange": message.exchange, "routing_key": message.routing_key,
                **{name: getattr(message, name) for name in PROPERTIES}}
    finally:
        await connection.close()


async def _native(url: str, declare: Any, outgoing: Outgoing) -> None:
    publisher = Publisher(url, declare)
    try:
        await publisher.publish(outgoing)
    finally:
        await publisher.aclose()


# -- Celery: kombu's py-amqp transport, protocol 2 -------------------------------------------

CELERY_CASES = list(itertools.product(
    [None, 0, 9],                    # AMQP priority (after the adapter's mapping)
    [None, 2.5],                     # countdown
    [None, SOON],                    # eta
    [None, (3.0, 13.0)],             # soft, hard time limit
))


@pytest.mark.parametrize(("priority", "countdown", "eta", "limits"), CELERY_CASES)
async def test_celery_amqp_message_matches_apply_async(
        backend_name: str, amqp_url: str, priority: int | None, countdown: float | None,
        eta: datetime | None, limits: tuple[float, float] | None) -> None:
    _only(backend_name, "celery")
    from backends.celery_impl import Backend
    from backends.celery_impl.app import celery_app
    from backends.celery_impl.wire import shown, task_outgoing

    settings = Settings(redis_url=redis_database(WIRE_DB, flush=True), broker_url=amqp_url)
    app, queue = celery_app(settings), f"w-{uuid.uuid4().hex[:8]}"
    args = ({"x": 1.5, "y": [1, "é", None]}, {"task_id": "t", "max_retries": 2})
    soft, hard = limits or (None, None)
    extra: dict[str, Any] = {} if priority is None else {"priority": priority}
    reprs = shown(app, SHOWN)  # the adapter's argsrepr and kwargsrepr
    extra.update(reprs)
    app.tasks["add"].apply_async(args, task_id="lib", queue=queue, countdown=countdown,
                                 eta=eta, soft_time_limit=soft, time_limit=hard, **extra)
    lib = await _taken(amqp_url, queue)
    backend = Backend(settings)
    try:
        await _native(amqp_url, backend.declare, task_outgoing(
            app, "add", args, task_id="nat", queue=queue, priority=priority,
            countdown=countdown, eta=eta, time_limit=hard, soft_time_limit=soft, **reprs))
    finally:
        await backend.aclose()
    nat = await _taken(amqp_url, queue)
    assert (lib["headers"]["id"], nat["headers"]["id"]) == ("lib", "nat")
    # kombu sets no AMQP message id; aiormq needs one: the task's
    assert (lib.pop("message_id"), nat.pop("message_id")) == (None, "nat")
    etas = []
    for message in (lib, nat):
        message["body"] = json.loads(message["body"])
        message["correlation_id"] = message["headers"]["id"] = message["headers"]["root_id"] = "id"
        eta_header = message["headers"].pop("eta")
        etas.append(eta_header and datetime.fromisoformat(eta_header).timestamp())
    assert (etas[0] is None) == (etas[1] is None)
    if etas[0] is not None:
        assert _close(etas[0], etas[1], 1.0)
    assert nat == lib
    assert lib["priority"] == (5 if priority is None else priority)


# -- Dramatiq: RabbitmqBroker.enqueue ----------------------------------------------------

DRAMATIQ_CASES = list(itertools.product(
    [None, 2500], [{}, {"max_retries": 3, "time_limit": 4000}]))


@pytest.mark.parametrize(("delay_ms", "options"), DRAMATIQ_CASES)
async def test_dramatiq_amqp_message_matches_broker_enqueue(
        backend_name: str, amqp_url: str, delay_ms: int | None,
        options: dict[str, Any]) -> None:
    _only(backend_name, "dramatiq")
    from dramatiq import Message
    from dramatiq.common import dq_name

    from backends.dramatiq_impl import Backend
    from backends.dramatiq_impl.actors import broker
    from backends.dramatiq_impl.wire import message_outgoing

    settings = Settings(redis_url=redis_database(WIRE_DB, flush=True), broker_url=amqp_url)
    queue = f"w-{uuid.uuid4().hex[:8]}"
    made = broker(settings)
    message = Message(queue_name=queue, actor_name="add", args=({"x": 1, "y": 2}, {}),
                      kwargs={}, options=options, message_id=str(uuid.uuid4()))
    made.enqueue(message, delay=delay_ms)
    lands = dq_name(queue) if delay_ms is not None else queue
    lib = await _taken(amqp_url, lands)
    backend = Backend(settings)
    try:
        await _native(amqp_url, backend.declare, message_outgoing(message, delay_ms))
    finally:
        await backend.aclose()
    nat = await _taken(amqp_url, lands)
    # pika sets no AMQP message id; aiormq needs one: Dramatiq's own
    assert (lib.pop("message_id"), nat.pop("message_id")) == (None, message.message_id)
    lib["body"], nat["body"] = json.loads(lib["body"]), json.loads(nat["body"])
    if delay_ms is not None:
        assert _close(lib["body"]["options"].pop("eta"), nat["body"]["options"].pop("eta"),
                      1000)
    assert nat == lib
    assert (lib["routing_key"], lib["delivery_mode"]) == (lands, 2)
