"""The delay ladder's arithmetic (core/brokers/delays.py), without a broker: the
routing key spells the delay's milliseconds, highest bit first, then the queue; each
rung's queues hold 2^k ms in all, none past RabbitMQ's timer bound. The ladder on a
real RabbitMQ is in tests/test_wire_amqp.py (taskiq's countdowns) and the conformance
suite (`--broker rabbitmq`)."""

from __future__ import annotations

import pytest

from core.brokers import delays
from core.tasks.options import MAX_SECONDS


def test_the_routing_key_spells_the_delay_in_milliseconds_then_the_queue() -> None:
    key = delays.routing_key(1.5, "taskiq.default")
    *bits, queue = key.split(".", delays.LEVELS)
    assert queue == "taskiq.default" and len(bits) == delays.LEVELS
    assert int("".join(bits), 2) == 1500
    assert delays.first_queue(1.5) == "qb.delay.10"  # 1,024 ms: its top bit


def test_a_delay_is_never_shortened_by_the_rounding() -> None:
    assert delays.millis(1.1) == 1100  # 1100.0000000000002 as a float product
    assert delays.millis(0.0001) == 1
    assert delays.millis(0.0015) == 2


@pytest.mark.parametrize("delay", [0.0, -1.0, 2**delays.LEVELS / 1000])
def test_a_delay_outside_the_ladder_is_refused(delay: float) -> None:
    with pytest.raises(ValueError, match="ladder"):
        delays.routing_key(delay, "q")


def test_the_ladder_reaches_the_longest_delay_a_submission_may_ask() -> None:
    assert delays.millis(MAX_SECONDS) < 2**delays.LEVELS
    delays.routing_key(MAX_SECONDS, "q")


def test_each_rung_holds_its_bit_and_no_queue_outlasts_the_timer_bound() -> None:
    for k in range(delays.LEVELS):
        queues = delays.rung(k)
        assert sum(ttl for _, ttl in queues) == 2**k
        assert all(ttl <= delays.LONGEST_TTL < 2**32 for _, ttl in queues)
        assert len({name for name, _ in queues}) == len(queues)
    assert [name for name, _ in delays.rung(33)] == [f"qb.delay.33.{i}" for i in range(4)]
