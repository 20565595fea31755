"""The adapter contract (core/backend.py) and the producer each backend instance
chooses once (core/brokers/producer.py), for the backend under test."""

from __future__ import annotations

import importlib.util

import pytest

from core.backend import TaskBackend, backend_class
from core.errors import ConfigError
from core.settings import BACKENDS, Settings
from core.tasks.features import Support


def _gives(adapter: type[TaskBackend], method: str) -> bool:
    """Whether `adapter` defines `method` itself, rather than TaskBackend's default."""
    own = adapter.__mro__[:adapter.__mro__.index(TaskBackend)]
    return any(method in vars(cls) for cls in own)


def test_the_adapter_gives_the_whole_contract(backend_name: str) -> None:
    """What the CLI and the native producers call exists on the adapter's class: a
    worker, its default concurrency, the Redis wire, RabbitMQ's message where it
    speaks RabbitMQ, and its own scheduler exactly where it claims periodic NATIVE."""
    adapter = backend_class(backend_name)
    assert adapter.name == backend_name
    for method in ("run_worker", "default_concurrency", "enqueue", "commands"):
        assert _gives(adapter, method), f"{backend_name} lacks {method}"
    assert adapter.default_concurrency(4) >= 1
    speaks_amqp = "amqp" in adapter.brokers
    assert _gives(adapter, "outgoing") == speaks_amqp
    assert _gives(adapter, "declare") == speaks_amqp
    native = adapter.support()["periodic"] is Support.NATIVE
    assert _gives(adapter, "run_native_scheduler") == native


@pytest.mark.parametrize(("producer", "broker", "kind"), [
    ("native", "same", "script"),
    ("native", "other-redis", "library"),
    ("native", "amqp", "amqp"),
    ("library", "same", "library"),
    ("library", "amqp", "library"),
])
async def test_the_producer_follows_the_settings(backend_name: str, redis_url: str,
                                                 producer: str, broker: str,
                                                 kind: str) -> None:
    """PRODUCER=native sends the message inside the record's script when the broker
    is REDIS_URL, publishes it when the broker is RabbitMQ (for an adapter that speaks
    it); anything else goes through the library's own client. A redelivery is sent
    by `send`: the library's client but on RabbitMQ's native producer."""
    adapter = backend_class(backend_name)
    if kind == "amqp" and "amqp" not in adapter.brokers:
        kind = "library"
    url = {"same": redis_url, "other-redis": redis_url.rsplit("/", 1)[0] + "/0",
           "amqp": "amqp://guest:guest@127.0.0.1:5672/"}[broker]
    backend = adapter(Settings(redis_url=redis_url, broker_url=url, producer=producer,
                               history_enabled=False))
    try:
        chosen = backend.producer
        assert chosen.kind == kind
        assert (chosen.commands is not None) == (kind == "script")
        assert (chosen.publisher is not None) == (kind == "amqp")
        assert (chosen.send == backend.enqueue) == (kind != "amqp")
    finally:
        await backend.aclose()


def test_backend_class_refuses_in_one_line(backend_name: str) -> None:
    with pytest.raises(ConfigError, match=r"is not one of: celery, arq, dramatiq, taskiq$"):
        backend_class("rq")
    # Each adapter is named after the library it imports first.
    missing = [name for name in BACKENDS if importlib.util.find_spec(name) is None]
    if not missing:
        pytest.skip("every backend's library is installed here")
    with pytest.raises(ConfigError, match=rf"not installed here .*queuebench\[{missing[0]}\]"):
        backend_class(missing[0])


async def test_a_broker_core_cannot_look_into_holds_pending_tasks_not_retries() -> None:
    """RabbitMQ keeps a confirmed message; a retry's may never have gone (published as
    the broker restarted), so the reaper sends an overdue RETRY task again (seen lost on
    Celery and taskiq by the chaos harness, which this rule keeps from happening)."""
    from core.states import TaskState
    from core.store.records import TaskRecord, new_task_id

    class Opaque:
        async def waiting_in(self, queue: str) -> set[str] | None:
            return None

    class Redis:
        async def waiting_in(self, queue: str) -> set[str] | None:
            return {retry.id}

    pending, retry = (TaskRecord(id=new_task_id(), name="add", backend="x", args=[1, 2],
                                 kwargs={}, state=state)
                      for state in (TaskState.PENDING, TaskState.RETRY))
    assert await TaskBackend.waiting(Opaque(), [pending, retry]) == {pending.id}  # type: ignore[arg-type]
    assert await TaskBackend.waiting(Redis(), [pending, retry]) == {retry.id}  # type: ignore[arg-type]
