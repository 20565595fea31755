"""`queuebench soak`: sustained mixed load through the HTTP API, and what it costs over time.

    .venv/arq/bin/queuebench soak --backend arq --minutes 10 --rate 20

Starts `queuebench serve` and one `queuebench worker` of the backend (the library's
default concurrency) on `--redis`, with a scratch SQLite history, and submits the
shared tasks noop, sleep, cpu, flaky and fail over HTTP on an open-loop schedule
(bench/openloop.py: each call starts at its intended time, latency counts from it).
Every few seconds it samples the resident memory of the API and of the worker (each
process with all its children: uvicorn, Celery's prefork pool, Dramatiq's processes)
and Redis's `used_memory`. After the run it reads every accepted task back over HTTP
until it is final or `--deadline` seconds have passed, and reports:

- lost: accepted (202) but not in its expected final state by the deadline (exit 1);
- errors: HTTP errors on submit or read, and final states other than the expected
  (noop, sleep, cpu and flaky end SUCCESS, flaky after one retry; fail ends FAILURE);
- end-to-end latency (intended submit to `finished_at`) p50 and p99 per interval;
- per memory series, the least-squares slope in MB/min after the warm-up, with its
  95% confidence interval: "grows" when even the interval's lower end is above
  `--tolerance` MB/min, else "flat" (no growth beyond noise and the tolerance).

Redis memory grows until the task records reach their bound (RECORDS_KEPT newest
records, core/store/records.py) and is flat from there; `--records-kept` lowers the bound so
that a short run gets there within its warm-up.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import statistics
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psutil
import redis
from rich.console import Console
from rich.progress import Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from bench import openloop
from bench.dashboard_timing import processes
from core.settings import BACKENDS

# name, weight, expected final state, (final) retries
MIX = (("noop", 4, "SUCCESS", 0), ("sleep", 2, "SUCCESS", 0), ("cpu", 2, "SUCCESS", 0),
       ("flaky", 1, "SUCCESS", 1), ("fail", 1, "FAILURE", 0))
FINAL = ("SUCCESS", "FAILURE", "REVOKED", "EXPIRED")
KEYS = "redis keys (thousands)"
Z95 = 1.96  # two-sided 95%, normal: fits here have tens of samples or more


def body(name: str, i: int) -> dict[str, Any]:
    """The i-th submission's arguments: short, so that the run measures the queue."""
    args: dict[str, list[Any]] = {"noop": [i], "sleep": [0.05], "cpu": [2_000],
                                  "flaky": [1, f"soak-{time.time_ns()}-{i}"],
                                  "fail": [f"soak {i}"]}
    return {"args": args[name]}


def names(count: int) -> list[tuple[str, str, int]]:
    """The mix, interleaved: (name, expected state, expected retries) per submission."""
    cycle = [(n, state, retries) for n, weight, state, retries in MIX for _ in range(weight)]
    return [cycle[(i * 7) % len(cycle)] for i in range(count)]  # 7: prime to the cycle


@dataclass
class Fit:
    """Least squares y = a + b x: b in units per minute, its 95% interval, the verdict."""

    slope: float
    low: float
    high: float
    samples: int
    first: float
    last: float
    verdict: str


def fit(points: Sequence[tuple[float, float]], tolerance: float) -> Fit | None:
    """The slope of `points` (seconds, MB) in MB/min; None under 3 points."""
    n = len(points)
    if n < 3:
        return None
    xs = [t / 60 for t, _ in points]
    ys = [y for _, y in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return None
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    a = my - b * mx
    residual = sum((y - a - b * x) ** 2 for x, y in zip(xs, ys, strict=True))
    se = math.sqrt(residual / (n - 2) / sxx)
    low, high = b - Z95 * se, b + Z95 * se
    return Fit(b, low, high, n, ys[0], ys[-1], "grows" if low > tolerance else "flat")


@dataclass
class Samples:
    """Memory over time (seconds from the start, MB), per series."""

    series: dict[str, list[tuple[float, float]]] = field(default_factory=dict)

    def add(self, name: str, at: float, mb: float) -> None:
        self.series.setdefault(name, []).append((at, mb))


def rss_mb(pid: int) -> float | None:
    """Resident memory of a process and all its children, MB (None: it is gone)."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return None
    total = 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
        except psutil.NoSuchProcess:  # a child that ended meanwhile (a pool's recycling)
            continue
    return total / 2**20


class Sampler(threading.Thread):
    """Samples the processes' and Redis's memory every `every` seconds until stopped."""

    def __init__(self, pids: dict[str, int], redis_url: str, every: float) -> None:
        super().__init__(daemon=True)
        self.pids, self.every, self.start_time = pids, every, time.time()
        self.redis = redis.Redis.from_url(redis_url)
        self.samples = Samples()
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            at = time.time() - self.start_time
            for name, pid in self.pids.items():
                mb = rss_mb(pid)
                if mb is not None:
                    self.samples.add(f"{name} RSS", at, mb)
            info = self.redis.info("memory")
            self.samples.add("redis used_memory", at, int(info["used_memory"]) / 2**20)
            self.samples.add(KEYS, at, self.redis.dbsize() / 1000)
            self.halt.wait(self.every)


@dataclass
class Sent:
    name: str
    expected: str
    retries: int
    intended: float  # time.time() the submission was meant to start
    id: str | None = None
    error: str | None = None


async def submit(url: str, rate: float, seconds: float, progress: Progress) -> list[Sent]:
    """The open-loop run: `rate` submissions a second for `seconds`."""
    count = max(1, round(rate * seconds))
    plan = names(count)
    offsets = openloop.schedule(rate, count)
    sent: list[Sent] = []
    task = progress.add_task("submitting", total=count)
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as http:
        i = 0

        async def one() -> Sent:
            nonlocal i
            index, i = i, i + 1
            name, expected, retries = plan[index]
            item = Sent(name, expected, retries, start + offsets[index])
            sent.append(item)
            try:
                answer = await http.post(f"/tasks/{name}", json=body(name, index))
                if answer.status_code == 202:
                    item.id = answer.json()["id"]
                else:
                    item.error = f"submit {name}: HTTP {answer.status_code}"
            except httpx.HTTPError as exc:
                item.error = f"submit {name}: {type(exc).__name__}"
            progress.advance(task)
            return item

        start = time.time()
        await openloop.drive(one, offsets)
    return sent


async def settle(url: str, sent: list[Sent], deadline: float, progress: Progress,
                 ) -> dict[str, dict[str, Any]]:
    """Each accepted task's body, read until final or `deadline` seconds from now."""
    bodies: dict[str, dict[str, Any]] = {}
    waiting = [s.id for s in sent if s.id]
    task = progress.add_task("reading back", total=len(waiting))
    end = time.monotonic() + deadline
    gate = asyncio.Semaphore(16)
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:

        async def read(task_id: str) -> None:
            async with gate:
                try:
                    answer = await http.get(f"/tasks/{task_id}")
                except httpx.HTTPError:
                    return  # read again next round
            if answer.status_code == 200:
                bodies[task_id] = answer.json()
                if bodies[task_id]["state"] in FINAL:
                    progress.advance(task)

        while waiting and time.monotonic() < end:
            await asyncio.gather(*(read(t) for t in waiting))
            waiting = [t for t in waiting if bodies.get(t, {}).get("state") not in FINAL]
            if waiting:
                await asyncio.sleep(1.0)
    return bodies


def _time(text: str | None) -> float | None:
    return datetime.fromisoformat(text).timestamp() if text else None


def outcome(sent: list[Sent], bodies: dict[str, dict[str, Any]], start: float,
            interval: float) -> dict[str, Any]:
    """Lost, errors and latency per interval (by intended submit time)."""
    lost, errors = [], [s.error for s in sent if s.error]
    buckets: dict[int, list[float]] = {}
    for s in sent:
        if not s.id:
            continue
        found = bodies.get(s.id)
        if found is None or found["state"] not in FINAL:
            lost.append({"id": s.id, "name": s.name,
                         "state": found["state"] if found else "not found"})
            continue
        if found["state"] != s.expected or found["retries"] != s.retries:
            errors.append(f"{s.name} {s.id}: {found['state']} after {found['retries']} "
                          f"retries, expected {s.expected} after {s.retries}")
        finished = _time(found.get("finished_at"))
        if finished is not None:
            buckets.setdefault(int((s.intended - start) // interval), []).append(
                (finished - s.intended) * 1000)
    latency = [{"from_s": k * interval, "tasks": len(v), "p50_ms": _pct(v, 50),
                "p99_ms": _pct(v, 99)} for k, v in sorted(buckets.items())]
    return {"submitted": len(sent), "accepted": sum(1 for s in sent if s.id),
            "lost": len(lost), "lost_tasks": lost[:100], "errors": len(errors),
            "error_samples": errors[:20], "latency": latency}


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))]


def fits(samples: Samples, warmup: float, end: float, tolerance: float,
         redis_tolerance: float) -> dict[str, dict[str, Any] | None]:
    """A fit per series from the warm-up to the `end` of the load (not the reading
    back, a different load); the key count is for reading only (its slope is in
    thousands of keys, not MB: no verdict)."""
    out: dict[str, dict[str, Any] | None] = {}
    for name, points in samples.series.items():
        found = fit([(t, y) for t, y in points if warmup <= t <= end],
                    redis_tolerance if name.startswith("redis") else tolerance)
        if found and name == KEYS:
            found.verdict = "-"
        out[name] = asdict(found) if found else None
    return out


def table(result: dict[str, Any]) -> tuple[Table, Table]:
    run = result["outcome"]
    lat = Table(title=f"soak {result['backend']}: {run['accepted']} accepted of "
                f"{run['submitted']}, lost {run['lost']}, errors {run['errors']}")
    for column in ("from (s)", "tasks", "p50 (ms)", "p99 (ms)"):
        lat.add_column(column, justify="right")
    for row in run["latency"]:
        lat.add_row(f"{row['from_s']:.0f}", str(row["tasks"]), f"{row['p50_ms']:.1f}",
                    f"{row['p99_ms']:.1f}")
    mem = Table(title=f"memory after the {result['warmup_s']:.0f} s warm-up (tolerance: "
                f"RSS {result['tolerance_mb_min']}, Redis {result['redis_tolerance_mb_min']} "
                "MB/min)")
    for column in ("series", "first", "last", "slope /min", "95% interval", "verdict"):
        mem.add_column(column, justify="right")
    for name, found in result["memory"].items():
        if found is None:
            mem.add_row(name, "-", "-", "-", "-", "too few samples")
            continue
        mem.add_row(name, f"{found['first']:.1f}", f"{found['last']:.1f}",
                    f"{found['slope']:+.2f}", f"{found['low']:+.2f} .. {found['high']:+.2f}",
                    found["verdict"])
    return lat, mem


def chart(result: dict[str, Any], samples: Samples, path: Path) -> None:
    """Latency and memory over time, one PNG (matplotlib: the bench extra)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 7), sharex=True)
    rows = result["outcome"]["latency"]
    xs = [r["from_s"] for r in rows]
    top.plot(xs, [r["p50_ms"] for r in rows], marker="o", label="p50")
    top.plot(xs, [r["p99_ms"] for r in rows], marker="o", label="p99")
    top.set_ylabel("end-to-end latency (ms)")
    top.legend()
    for name, points in samples.series.items():
        bottom.plot([t for t, _ in points], [y for _, y in points], label=name)
    bottom.axvline(result["warmup_s"], color="grey", linestyle=":")
    bottom.set_ylabel("MB (keys: thousands)")
    bottom.set_xlabel("seconds from the start")
    bottom.legend(fontsize="small")
    fig.suptitle(f"queuebench soak: {result['backend']}, {result['rate']}/s")
    fig.savefig(path, dpi=90)
    plt.close(fig)


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="queuebench soak", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", choices=BACKENDS, required=True)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--rate", type=float, default=20.0, help="submissions per second")
    p.add_argument("--redis", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
                   help="Redis database for the stack (its used_memory is the instance's)")
    p.add_argument("--concurrency", type=int, default=None,
                   help="worker slots (default: the library's own)")
    p.add_argument("--records-kept", type=int, default=None,
                   help="RECORDS_KEPT for the stack (default: the setting's own)")
    p.add_argument("--every", type=float, default=2.0, help="seconds between memory samples")
    p.add_argument("--interval", type=float, default=60.0, help="seconds per latency row")
    p.add_argument("--warmup", type=float, default=None,
                   help="seconds left out of the slopes (default: 20%% of the run, 30 s at least)")
    p.add_argument("--tolerance", type=float, default=1.0,
                   help="MB/min a process's RSS may grow by before it counts as growing")
    p.add_argument("--redis-tolerance", type=float, default=0.1,
                   help="likewise Redis's used_memory (far less noisy than an RSS)")
    p.add_argument("--deadline", type=float, default=120.0,
                   help="seconds after the run for every task to reach its final state")
    p.add_argument("--out", type=Path, default=Path("build/soak"))
    return p.parse_args(argv)


async def _drive(args: argparse.Namespace, url: str, progress: Progress, start: float,
                 ) -> tuple[list[Sent], dict[str, dict[str, Any]], float]:
    """The load, then the reading back; and when the load ended (seconds from `start`)."""
    sent = await submit(url, args.rate, args.minutes * 60, progress)
    load_s = time.time() - start
    return sent, await settle(url, sent, args.deadline, progress), load_s


def run(args: argparse.Namespace, console: Console) -> tuple[dict[str, Any], Samples]:
    env = {"RECORDS_KEPT": str(args.records_kept)} if args.records_kept else {}
    warmup = args.warmup if args.warmup is not None else max(30.0, 12.0 * args.minutes)
    with processes(args.redis, args.backend, args.concurrency, **env) as (server, worker):
        sampler = Sampler({"api": server.pid, "worker": worker.pid}, args.redis, args.every)
        sampler.start()
        try:
            with Progress(TextColumn("{task.description}"), TextColumn("{task.completed}"),
                          TimeElapsedColumn(), console=console) as progress:
                sent, bodies, load_s = asyncio.run(_drive(args, server.url, progress,
                                                          sampler.start_time))
        finally:
            sampler.halt.set()
            sampler.join()
    result = {"backend": args.backend, "rate": args.rate, "minutes": args.minutes,
              "concurrency": args.concurrency, "records_kept": args.records_kept,
              "warmup_s": warmup, "tolerance_mb_min": args.tolerance,
              "redis_tolerance_mb_min": args.redis_tolerance,
              "outcome": outcome(sent, bodies, sampler.start_time, args.interval),
              "load_s": load_s,
              "memory": fits(sampler.samples, warmup, load_s, args.tolerance,
                             args.redis_tolerance),
              "samples": sampler.samples.series}
    return result, sampler.samples


def main(argv: Sequence[str] | None = None) -> None:
    args = parse(argv)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request otherwise
    console = Console()
    result, samples = run(args, console)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"soak-{args.backend}.json"
    path.write_text(json.dumps(result, indent=1))
    lat, mem = table(result)
    console.print(lat)
    console.print(mem)
    for line in result["outcome"]["error_samples"][:5]:
        console.print(f"[yellow]error: {line}")
    try:
        chart(result, samples, args.out / f"soak-{args.backend}.png")
    except ImportError:
        console.print("no chart: matplotlib is in the bench extra")
    console.print(f"results: {path}")
    if result["outcome"]["lost"]:
        console.print(f"[red]{result['outcome']['lost']} task(s) lost")
        raise SystemExit(1)


if __name__ == "__main__":
    main()
