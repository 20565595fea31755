"""taskiq alone: its client (`kiq`), its worker (`taskiq worker bench.raw.taskiq_app:broker`:
a parent that starts and watches N child processes, each an event loop of
--max-async-tasks slots, sync work (cpu) on taskiq's thread pool), results kept by
taskiq-redis's RedisAsyncResultBackend.

Broker: taskiq-redis's RedisStreamBroker, its at-least-once choice: entries read through
a consumer group stay pending until the worker acks them, after the result is saved
(ListQueueBroker's BRPOP takes a message away for good; PubSubBroker sends each to every
worker). On RAW_BROKER_URL=amqp://, taskiq-aio-pika's AioPikaBroker (publisher confirms).
`safe` (RAW_CONFIG): the group reads the stream from its start (consumer_id "0", as
queuebench's adapter: a group made after messages arrived still reads them; taskiq's "$"
would skip them), and a worker process takes RAW_SLOTS messages a read (XREADGROUP COUNT,
or the RabbitMQ prefetch) for its RAW_SLOTS slots. `defaults`: taskiq's own (a read of 100,
qos 10, 2 processes of 100 slots). RAW_RESULT_EX_TIME: seconds a result is kept (default:
until the session flushes Redis); RAW_RESULTS=none: no result backend. `peer_job` is the
public comparisons' job (bench/peers.py)."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from taskiq import AsyncBroker, AsyncTaskiqDecoratedTask, AsyncTaskiqTask
from taskiq.exceptions import TaskiqResultTimeoutError

from bench import workloads

URL = os.environ.get("RAW_REDIS_URL", "redis://127.0.0.1:6379/9")
BROKER = os.environ.get("RAW_BROKER_URL") or URL
SAFE = os.environ.get("RAW_CONFIG", "safe") == "safe"
SLOTS = int(os.environ.get("RAW_SLOTS", "8"))


def make_broker() -> AsyncBroker:
    """The broker a taskiq user on BROKER picks, with the result backend on URL."""
    made: AsyncBroker
    if BROKER.startswith("amqp"):
        from taskiq_aio_pika import AioPikaBroker

        made = AioPikaBroker(BROKER, qos=SLOTS) if SAFE else AioPikaBroker(BROKER)
    else:
        from taskiq_redis import RedisStreamBroker

        made = RedisStreamBroker(BROKER, consumer_id="0", xread_count=SLOTS) if SAFE \
            else RedisStreamBroker(BROKER)
    if os.environ.get("RAW_RESULTS") == "none":
        return made
    from taskiq_redis import RedisAsyncResultBackend

    keep = os.environ.get("RAW_RESULT_EX_TIME")
    return made.with_result_backend(
        RedisAsyncResultBackend(URL, result_ex_time=int(keep) if keep else None))


broker = make_broker()


@broker.task(task_name="noop")
async def noop(payload: Any = None) -> list[float]:
    started = time.time()
    workloads.noop(payload)
    return [started, time.time(), os.getpid()]


@broker.task(task_name="sleep")
async def sleep(seconds: float) -> list[float]:
    started = time.time()
    await workloads.sleep_async(seconds)
    return [started, time.time(), os.getpid()]


@broker.task(task_name="cpu")
def cpu(n: int) -> list[float]:
    """Sync: the worker runs it on its thread pool, as taskiq runs every sync task."""
    started = time.time()
    workloads.cpu(n)
    return [started, time.time(), os.getpid()]


@broker.task(task_name="counted")
async def counted(key: str, seconds: float) -> float:
    return await workloads.counted_async(key, seconds)


@broker.task(task_name="peer_job")
async def peer_job(num: int) -> None:
    print(f"Job {num} finished at {time.time()}")


TASKS: dict[str, AsyncTaskiqDecoratedTask[Any, Any]] = {
    "noop": noop, "sleep": sleep, "cpu": cpu, "peer_job": peer_job}


def worker_command(concurrency: int | None) -> tuple[str, list[str], dict[str, str]]:
    """(module, arguments, environment) of one worker command with `concurrency` slots in
    one child process; None: `taskiq worker` as a new user starts it (2 child processes of
    100 slots each)."""
    args = ["worker", "bench.raw.taskiq_app:broker",
            "--log-level", os.environ.get("LOG_LEVEL", "WARNING")]
    if concurrency is None:
        return "taskiq", args, {}
    return "taskiq", [*args, "--workers", "1", "--max-async-tasks", str(concurrency)], \
        {"RAW_SLOTS": str(concurrency)}


class Client:
    """taskiq's own producer: `kiq` on the task, after one `broker.startup()` (which on
    Redis also creates the consumer group, so a worker started later reads the burst)."""

    def __init__(self) -> None:
        self._started: asyncio.Task[None] | None = None

    async def submit(self, workload: str, arg: Any) -> AsyncTaskiqTask[Any]:
        if self._started is None:  # once, however many submit calls wait on it
            self._started = asyncio.ensure_future(broker.startup())
        await self._started
        return await TASKS[workload].kiq(arg)

    async def counted(self, key: str, seconds: float, countdown: float = 0
                      ) -> AsyncTaskiqTask[Any]:
        """`counted` (bench/workloads.py); taskiq has no countdown without its scheduler
        process (a schedule source), so `countdown` must be 0."""
        if countdown:
            raise ValueError("taskiq alone has no countdown (it needs a scheduler)")
        if self._started is None:
            self._started = asyncio.ensure_future(broker.startup())
        await self._started
        return await counted.kiq(key, seconds)

    async def done(self, handle: AsyncTaskiqTask[Any]) -> bool:
        return await handle.is_ready()

    async def outcomes(self, handles: list[AsyncTaskiqTask[Any]], quiet: float
                       ) -> list[tuple[bool, float, float, Any] | None]:
        out: list[tuple[bool, float, float, Any] | None] = []
        for task in handles:
            try:
                result = await task.wait_result(check_interval=0.1, timeout=quiet)
            except TaskiqResultTimeoutError:
                out.append(None)
                quiet = 0.1  # the rest had as long: no more waiting
                continue
            if result.is_err:
                out.append((False, 0.0, 0.0, None))
            else:
                started, finished, *pid = result.return_value
                out.append((True, started, finished, pid[0] if pid else None))
        return out

    async def aclose(self) -> None:
        if self._started is not None:
            await broker.shutdown()
