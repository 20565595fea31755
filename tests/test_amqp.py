"""RabbitMQ as the broker, where it differs from Redis (core/amqp.py): arq refuses it in
one line, and a message the broker never took leaves no record PENDING. Neither needs
RabbitMQ to run: they are tested in every backend's run."""

from __future__ import annotations

import pytest

from core.errors import Unavailable
from core.loader import adapter_module
from core.procs import free_port
from core.settings import Settings
from core.states import TaskState
from tests.test_conformance import _cli


@pytest.mark.parametrize("command", ["serve", "worker", "scheduler"])
def test_an_amqp_broker_for_a_backend_without_one_is_one_clear_line(
        command: str, backend_name: str, redis_url: str) -> None:
    if "amqp" in adapter_module(backend_name).Backend.brokers:
        pytest.skip(f"{backend_name} runs on RabbitMQ (tests/test_conformance.py with "
                    "--broker rabbitmq)")
    done = _cli(command, "--backend", backend_name, REDIS_URL=redis_url,
                BROKER_URL="amqp://guest:guest@127.0.0.1:5672/")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "needs Redis as its broker" in lines[0], done.stderr
    assert "BROKER_URL" in lines[0]


def test_an_unreachable_rabbitmq_is_one_clear_line(backend_name: str, redis_url: str) -> None:
    if "amqp" not in adapter_module(backend_name).Backend.brokers:
        pytest.skip(f"{backend_name} needs Redis (the test above)")
    done = _cli("worker", "--backend", backend_name, REDIS_URL=redis_url,
                BROKER_URL=f"amqp://guest:guest@127.0.0.1:{free_port()}/")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "RabbitMQ does not answer" in lines[0], done.stderr


@pytest.mark.parametrize("producer", ["native", "library"])
async def test_a_publish_that_fails_ends_the_record_failure_not_pending(
        backend_name: str, redis_url: str, producer: str) -> None:
    if "amqp" not in adapter_module(backend_name).Backend.brokers:
        pytest.skip(f"{backend_name} needs Redis (the test above)")
    settings = Settings(redis_url=redis_url, broker_url=f"amqp://127.0.0.1:{free_port()}/",
                        producer=producer, history_enabled=False)
    backend = adapter_module(backend_name).Backend(settings)
    try:
        before = set(await backend.redis.keys("qb:task:*"))
        with pytest.raises(Exception) as raised:
            await backend.submit("add", [1, 2])
        if producer == "native":
            assert isinstance(raised.value, Unavailable)  # a 503 through the API
        [key] = set(await backend.redis.keys("qb:task:*")) - before
        record = await backend.get(key.decode().rsplit(":", 1)[-1])
        assert record.state is TaskState.FAILURE
        assert record.error is not None and record.error["type"], record.error
    finally:
        await backend.aclose()


def test_a_kombu_url_names_the_same_vhost_to_pika() -> None:
    from core.amqp import pika_url, shown

    assert pika_url("amqp://u:p@h:5672//") == "amqp://u:p@h:5672/%2F"
    assert pika_url("pyamqp://u:p@h:5672/qb") == "amqp://u:p@h:5672/qb"
    assert pika_url("amqp://u:p@h:5672/") == "amqp://u:p@h:5672/"
    assert shown("amqp://guest:secret@h:5672/qb") == "amqp://guest:***@h:5672/qb"
