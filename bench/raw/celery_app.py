"""Celery alone: its client, `celery worker` (threads pool, so in-flight tasks match the
other libraries), results in its Redis result backend; acks late and a prefetch of 1,
as queuebench's Celery adapter. RAW_CONFIG=defaults: Celery as a new user gets it
(prefork, prefetch 4 per child, acks early). `peer_job` is
steventen/python_queue_benchmark's job (bench/peers.py), with Celery's default early
acks as there."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from celery import Celery
from celery.result import AsyncResult

from bench import workloads

URL = os.environ.get("RAW_REDIS_URL", "redis://127.0.0.1:6379/9")
BROKER = os.environ.get("RAW_BROKER_URL") or URL  # RabbitMQ (amqp://) or the same Redis
app = Celery("rawbench", broker=BROKER, backend=URL)
app.conf.update(broker_connection_retry_on_startup=True, worker_hijack_root_logger=False)
if os.environ.get("RAW_CONFIG", "safe") == "safe":  # else Celery's defaults: early acks
    app.conf.update(task_acks_late=True, task_reject_on_worker_lost=True,
                    worker_prefetch_multiplier=1)
    # queuebench's adapter offers priority 0-9: on Redis the same ten lists, polled in
    # order; on RabbitMQ queues declared with x-max-priority.
    if BROKER.startswith("amqp"):
        app.conf.update(task_queue_max_priority=9)
    else:
        app.conf.update(broker_transport_options={"priority_steps": list(range(10)),
                                                  "queue_order_strategy": "priority"})
# RAW_VISIBILITY_TIMEOUT (seconds): kombu's Redis transport hands an unacked message
# (a countdown held by a worker included) to another worker after it (default 1 h),
# looking for such messages every unacked_restore_interval x unacked_restore_throttle
# (10 x 10 s by default: here 1 x 1).
if os.environ.get("RAW_VISIBILITY_TIMEOUT") and not BROKER.startswith("amqp"):
    app.conf.broker_transport_options = {
        **app.conf.broker_transport_options, "unacked_restore_interval": 1,
        "unacked_restore_throttle": 1,
        "visibility_timeout": int(os.environ["RAW_VISIBILITY_TIMEOUT"])}


@app.task(name="noop")
def noop(payload: Any = None) -> list[float]:
    started = time.time()
    workloads.noop(payload)
    return [started, time.time(), os.getpid()]


@app.task(name="sleep")
def sleep(seconds: float) -> list[float]:
    started = time.time()
    workloads.sleep_sync(seconds)
    return [started, time.time(), os.getpid()]


@app.task(name="cpu")
def cpu(n: int) -> list[float]:
    started = time.time()
    workloads.cpu(n)
    return [started, time.time(), os.getpid()]


@app.task(name="counted")
def counted(key: str, seconds: float) -> float:
    return workloads.counted_sync(key, seconds)


@app.task(name="peer_job", acks_late=False)
def peer_job(num: int) -> None:
    print(f"Job {num} finished at {time.time()}")


def worker_command(concurrency: int | None) -> tuple[str, list[str], dict[str, str]]:
    """(module, arguments, environment) of one worker process with `concurrency` slots;
    None: `celery worker` as a new user starts it (prefork, one child per CPU)."""
    level = f"--loglevel={os.environ.get('LOG_LEVEL', 'WARNING')}"
    if concurrency is None:
        return "celery", ["-A", "bench.raw.celery_app", "worker", level], {}
    return "celery", ["-A", "bench.raw.celery_app", "worker", "--pool", "threads",
                      f"--concurrency={concurrency}", "--without-gossip", "--without-mingle",
                      level], {}


class Client:
    """Celery's own producer: `apply_async`, blocking, as Celery users call it."""

    def submit(self, workload: str, arg: Any) -> AsyncResult:
        """Blocking: the benchmark calls it on a thread pool, off its event loop."""
        return app.tasks[workload].apply_async((arg,))

    def counted(self, key: str, seconds: float, countdown: float = 0) -> AsyncResult:
        """`counted` (bench/workloads.py), to run `countdown` seconds from now."""
        return counted.apply_async((key, seconds), countdown=countdown or None)

    def done(self, handle: AsyncResult) -> bool:
        return bool(handle.ready())

    async def outcomes(self, handles: list[AsyncResult], quiet: float
                       ) -> list[tuple[bool, float, float, Any] | None]:
        """(succeeded, started, finished) per handle; None for one that never finished."""
        return await asyncio.to_thread(self._outcomes, handles, quiet)

    def _outcomes(self, handles: list[AsyncResult], quiet: float
                  ) -> list[tuple[bool, float, float, Any] | None]:
        # Tasks finish in about the order they were sent: follow the oldest unfinished.
        waiting, moved = 0, time.monotonic()
        while waiting < len(handles) and time.monotonic() - moved < quiet:
            if handles[waiting].ready():
                waiting, moved = waiting + 1, time.monotonic()
            else:
                time.sleep(0.05)
        out: list[tuple[bool, float, float, Any] | None] = []
        for handle in handles:
            if handle.successful():
                started, finished, *pid = handle.result
                out.append((True, started, finished, pid[0] if pid else None))
            else:
                out.append((False, 0.0, 0.0, None) if handle.failed() else None)
        return out

    async def aclose(self) -> None:
        app.close()
