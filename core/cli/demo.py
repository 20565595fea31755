"""`queuebench demo`: every backend side by side through the HTTP API.

For each backend, in its own environment: a worker and the API; a handful of shared
tasks submitted over HTTP and waited for; then the API's submit rate (concurrent
POSTs) and the round trip of `divide` (submit, then wait until final)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from core.cli.procs import Proc, Server, venv_python
from core.db import migrate
from core.settings import BACKENDS

SAMPLES: list[tuple[str, dict[str, Any]]] = [
    ("divide", {"args": [1, 2]}),
    ("divide", {"args": [1, 0]}),
    ("add", {"args": [2, 3]}),
    ("noop", {"args": [{"nested": [1, {"a": None}]}]}),
    ("sleep", {"args": [0.1]}),
    ("cpu", {"args": [1000]}),
    ("flaky", {"args": [1, f"demo-{time.time()}"], "options": {"retry_backoff": 0.05}}),
    ("fail", {"args": ["on purpose"]}),
]


async def submit_and_wait(http: httpx.AsyncClient, name: str, body: dict[str, Any]
                          ) -> tuple[dict[str, Any], float]:
    start = time.perf_counter()
    task = (await http.post(f"/tasks/{name}", json=body)).json()
    done = (await http.get(f"/tasks/{task['id']}/wait", params={"timeout": 30})).json()
    return done, (time.perf_counter() - start) * 1000


async def submit_rate(http: httpx.AsyncClient, seconds: float, clients: int) -> float:
    """POST /tasks/noop from `clients` concurrent loops for `seconds`: accepted per second."""
    deadline = time.perf_counter() + seconds
    accepted = 0

    async def loop() -> None:
        nonlocal accepted
        while time.perf_counter() < deadline:
            if (await http.post("/tasks/noop", json={"args": [None]})).status_code == 202:
                accepted += 1

    start = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(clients)))
    return accepted / (time.perf_counter() - start)


async def measure(url: str, seconds: float, clients: int, round_trips: int) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=clients + 4)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:
        samples = [await submit_and_wait(http, name, body) for name, body in SAMPLES]
        trips = [(await submit_and_wait(http, "divide", {"args": [1, 3]}))[1]
                 for _ in range(round_trips)]
        rate = await submit_rate(http, seconds, clients)
    return {"samples": samples, "divide_ms": statistics.median(trips), "submit_rps": rate}


def run_backend(backend: str, redis_url: str, database_url: str, args: argparse.Namespace
                ) -> dict[str, Any]:
    env = {"REDIS_URL": redis_url, "QUEUE_BACKEND": backend, "DATABASE_URL": database_url}
    python = venv_python(backend)
    worker = Proc(["worker", "--backend", backend, "--concurrency", str(args.concurrency)],
                  env, python)
    server = Server(backend, env, python)
    try:
        return asyncio.run(measure(server.url, args.seconds, args.clients, args.round_trips))
    finally:
        server.stop()
        worker.stop()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="queuebench demo", description=__doc__)
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/8",
                        help="a Redis database the demo may flush")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--round-trips", type=int, default=20)
    args = parser.parse_args(argv)
    import redis

    logging.getLogger("alembic").setLevel(logging.WARNING)
    console = Console()
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="qb-demo-") as scratch:
        database_url = migrate.scratch_sqlite(Path(scratch) / "demo.db")
        for backend in args.backends.split(","):
            redis.Redis.from_url(args.redis).flushdb()
            with console.status(f"{backend}: worker, API, tasks..."):
                results[backend] = run_backend(backend, args.redis, database_url, args)
    console.print(_tasks_table(results))
    console.print(_rates_table(results, args))


def _tasks_table(results: dict[str, dict[str, Any]]) -> Table:
    table = Table(title="Shared tasks through the HTTP API")
    for column in ("backend", "task", "args", "state", "result / error", "retries",
                   "round trip ms"):
        table.add_column(column)
    for backend, result in results.items():
        for body, ms in result["samples"]:
            outcome = body["error"] and f"{body['error']['type']}: {body['error']['message']}"
            table.add_row(backend, body["name"], str(body["args"])[:30], body["state"],
                          str(outcome or body["result"])[:40], str(body["retries"]),
                          f"{ms:.1f}")
    return table


def _rates_table(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> Table:
    table = Table(title=f"API submit rate ({args.clients} concurrent clients, {args.seconds}s) "
                        f"and divide round trip (median of {args.round_trips})")
    for column in ("backend", "submit req/s", "divide round trip ms"):
        table.add_column(column)
    for backend, result in results.items():
        table.add_row(backend, f"{result['submit_rps']:.0f}", f"{result['divide_ms']:.1f}")
    return table
