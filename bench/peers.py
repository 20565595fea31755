"""A public result reproduced through raw mode: steventen/python_queue_benchmark.

Its workload: N jobs (20,000), each printing `Job <num> finished at <time.time()>` and
returning nothing, enqueued one after another with the library's own client (timed:
the enqueue seconds), then the workers started with 10 workers (arq: 10 processes of
max_jobs 1000; Celery: a threads or a processes pool of 10; Dramatiq: 1 process x 10
threads, or 10 x 1). The finish seconds run from a time taken just before the workers
start to the latest time any job printed, worker start-up included, as there.

    .venv/arq/bin/python -m bench.peers [--jobs 20000] [--workers 10] [--redis URL]
                                        [--out DIR] [--only arq,celery-threads,...]

Each configuration runs in its library's own environment (`--run NAME`, internal), on
a flushed Redis database, with the raw apps' clients and tasks (bench/raw, `peer_job`).
Writes results.json and peers.md to --out (default bench/results/peers-<timestamp>/).
The README of the peer gives its times on a MacBook Pro M2 Pro (THEIRS below).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import importlib
import itertools
import json
import os
import platform
import re
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.cli.procs import ROOT, Proc, venv_python

PEER = "https://github.com/steventen/python_queue_benchmark"
PEER_COMMIT = "6f50a1243989ed4a96c2637d207d5aac1e0469ad"
JOB = re.compile(rb"Job (\d+) finished at (\d+\.\d+)")
#: the peer's setup as it runs it; our raw apps set acks late and prefetch 1, the peer
#: keeps Celery's defaults (early acks on peer_job, a prefetch multiplier of 4)
CELERY = ["-q", "-A", "bench.raw.celery_app", "worker", "--loglevel=INFO",
          "--prefetch-multiplier=4"]
ARQ_ENV = {"RAW_MAX_JOBS": "1000", "RAW_POLL_DELAY": "0.01", "LOG_LEVEL": "INFO"}
Command = list[tuple[str, list[str], dict[str, str]]]  # (module, arguments, env) a process


@dataclasses.dataclass(frozen=True)
class Config:
    name: str
    backend: str
    setup: str                      # the peer's worker set-up; {w} is --workers
    theirs: tuple[float, float]     # the peer's README: (enqueue s, finish s) on an M2 Pro
    command: Callable[[int], Command]


CONFIGS = [
    Config("arq", "arq", "{w} processes (supervisord), max_jobs 1000, poll_delay 0.01",
           (9.34, 35.37), lambda w: [("bench.raw.arq_app", [], ARQ_ENV)] * w),
    Config("celery-threads", "celery", "celery worker -P threads -c {w}", (6.34, 11.68),
           lambda w: [("celery", [*CELERY, "-P", "threads", "-c", str(w)], {})]),
    Config("celery-processes", "celery", "celery worker -P processes -c {w}", (6.34, 17.60),
           lambda w: [("celery", [*CELERY, "-P", "processes", "-c", str(w)], {})]),
    Config("dramatiq", "dramatiq", "dramatiq -p 1 -t {w}", (3.27, 4.12),
           lambda w: [("dramatiq", ["bench.raw.dramatiq_app", "-p", "1", "-t", str(w)], {})]),
    Config("dramatiq-processes", "dramatiq", "dramatiq -p {w} -t 1", (3.27, 4.35),
           lambda w: [("dramatiq", ["bench.raw.dramatiq_app", "-p", str(w), "-t", "1"], {})]),
]
BY_NAME = {c.name: c for c in CONFIGS}


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.peers", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=20_000)
    p.add_argument("--workers", type=int, default=10)
    p.add_argument("--redis", default="redis://127.0.0.1:6379/9",
                   help="a Redis database the run may flush")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--only", default=None,
                   help=f"configurations or backends, comma-separated ({', '.join(BY_NAME)})")
    p.add_argument("--quiet", type=float, default=60.0,
                   help="seconds without a job finishing before the rest count as lost")
    p.add_argument("--run", choices=sorted(BY_NAME), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    wanted = {n.strip() for n in (args.only or ",".join(BY_NAME)).split(",") if n.strip()}
    args.configs = [c for c in CONFIGS if c.name in wanted or c.backend in wanted]
    unknown = wanted - {c.name for c in CONFIGS} - {c.backend for c in CONFIGS}
    if unknown or not args.configs:
        p.error(f"unknown configuration {', '.join(sorted(unknown))} "
                f"(choose from {', '.join(BY_NAME)})")
    if args.jobs < 1 or args.workers < 1:
        p.error("--jobs and --workers must be at least 1")
    return args


# -- one configuration, in its library's environment -------------------------------------

def run_one(config: Config, jobs: int, workers: int, redis_url: str, quiet: float
            ) -> dict[str, Any]:
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    env = {"RAW_REDIS_URL": redis_url, "PYTHONUNBUFFERED": "1"}
    os.environ.update(env)  # the raw app reads RAW_REDIS_URL at import
    app = importlib.import_module(f"bench.raw.{config.backend}_app")
    enqueue = asyncio.run(_enqueue(app.Client(), jobs))
    procs: list[Proc] = []
    cpu = _children_cpu()
    started = time.time()  # as the peer's `time.log`, just before the workers start
    try:
        for module, args, extra in config.command(workers):
            procs.append(Proc(args, {**env, **extra}, module=module))
        times = _wait(procs, jobs, quiet)
    finally:
        for proc in procs:
            proc.stop()
            Path(proc.log.name).unlink(missing_ok=True)
    cpu = _children_cpu() - cpu  # the workers', once they are reaped
    from importlib.metadata import version
    return {
        "name": config.name, "backend": config.backend, "version": version(config.backend),
        "setup": config.setup.format(w=workers), "jobs": jobs, "workers": workers,
        "processes": len(procs), "finished": len(times), "enqueue_s": round(enqueue, 3),
        "finish_s": round(max(times.values()) - started, 3) if times else None,
        "first_job_s": round(min(times.values()) - started, 3) if times else None,
        "workers_cpu_ms_per_job": round(cpu * 1000 / len(times), 3) if times else None,
    }


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


async def _enqueue(client: Any, jobs: int) -> float:
    """The peer's loop: one job at a time with the library's own call, timed."""
    blocking = not asyncio.iscoroutinefunction(client.submit)
    start = time.perf_counter()
    for num in range(jobs):
        if blocking:
            client.submit("peer_job", num)
        else:
            await client.submit("peer_job", num)
    seconds = time.perf_counter() - start
    await client.aclose()  # as the peer's enqueue script ends before the workers start
    return seconds


def _wait(procs: list[Proc], jobs: int, quiet: float) -> dict[int, float]:
    """Until every job printed its line in the workers' output, or none did for `quiet`
    seconds; then each job's printed time, read from the whole output once more."""
    seen: set[int] = set()
    offsets = [0] * len(procs)
    moved = time.monotonic()
    while len(seen) < jobs and time.monotonic() - moved < quiet:
        time.sleep(0.1)
        before = len(seen)
        for i, proc in enumerate(procs):
            with open(proc.log.name, "rb") as log:
                log.seek(offsets[i])
                chunk = log.read()
            end = chunk.rfind(b"\n") + 1  # whole lines only; the rest on the next read
            offsets[i] += end
            seen.update(int(num) for num, _ in JOB.findall(chunk[:end]))
        if len(seen) > before:
            moved = time.monotonic()
        elif not any(proc.alive() for proc in procs):
            raise RuntimeError(f"the workers exited:\n{procs[0].output()[-3000:]}")
    times: dict[int, float] = {}
    for proc in procs:
        for num, at in JOB.findall(Path(proc.log.name).read_bytes()):
            times[int(num)] = float(at)
    return times


# -- the comparison, from the harness's environment -------------------------------------

def run_config(config: Config, args: argparse.Namespace) -> dict[str, Any]:
    load = {"before": _load()}
    before, started = _cpu(args.redis), time.monotonic()
    done = subprocess.run(
        [venv_python(config.backend), "-m", "bench.peers", "--run", config.name, "--jobs",
         str(args.jobs), "--workers", str(args.workers), "--redis", args.redis,
         "--quiet", str(args.quiet)],
        cwd=ROOT, capture_output=True, text=True, check=False)
    load["after"] = _load()
    busy, redis_cpu, ours = (b - a for a, b in zip(before, _cpu(args.redis), strict=True))
    share = (busy - redis_cpu - ours) / ((time.monotonic() - started) * (os.cpu_count() or 1))
    if done.returncode != 0:
        raise RuntimeError((done.stderr.strip() or f"exit code {done.returncode}")[-2000:])
    run = dict(json.loads(done.stdout.strip().splitlines()[-1]))
    their_enqueue, their_finish = config.theirs
    return {**run, "their_enqueue_s": their_enqueue, "their_finish_s": their_finish,
            "load_avg": load, "others_cpu_share": round(max(0.0, share), 3)}


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _cpu(redis_url: str) -> tuple[float, float, float]:
    """CPU seconds so far: the machine's busy time (Linux /proc/stat), Redis's, and this
    process's reaped children's (the run and its workers); what is left of the busy
    time during a run is other people's, the noise."""
    import redis

    ticks = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    busy = sum(int(t) for i, t in enumerate(ticks[:7]) if i not in (3, 4))  # user..softirq
    info: Any = redis.Redis.from_url(redis_url).info("cpu")
    return (busy / os.sysconf("SC_CLK_TCK"), info["used_cpu_user"] + info["used_cpu_sys"],
            _children_cpu())


def ratios(runs: list[dict[str, Any]]) -> None:
    """Each time over the fastest of its column, ours and theirs alike (in place)."""
    for key in ("enqueue_s", "finish_s", "their_enqueue_s", "their_finish_s"):
        values = [r[key] for r in runs if r.get(key)]
        for run in runs:
            run[key.replace("_s", "_x")] = round(run[key] / min(values), 2) \
                if run.get(key) else None


def order(runs: list[dict[str, Any]], key: str) -> str:
    """Fastest first; equal times (the peer's one enqueue figure a library) joined by =."""
    ranked = sorted((r for r in runs if r.get(key)), key=lambda r: r[key])
    text = ranked[0]["name"] if ranked else ""
    for prev, run in itertools.pairwise(ranked):
        text += (" = " if run[key] == prev[key] else " < ") + run["name"]
    return text


def markdown(results: dict[str, Any]) -> str:
    meta, runs = results["meta"], results["runs"]
    lines = [
        f"{meta['jobs']:,} jobs, {meta['workers']} workers; theirs: the peer's README "
        f"(MacBook Pro M2 Pro); ours: {meta['machine']['cpus']} CPUs, "
        f"Python {meta['machine']['python']}, Redis {meta['machine']['redis']}. "
        "x: the time over the fastest in its column.", "",
        "| library | setup | enqueue theirs | x | enqueue ours | x | finish theirs | x "
        "| finish ours | x | ours: first job at | workers' CPU ms a job | finished "
        "| load 1 min before → after | others' CPU share |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
        "| ---: | --- | ---: |",
    ]
    for r in runs:
        lines.append(
            f"| {r['name']} ({r['version']}) | {r['setup']} | {r['their_enqueue_s']:.2f} "
            f"| {r['their_enqueue_x']:.2f} | {_s(r['enqueue_s'])} | {_s(r['enqueue_x'])} "
            f"| {r['their_finish_s']:.2f} | {r['their_finish_x']:.2f} | {_s(r['finish_s'])} "
            f"| {_s(r['finish_x'])} | {_s(r['first_job_s'])} "
            f"| {_s(r['workers_cpu_ms_per_job'])} | {r['finished']:,} "
            f"| {r['load_avg']['before'][0]:.2f} → {r['load_avg']['after'][0]:.2f} "
            f"| {r['others_cpu_share']:.0%} |")
    lines += ["", "Order, fastest first:", ""]
    for label, key in (("enqueue", "enqueue_s"), ("finish", "finish_s")):
        lines.append(f"- {label}, theirs: {order(runs, 'their_' + key)}")
        lines.append(f"- {label}, ours: {order(runs, key)}")
    for failure in results["failures"]:
        lines.append(f"- **{failure['name']} failed**: {failure['error'].splitlines()[-1]}")
    return "\n".join(lines) + "\n"


def _s(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def table(runs: list[dict[str, Any]]) -> Any:
    from rich.table import Table

    out = Table(title="steventen/python_queue_benchmark through raw mode (seconds)")
    for column in ("library", "enqueue theirs", "x", "enqueue ours", "x", "finish theirs",
                   "x", "finish ours", "x", "finished", "load before → after", "others' CPU"):
        out.add_column(column, justify="left" if column == "library" else "right")
    for r in runs:
        out.add_row(r["name"], f"{r['their_enqueue_s']:.2f}", f"{r['their_enqueue_x']:.2f}",
                    _s(r["enqueue_s"]), _s(r["enqueue_x"]), f"{r['their_finish_s']:.2f}",
                    f"{r['their_finish_x']:.2f}", _s(r["finish_s"]), _s(r["finish_x"]),
                    f"{r['finished']:,}/{r['jobs']:,}",
                    f"{r['load_avg']['before'][0]:.2f} → {r['load_avg']['after'][0]:.2f}",
                    f"{r['others_cpu_share']:.0%}")
    return out


def main(argv: Sequence[str] | None = None) -> None:
    args = parse(argv)
    if args.run:
        print(json.dumps(run_one(BY_NAME[args.run], args.jobs, args.workers, args.redis,
                                 args.quiet)))
        return
    import redis
    from rich.console import Console

    try:
        info: Any = redis.Redis.from_url(args.redis, socket_connect_timeout=3).info("server")
    except redis.RedisError as exc:
        raise SystemExit(f"bench.peers: error: Redis at {args.redis} does not answer "
                         f"({exc})") from None
    console = Console(width=max(Console().width, 150))
    out: Path = args.out or ROOT / "bench" / "results" / time.strftime("peers-%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"meta": {
        "peer": PEER, "peer_commit": PEER_COMMIT, "started": _now(),
        "command": " ".join(["python -m bench.peers", *(argv or sys.argv[1:])]),
        "jobs": args.jobs, "workers": args.workers,
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "cpus": os.cpu_count(), "redis": info.get("redis_version")},
    }, "runs": [], "failures": []}
    for config in args.configs:
        console.print(f"{config.name}: {args.jobs:,} jobs, "
                      f"{config.setup.format(w=args.workers)} …")
        try:
            results["runs"].append(run_config(config, args))
        except Exception as exc:  # one broken library must not lose the others
            results["failures"].append({"name": config.name, "error": str(exc)})
            console.print(f"[red]{config.name}: failed: {exc}")
    ratios(results["runs"])
    results["meta"]["finished"] = _now()
    (out / "results.json").write_text(json.dumps(results, indent=1))
    (out / "peers.md").write_text(markdown(results))
    console.print(table(results["runs"]))
    console.print(f"results: {out / 'results.json'}, {out / 'peers.md'}")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


if __name__ == "__main__":
    main()
