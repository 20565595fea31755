"""Dramatiq alone: its client, its worker (one process of N threads per worker
command), results kept by its Results middleware in Redis; its Redis broker, or its
RabbitMQ broker (confirmed deliveries, as queuebench's adapter) for
RAW_BROKER_URL=amqp://. `peer_job` is steventen/python_queue_benchmark's job
(bench/peers.py): Dramatiq's defaults, no result."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.redis import RedisBroker
from dramatiq.results import ResultMissing, Results, ResultTimeout
from dramatiq.results.backends import RedisBackend

from bench import workloads

URL = os.environ.get("RAW_REDIS_URL", "redis://127.0.0.1:6379/9")
BROKER = os.environ.get("RAW_BROKER_URL") or URL
# RAW_VISIBILITY_TIMEOUT (seconds): the Redis broker's heartbeat_timeout, after which a
# worker that has not beaten is taken for dead and its messages requeued (default 60 s).
_timeout = {"heartbeat_timeout": int(os.environ["RAW_VISIBILITY_TIMEOUT"]) * 1000} \
    if os.environ.get("RAW_VISIBILITY_TIMEOUT") else {}
broker: dramatiq.Broker = RabbitmqBroker(url=BROKER, confirm_delivery=True) \
    if BROKER.startswith("amqp") else RedisBroker(url=BROKER, **_timeout)
broker.add_middleware(Results(backend=RedisBackend(url=URL)))
dramatiq.set_broker(broker)


@dramatiq.actor(actor_name="noop", max_retries=0, store_results=True)
def noop(payload: Any = None) -> list[float]:
    started = time.time()
    workloads.noop(payload)
    return [started, time.time(), os.getpid()]


@dramatiq.actor(actor_name="sleep", max_retries=0, store_results=True)
def sleep(seconds: float) -> list[float]:
    started = time.time()
    workloads.sleep_sync(seconds)
    return [started, time.time(), os.getpid()]


@dramatiq.actor(actor_name="cpu", max_retries=0, store_results=True)
def cpu(n: int) -> list[float]:
    started = time.time()
    workloads.cpu(n)
    return [started, time.time(), os.getpid()]


@dramatiq.actor(actor_name="counted", max_retries=0)
def counted(key: str, seconds: float) -> float:
    return workloads.counted_sync(key, seconds)


@dramatiq.actor(actor_name="peer_job")
def peer_job(num: int) -> None:
    print(f"Job {num} finished at {time.time()}")


ACTORS = {"noop": noop, "sleep": sleep, "cpu": cpu, "peer_job": peer_job}


def worker_command(concurrency: int | None) -> tuple[str, list[str], dict[str, str]]:
    """(module, arguments, environment) of one worker process with `concurrency` slots;
    None: `dramatiq` as a new user starts it (a process per CPU, 8 threads each)."""
    if concurrency is None:
        return "dramatiq", ["bench.raw.dramatiq_app"], {}
    # as queuebench's adapter: a process holds no more messages than it has threads
    return "dramatiq", ["bench.raw.dramatiq_app", "--processes", "1",
                        "--threads", str(concurrency)], \
        {"dramatiq_queue_prefetch": str(concurrency)}


class Client:
    """Dramatiq's own producer: `actor.send`, blocking."""

    def submit(self, workload: str, arg: Any) -> dramatiq.Message[Any]:
        """Blocking: the benchmark calls it on a thread pool, off its event loop."""
        return ACTORS[workload].send(arg)

    def counted(self, key: str, seconds: float, countdown: float = 0
                ) -> dramatiq.Message[Any]:
        """`counted` (bench/workloads.py), to run `countdown` seconds from now."""
        return counted.send_with_options(args=(key, seconds),
                                         delay=int(countdown * 1000) or None)

    def done(self, handle: dramatiq.Message[Any]) -> bool:
        try:
            handle.get_result(block=False)
        except ResultMissing:
            return False
        except Exception:  # failed: done all the same
            return True
        return True

    async def outcomes(self, handles: list[dramatiq.Message[Any]], quiet: float
                       ) -> list[tuple[bool, float, float, Any] | None]:
        return await asyncio.to_thread(self._outcomes, handles, quiet)

    def _outcomes(self, handles: list[dramatiq.Message[Any]], quiet: float
                  ) -> list[tuple[bool, float, float, Any] | None]:
        out: list[tuple[bool, float, float, Any] | None] = []
        for message in handles:
            try:
                started, finished, *pid = message.get_result(block=True, timeout=int(quiet * 1000))
                out.append((True, started, finished, pid[0] if pid else None))
            except ResultTimeout:
                out.append(None)
                quiet = 0.1  # the rest had as long: no more waiting
            except Exception:  # the actor raised: a result of failure
                out.append((False, 0.0, 0.0, None))
        return out

    async def aclose(self) -> None:
        broker.close()
