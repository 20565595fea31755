"""Golden tests of the native producers on RabbitMQ (core/brokers/amqp.py, backends/*/wire.py):
the same task published by the library's own producer and by queuebench's, both
taken back from their queue with basic.get, compared field by field (body, headers,
properties, exchange and routing key; ids and timestamps aside: the native message
alone has an AMQP message_id, which aiormq needs, set to the task's id).

They need RabbitMQ: run with `--broker rabbitmq` (the session's own vhost); with the
Redis broker each case says so and skips. Each library's cases run in its own
backend's run, as in tests/test_wire.py; taskiq's in a vhost of their own, where they
also see taskiq's own worker run a natively published task and a countdown wait in its
queue's delay queue."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from core.brokers import delays
from core.brokers.amqp import Outgoing, Publisher, pika_url, scratch_vhost
from core.settings import Settings
from core.tasks.options import TaskOptions
from tests.conftest import amqp_base, redis_database, service_down
from tests.test_wire import (
    SHOWN,
    TASKIQ_CASES,
    WIRE_DB,
    _close,
    _only,
    taskiq_kiq,
    taskiq_same,
    taskiq_sent_and_run,
    taskiq_submission,
)

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


async def test_a_message_no_queue_takes_is_unavailable_not_a_silent_drop(
        amqp_url: str) -> None:
    """Published `mandatory`: RabbitMQ returns a message its exchange routes nowhere (a
    queue deleted after its declare), and the submit fails (a 503), its record FAILURE."""
    from core.errors import Unavailable

    nowhere = f"nowhere-{uuid.uuid4().hex[:8]}"
    for exchange in ("", "amq.topic"):
        with pytest.raises(Unavailable, match="NO_ROUTE"):
            await _native(amqp_url, lambda queue: None,
                          Outgoing(queue=nowhere, routing_key=nowhere, body=b"{}",
                                   exchange=exchange))


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


# -- taskiq: AsyncKicker.kiq through taskiq-aio-pika's AioPikaBroker -------------------

@pytest.fixture(scope="module")
def taskiq_vhost(request: pytest.FixtureRequest) -> Iterator[str]:
    """A vhost of these tests' own: a session's workers (the conformance suite's, in the
    same run) consume `taskiq.default` on the session's, and would take the messages."""
    if request.config.getoption("--broker") != "rabbitmq":
        pytest.skip("the AMQP wire format is tested with --broker rabbitmq")
    with contextlib.ExitStack() as stack:
        try:
            url = stack.enter_context(scratch_vhost(amqp_base(), "qb-taskiq-wire"))
        except (OSError, subprocess.SubprocessError) as exc:
            service_down(f"rabbitmqctl cannot make a vhost beside {amqp_base()}: {exc}")
        yield url


def _taskiq_settings(request: pytest.FixtureRequest, **more: Any) -> Settings:
    url = request.getfixturevalue("taskiq_vhost")
    return Settings(redis_url=redis_database(WIRE_DB, flush=True), broker_url=url,
                    history_enabled=False, **more)


def _named(queue: str | None) -> str | None:
    """The case's queue: None (the default one) or a fresh name of its own."""
    return queue and f"{queue}-{uuid.uuid4().hex[:8]}"


async def _depth(url: str, queue: str) -> int:
    import aio_pika

    connection = await aio_pika.connect(pika_url(url))
    try:
        found = await (await connection.channel()).get_queue(queue, ensure=True)
        return found.declaration_result.message_count
    finally:
        await connection.close()


# Long enough that the delayed message is still on the ladder's first rung when taken.
HELD = 30.0


def _delay_of(routing_key: str, queue: str) -> float:
    """The delay in seconds a ladder routing key for `queue` says (its bits)."""
    *bits, rest = routing_key.split(".", delays.LEVELS)
    assert rest == queue and set(bits) <= {"0", "1"}, routing_key
    return int("".join(bits), 2) / 1000


@pytest.mark.parametrize(("queue", "countdown"),
                         [(q, c and HELD) for q, c in TASKIQ_CASES])
async def test_taskiq_amqp_message_matches_kiq(backend_name: str, request: pytest.FixtureRequest,
                                               queue: str | None, countdown: float | None,
                                               ) -> None:
    """The taskiq exchange with the queue's name as routing key, or, delayed, the
    delay ladder's entry with the delay's bits before the queue's name."""
    _only(backend_name, "taskiq")
    settings = _taskiq_settings(request)
    url, queue = settings.broker, _named(queue)
    backend, record, arguments, options = taskiq_submission(settings, queue, countdown)
    target = f"taskiq.{queue or 'default'}"
    lands = delays.first_queue(countdown) if countdown else target
    try:
        await taskiq_kiq(backend, record, arguments, options, target, countdown)
        lib = await _taken(url, lands)
        await _native(url, backend.declare, backend.outgoing(record, arguments, options))
        nat = await _taken(url, lands)
    finally:
        await backend.aclose()
    if countdown:  # the native's delay: a float of its submit time
        keys = [m.pop("routing_key") for m in (lib, nat)]
        assert _delay_of(keys[0], target) == HELD
        assert _close(_delay_of(keys[1], target), HELD, 0.002), keys
        assert lib["exchange"] == delays.ENTRY
    else:
        assert (lib["exchange"], lib["routing_key"]) == ("taskiq", target)
    assert (lib["delivery_mode"], lib["expiration"]) == (2, None)
    # aio-pika gives each message a random AMQP message id, taskiq-aio-pika's and ours
    assert all(len(m.pop("message_id")) == 32 for m in (lib, nat))
    # added by the quorum queue on delivery, not sent
    assert [m["headers"].pop("x-delivery-count") for m in (lib, nat)] == [0, 0]
    assert lib["headers"] == {"task_id": record.delivery_id, "task_name": "add",
                              "queue_name": target, **({"delay": str(HELD)} if countdown else {})}
    header_delays = [m["headers"].pop("delay", None) for m in (lib, nat)]
    assert (header_delays[0] is None) == (header_delays[1] is None), header_delays
    if countdown:
        assert _close(float(header_delays[0]), float(header_delays[1]), 0.002), header_delays
    taskiq_same(json.loads(lib.pop("body")), json.loads(nat.pop("body")))
    assert nat == lib


@pytest.mark.parametrize("queue", [None, "named"])
@pytest.mark.parametrize("producer", ["native", "library"])
async def test_taskiq_amqp_countdown_climbs_down_the_ladder_then_lands_in_its_own_queue(
        backend_name: str, request: pytest.FixtureRequest, queue: str | None,
        producer: str) -> None:
    """A countdown waits on the delay ladder, once on each rung of a bit set in its
    milliseconds (1.5 s: the rungs of 1,024, 256, 128, 64, 16, 8 and 4 ms), then lands
    in its own queue, not the first one the broker was made with, not before it is due."""
    _only(backend_name, "taskiq")
    from backends.taskiq_impl import Backend

    settings = _taskiq_settings(request, producer=producer)
    url, queue, countdown = settings.broker, _named(queue), 1.5
    target = f"taskiq.{queue or 'default'}"
    backend = Backend(settings)
    try:
        sent = time.monotonic()
        record = await backend.submit("add", [1, 2], options=TaskOptions(
            queue=queue, countdown=countdown))
        assert (await _depth(url, delays.first_queue(countdown)), await _depth(url, target)
                ) == (1, 0)
        deadline = sent + countdown + 30
        while not await _depth(url, target):
            assert time.monotonic() < deadline, f"{target} never got its delayed message"
            await asyncio.sleep(0.02)
        waited = time.monotonic() - sent
    finally:
        await backend.aclose()
    assert waited >= countdown, waited
    landed = await _taken(url, target)
    assert _close(_delay_of(landed["routing_key"], target), countdown, 0.002)
    ms = delays.millis(_delay_of(landed["routing_key"], target))
    deaths = {death["queue"]: death["count"] for death in landed["headers"]["x-death"]}
    assert deaths == {delays.rung(k)[0][0]: 1 for k in range(delays.LEVELS) if ms >> k & 1}
    assert json.loads(landed["body"])["args"][1]["task_id"] == record.id


async def _after_a_longer_countdown(url: str, backend: Any, queue: str,
                                    send: Callable[[], Awaitable[None]]) -> dict[str, Any]:
    """The message `send` puts in `taskiq.<queue>`, sent just after a countdown of HELD
    to the same queue, taken once it lands (within 10 s): the only one there."""
    target = f"taskiq.{queue}"
    try:
        held = backend.prepare("add", [1, 2], None, TaskOptions(queue=queue, countdown=HELD),
                               time.time())
        await _native(url, backend.declare, backend.outgoing(*held))
        await send()
        deadline = time.monotonic() + 10
        while not await _depth(url, target):
            assert time.monotonic() < deadline, f"nothing landed in {target}"
            await asyncio.sleep(0.02)
    finally:
        await backend.aclose()
    return await _taken(url, target)


async def test_taskiq_amqp_short_countdown_is_not_held_behind_a_longer_one(
        backend_name: str, request: pytest.FixtureRequest) -> None:
    """A countdown of 0.5 s sent after one of 30 s on the same queue lands first, in
    about 0.5 s: taskiq-aio-pika's delay queue would hold it behind the longer one at
    its head (RabbitMQ expires a queue's head only)."""
    _only(backend_name, "taskiq")
    settings = _taskiq_settings(request)
    url, queue = settings.broker, _named("order")
    backend, record, arguments, options = taskiq_submission(settings, queue, 0.5)
    landed = await _after_a_longer_countdown(url, backend, queue, lambda: _native(
        url, backend.declare, backend.outgoing(record, arguments, options)))
    assert json.loads(landed["body"])["task_id"] == record.delivery_id


async def test_taskiq_amqp_retry_due_at_once_is_not_held_behind_a_countdown(
        backend_name: str, request: pytest.FixtureRequest) -> None:
    """taskiq's retry middleware labels every retry with its delay, 0 for a backoff of
    0: such a kick goes straight to its queue, at once."""
    _only(backend_name, "taskiq")
    settings = _taskiq_settings(request)
    url, queue = settings.broker, _named("retry")
    backend, record, arguments, options = taskiq_submission(settings, queue, None)
    landed = await _after_a_longer_countdown(url, backend, queue, lambda: taskiq_kiq(
        backend, record, arguments, options, f"taskiq.{queue}", 0.0))
    assert (landed["exchange"], landed["routing_key"]) == ("taskiq", f"taskiq.{queue}")
    assert json.loads(landed["body"])["task_id"] == record.delivery_id


@pytest.mark.parametrize(("queue", "countdown"), [(q, c and 1.5) for q, c in TASKIQ_CASES])
async def test_taskiq_amqp_worker_runs_a_natively_published_task(
        backend_name: str, request: pytest.FixtureRequest, queue: str | None,
        countdown: float | None) -> None:
    """Published by the native producer, run by taskiq's own Receiver on the adapter's
    worker broker (a quorum queue): not before its countdown."""
    _only(backend_name, "taskiq")
    await taskiq_sent_and_run(_taskiq_settings(request), _named(queue), countdown, "amqp")


async def test_taskiq_kicks_to_a_new_queue_and_a_known_one_at_once_each_land_in_their_own(
        backend_name: str, request: pytest.FixtureRequest) -> None:
    """taskiq's own producer (the client's AioPikaBroker) declares a queue on its first
    message; a kick meanwhile to a queue it knows is routed by that queue, not by
    whatever the declaring kick is in the middle of (the client knowing one queue routes
    every message there, whatever its label)."""
    _only(backend_name, "taskiq")
    from backends.taskiq_impl import Backend

    settings = _taskiq_settings(request, producer="library")
    url, new = settings.broker, _named("new")
    backend = Backend(settings)

    async def enqueue(queue: str | None) -> None:
        record, arguments, options = backend.prepare("add", [1, 2], None,
                                                      TaskOptions(queue=queue), time.time())
        await backend.enqueue(record, arguments, options)

    try:
        await enqueue(None)  # the client made, knowing the default queue alone
        await asyncio.gather(enqueue(new), enqueue(None))
    finally:
        await backend.aclose()
    assert (await _depth(url, "taskiq.default"), await _depth(url, f"taskiq.{new}")) == (2, 1)
