"""arq alone: its client, its Worker (`python -m bench.raw.arq_app`), results
kept by arq; the same poll delay as queuebench's arq adapter, max_jobs from
RAW_MAX_JOBS, sync work (cpu) in a thread as queuebench does it. `peer_job` is the
public comparisons' job (bench/peers.py), which polls at RAW_POLL_DELAY; RAW_PROCESSES
runs that many workers, started after import as `arq --workers N` of the arq fork that
streaq's benchmark ran starts them."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from arq import create_pool
from arq.connections import ArqRedis, RedisSettings
from arq.jobs import Job

from bench import workloads

URL = os.environ.get("RAW_REDIS_URL", "redis://127.0.0.1:6379/9")


async def noop(ctx: dict[str, Any], payload: Any = None) -> list[float]:
    started = time.time()
    workloads.noop(payload)
    return [started, time.time(), os.getpid()]


async def sleep(ctx: dict[str, Any], seconds: float) -> list[float]:
    started = time.time()
    await workloads.sleep_async(seconds)
    return [started, time.time(), os.getpid()]


async def cpu(ctx: dict[str, Any], n: int) -> list[float]:
    started = time.time()
    await asyncio.to_thread(workloads.cpu, n)
    return [started, time.time(), os.getpid()]


async def counted(ctx: dict[str, Any], key: str, seconds: float) -> float:
    return await workloads.counted_async(key, seconds)


async def peer_job(ctx: dict[str, Any], num: int) -> None:
    print(f"Job {num} finished at {time.time()}")


class WorkerSettings:
    functions = [noop, sleep, cpu, counted, peer_job]
    redis_settings = RedisSettings.from_dsn(URL)
    if os.environ.get("RAW_CONFIG", "safe") == "safe":  # else arq's defaults (10, 0.5 s)
        max_jobs = int(os.environ.get("RAW_MAX_JOBS", "8"))
        poll_delay = float(os.environ.get("RAW_POLL_DELAY", "0.05"))


def worker_command(concurrency: int | None) -> tuple[str, list[str], dict[str, str]]:
    """(module, arguments, environment) of one worker process with `concurrency` slots;
    None: arq's defaults (max_jobs 10, poll delay 0.5 s)."""
    return "bench.raw.arq_app", [], {} if concurrency is None else \
        {"RAW_MAX_JOBS": str(concurrency)}


class Client:
    """arq's own async producer: `enqueue_job` on an ArqRedis pool."""

    def __init__(self) -> None:
        self._pool: asyncio.Task[ArqRedis] | None = None

    async def submit(self, workload: str, arg: Any) -> Job:
        return await self._enqueue(workload, arg)

    async def counted(self, key: str, seconds: float, countdown: float = 0) -> Job:
        """`counted` (bench/workloads.py), to run `countdown` seconds from now."""
        return await self._enqueue("counted", key, seconds, _defer_by=countdown or None)

    async def _enqueue(self, name: str, *args: Any, **options: Any) -> Job:
        if self._pool is None:  # one pool, however many submit calls wait on it
            self._pool = asyncio.ensure_future(create_pool(RedisSettings.from_dsn(URL)))
        job = await (await self._pool).enqueue_job(name, *args, **options)
        assert job is not None  # None only for a duplicate job id, which we never give
        return job

    async def done(self, handle: Job) -> bool:
        return await handle.result_info() is not None

    async def outcomes(self, handles: list[Job], quiet: float
                       ) -> list[tuple[bool, float, float, Any] | None]:
        out: list[tuple[bool, float, float, Any] | None] = []
        for job in handles:
            try:
                started, finished, *pid = await job.result(timeout=quiet, poll_delay=0.1)
                out.append((True, started, finished, pid[0] if pid else None))
            except TimeoutError:
                out.append(None)
                quiet = 0.1  # the rest had as long: no more waiting
            except Exception:  # the job raised
                out.append((False, 0.0, 0.0, None))
        return out

    async def aclose(self) -> None:
        if self._pool is not None:
            await (await self._pool).aclose()


if __name__ == "__main__":
    # arq's own worker, as `arq bench.raw.arq_app.WorkerSettings` runs it, but logging at
    # LOG_LEVEL like queuebench's workers (arq's CLI logs two lines a job at INFO).
    import logging
    import multiprocessing

    from arq import run_worker

    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "WARNING"))
    for _ in range(int(os.environ.get("RAW_PROCESSES", "1")) - 1):
        multiprocessing.Process(target=run_worker, args=(WorkerSettings,)).start()
    run_worker(WorkerSettings)  # type: ignore[arg-type]
