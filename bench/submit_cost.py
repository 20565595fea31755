"""What one submit costs the process that submits: queuebench's core interface
(`Backend.submit`, the native producer) against the library's own client (bench/raw),
N noop submits and no worker. Run it in the backend's env:

    .venv/arq/bin/python -m bench.submit_cost --backend arq --client direct -n 2000

It prints submits/s and this process's CPU per submit. On a machine shared with other
work both are noise; instructions are not. callgrind counts them, repeatably: run it
at two N and take the difference, so start-up (imports) cancels out:

    for n in 200 1200; do
      valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.$n \\
        .venv/arq/bin/python -m bench.submit_cost --backend arq --client direct -n $n
    done   # (Collected at 1200 - at 200) / 1000 = instructions per submit

The async clients (queuebench's, arq's, taskiq's) run 16 submits at a time; a blocking one
(Celery's, Dramatiq's) is called one after another, without the thread pool the
benchmark puts it on: its own cost, not the hop's.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import os
import time
from typing import Any

from bench.session import raw_module
from core.backend import backend_class
from core.settings import BACKENDS, Settings

WARMUP = 200
CONCURRENCY = 16


async def _submits(submit: Any, n: int) -> None:
    if not inspect.iscoroutinefunction(submit):
        for _ in range(n):
            submit()
        return
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one() -> None:
        async with gate:
            await submit()

    await asyncio.gather(*(one() for _ in range(n)))


async def main(backend: str, client: str, n: int, url: str) -> None:
    if client == "direct":
        made = backend_class(backend)(Settings(queue_backend=backend, redis_url=url))
        await made.redis.flushdb()

        async def submit() -> None:
            await made.submit("noop", [None])
    else:
        os.environ["RAW_REDIS_URL"] = url  # read by the raw module at import
        made = raw_module(backend).Client()
        own = made.submit
        if inspect.iscoroutinefunction(own):
            async def submit() -> None:
                await own("noop", None)
        else:
            def submit() -> None:  # type: ignore[misc]
                own("noop", None)
    await _submits(submit, WARMUP)
    wall, cpu = time.perf_counter(), time.process_time()
    await _submits(submit, n)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(f"{backend} {client}: {n} submits, {n / wall:,.0f}/s, "
          f"{cpu / n * 1e6:,.0f} µs CPU a submit (this process)")
    if hasattr(made, "aclose"):
        await made.aclose()


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", required=True, choices=BACKENDS)
    parser.add_argument("--client", choices=["direct", "raw"], default="direct")
    parser.add_argument("-n", type=int, default=2000)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/12",
                        help="a Redis database this may flush (default: %(default)s)")
    args = parser.parse_args()
    asyncio.run(main(args.backend, args.client, args.n, args.redis))


if __name__ == "__main__":
    cli()
