"""Public results reproduced through raw mode, each library alone with its own client,
worker command and a raw app's `peer_job` (bench/raw), on a flushed Redis database:

- `--peer steventen`: steventen/python_queue_benchmark. N jobs (20,000), each printing
  `Job <num> finished at <time.time()>` and returning nothing, enqueued one after another
  with the library's own client (timed: the enqueue seconds), then 10 workers (arq: 10
  processes of max_jobs 1000; Celery: a threads or a processes pool of 10; Dramatiq: 1
  process x 10 threads, or 10 x 1; taskiq: `taskiq worker --workers 10`, its defaults).
- `--peer streaq`: tastyware/streaq's benchmarks README, benchmark 1 (no-op). 20,000 jobs
  enqueued 32 calls at a time, then 1 worker and 10, each of 32 concurrent jobs: taskiq
  (`taskiq worker --workers W --max-async-tasks 32 --max-prefetch 32`, RedisStreamBroker
  reading 32 a time, results kept 1 s) and arq (W processes started after import, as the
  arq fork it ran does for `--workers W`; max_jobs 32, arq's poll delay of 0.5 s). Its job does
  nothing; `peer_job` also prints its finish time, as the harness must see the last job
  finish and taskiq has no burst mode to exit on.

The finish seconds run from a time taken just before the workers start to the latest time
any job printed, worker start-up included, as steventen's peer measures them.

    .venv/arq/bin/python -m bench.peers [--peer steventen|streaq] [--jobs 20000]
                                        [--workers 10 | 1,10] [--redis URL] [--out DIR]
                                        [--only arq,celery-threads,...]

Each configuration runs in its library's own environment (`--run NAME`, internal).
Writes results.json and peers.md to --out (default bench/results/peers-<peer>-<timestamp>/).
The peers' READMEs give their times on their machines (THEIRS below).
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

JOB = re.compile(rb"Job (\d+) finished at (\d+\.\d+)")
Command = list[tuple[str, list[str], dict[str, str]]]  # (module, arguments, env) a process


@dataclasses.dataclass(frozen=True)
class Config:
    name: str
    backend: str
    setup: str                       # the peer's worker set-up; {w} is the worker count
    their_enqueue: float             # the peer's README: seconds to enqueue every job
    their_finish: dict[int, float | None]  # ... and to finish them, by worker count
    command: Callable[[int], Command]      # the worker processes for a worker count
    env: dict[str, str] = dataclasses.field(default_factory=dict)  # the app's, both sides


@dataclasses.dataclass(frozen=True)
class Peer:
    name: str
    url: str
    commit: str
    machine: str                 # where the peer's README figures come from
    workers: tuple[int, ...]     # the worker counts run by default
    in_flight: int               # enqueue calls at a time (1: one after another)
    configs: tuple[Config, ...]

    def by_name(self) -> dict[str, Config]:
        return {c.name: c for c in self.configs}


#: steventen's setup as it runs it; our raw apps set acks late and prefetch 1, the peer
#: keeps Celery's defaults (early acks on peer_job, a prefetch multiplier of 4)
CELERY = ["-q", "-A", "bench.raw.celery_app", "worker", "--loglevel=INFO",
          "--prefetch-multiplier=4"]
TASKIQ = ["worker", "bench.raw.taskiq_app:broker"]  # taskiq's CLI logs at INFO by default

STEVENTEN = Peer(
    "steventen", "https://github.com/steventen/python_queue_benchmark",
    "6f50a1243989ed4a96c2637d207d5aac1e0469ad",
    "MacBook Pro 14\" M2 Pro, 16 GB, Redis 7 in Docker", (10,), 1, (
        Config("arq", "arq", "{w} processes (supervisord), max_jobs 1000, poll_delay 0.01",
               9.34, {10: 35.37}, lambda w: [("bench.raw.arq_app", [], {})] * w,
               {"RAW_MAX_JOBS": "1000", "RAW_POLL_DELAY": "0.01", "LOG_LEVEL": "INFO"}),
        Config("celery-threads", "celery", "celery worker -P threads -c {w}", 6.34,
               {10: 11.68}, lambda w: [("celery", [*CELERY, "-P", "threads", "-c", str(w)], {})]),
        Config("celery-processes", "celery", "celery worker -P processes -c {w}", 6.34,
               {10: 17.60},
               lambda w: [("celery", [*CELERY, "-P", "processes", "-c", str(w)], {})]),
        Config("dramatiq", "dramatiq", "dramatiq -p 1 -t {w}", 3.27, {10: 4.12},
               lambda w: [("dramatiq", ["bench.raw.dramatiq_app", "-p", "1", "-t", str(w)],
                           {})]),
        Config("dramatiq-processes", "dramatiq", "dramatiq -p {w} -t 1", 3.27, {10: 4.35},
               lambda w: [("dramatiq", ["bench.raw.dramatiq_app", "-p", str(w), "-t", "1"],
                           {})]),
        # RedisStreamBroker with taskiq's defaults and no result backend, as there
        Config("taskiq", "taskiq", "taskiq worker --workers {w} (RedisStreamBroker)", 5.97,
               {10: 2.03}, lambda w: [("taskiq", [*TASKIQ, "--workers", str(w)], {})],
               {"RAW_CONFIG": "defaults", "RAW_RESULTS": "none"}),
    ))

STREAQ = Peer(
    "streaq", "https://github.com/tastyware/streaq/blob/master/benchmarks/README.md",
    "c16c846d15e4a3d378c4be8b5be5d1651d28766f",
    "M4 Mac Mini, uvloop; taskiq 0.11.18, taskiq-redis 1.1.0, arq 0.26.3 (a fork with "
    "--workers), redis-py 6.2", (1, 10), 32, (
        Config("taskiq", "taskiq", "taskiq worker --workers {w} --max-async-tasks 32 "
               "--max-prefetch 32 (RedisStreamBroker, xread_count 32)", 1.68,
               {1: 6.36, 10: 3.26, 20: 3.38, 40: 6.43},
               lambda w: [("taskiq", [*TASKIQ, "--workers", str(w), "--max-async-tasks", "32",
                                      "--max-prefetch", "32"], {})],
               {"RAW_SLOTS": "32", "RAW_RESULT_EX_TIME": "1"}),
        Config("arq", "arq", "arq --workers {w} (the fork's CLI): max_jobs 32, "
               "poll_delay 0.5", 2.31, {1: 62.66, 10: 28.10, 20: 43.33, 40: None},
               lambda w: [("bench.raw.arq_app", [], {"RAW_PROCESSES": str(w)})],
               {"RAW_MAX_JOBS": "32", "RAW_POLL_DELAY": "0.5", "LOG_LEVEL": "INFO"}),
    ))
PEERS = {p.name: p for p in (STEVENTEN, STREAQ)}


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.peers", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--peer", choices=sorted(PEERS), default="steventen")
    p.add_argument("--jobs", type=int, default=20_000)
    p.add_argument("--workers", default=None,
                   help="worker counts, comma-separated (default: the peer's: steventen 10, "
                   "streaq 1,10)")
    p.add_argument("--redis", default="redis://127.0.0.1:6379/9",
                   help="a Redis database the run may flush")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--only", default=None,
                   help="configurations or backends of the peer, comma-separated")
    p.add_argument("--quiet", type=float, default=60.0,
                   help="seconds without a job finishing before the rest count as lost")
    p.add_argument("--run", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    peer = args.peer = PEERS[args.peer]
    names = peer.by_name()
    wanted = {n.strip() for n in (args.only or ",".join(names)).split(",") if n.strip()}
    args.configs = [c for c in peer.configs if c.name in wanted or c.backend in wanted]
    unknown = wanted - set(names) - {c.backend for c in peer.configs}
    if unknown or not args.configs or (args.run and args.run not in names):
        p.error(f"unknown configuration {', '.join(sorted(unknown)) or args.run} of "
                f"{peer.name} (choose from {', '.join(names)})")
    try:
        args.workers = [int(w) for w in args.workers.split(",")] if args.workers \
            else list(peer.workers)
    except ValueError:
        p.error(f"--workers {args.workers}: whole numbers, comma-separated")
    if args.jobs < 1 or min(args.workers) < 1:
        p.error("--jobs and --workers must be at least 1")
    return args


# -- one configuration, in its library's environment -------------------------------------

def run_one(peer: Peer, config: Config, jobs: int, workers: int, redis_url: str,
            quiet: float) -> dict[str, Any]:
    import redis

    server = redis.Redis.from_url(redis_url)
    server.flushdb()
    env = {"RAW_REDIS_URL": redis_url, "PYTHONUNBUFFERED": "1", **config.env}
    os.environ.update(env)  # the raw app reads its settings at import, client and workers
    app = importlib.import_module(f"bench.raw.{config.backend}_app")
    server.config_resetstat()  # its own Redis: the commands a job, enqueue and drain
    client_cpu = time.process_time()
    enqueue = asyncio.run(_enqueue(app.Client(), jobs, peer.in_flight))
    client_cpu = time.process_time() - client_cpu
    calls = {"enqueue": _calls(server)}
    procs: list[Proc] = []
    cpu = _children_cpu()
    started = time.time()  # as the peer's `time.log`, just before the workers start
    try:
        for module, args, extra in config.command(workers):
            procs.append(Proc(args, {**env, **extra}, module=module))
        times = _wait(procs, jobs, quiet)
        calls["drain"] = _calls(server, calls["enqueue"])
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
        "client_cpu_ms_per_job": round(client_cpu * 1000 / jobs, 3),
        # Redis commands a job, per command, where at least one in a hundred jobs sends it
        "redis_calls_per_job": {phase: {name: round(n / jobs, 2) for name, n in seen.items()
                                        if n >= jobs / 100}
                                for phase, seen in calls.items()},
    }


def _calls(server: Any, before: dict[str, int] | None = None) -> dict[str, int]:
    """Calls of each Redis command since CONFIG RESETSTAT, less those in `before`."""
    before = before or {}
    now = {name.removeprefix("cmdstat_"): stat["calls"]
           for name, stat in server.info("commandstats").items()}
    return {name: n - before.get(name, 0) for name, n in now.items() if n > before.get(name, 0)}


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


async def _enqueue(client: Any, jobs: int, in_flight: int) -> float:
    """The peer's loop, timed: the library's own call for every job, one after another,
    or (an async client) `in_flight` calls at a time, as streaq's semaphore of 32 allows."""
    numbers = iter(range(jobs))
    start = time.perf_counter()
    if not asyncio.iscoroutinefunction(client.submit):
        for num in numbers:
            client.submit("peer_job", num)
    else:
        async def loop() -> None:
            for num in numbers:
                await client.submit("peer_job", num)

        await asyncio.gather(*(loop() for _ in range(in_flight)))
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

def run_config(config: Config, workers: int, args: argparse.Namespace) -> dict[str, Any]:
    load = {"before": _load()}
    before, started = _cpu(args.redis), time.monotonic()
    done = subprocess.run(
        [venv_python(config.backend), "-m", "bench.peers", "--peer", args.peer.name,
         "--run", config.name, "--jobs", str(args.jobs), "--workers", str(workers),
         "--redis", args.redis, "--quiet", str(args.quiet)],
        cwd=ROOT, capture_output=True, text=True, check=False)
    load["after"] = _load()
    busy, redis_cpu, ours = (b - a for a, b in zip(before, _cpu(args.redis), strict=True))
    share = (busy - redis_cpu - ours) / ((time.monotonic() - started) * (os.cpu_count() or 1))
    if done.returncode != 0:
        raise RuntimeError((done.stderr.strip() or f"exit code {done.returncode}")[-2000:])
    run = dict(json.loads(done.stdout.strip().splitlines()[-1]))
    return {**run, "their_enqueue_s": config.their_enqueue,
            "their_finish_s": config.their_finish.get(workers),
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
    """Each time over the fastest of its column among the runs with as many workers, ours
    and theirs alike (in place)."""
    for workers in {r["workers"] for r in runs}:
        group = [r for r in runs if r["workers"] == workers]
        for key in ("enqueue_s", "finish_s", "their_enqueue_s", "their_finish_s"):
            values = [r[key] for r in group if r.get(key)]
            for run in group:
                run[key.replace("_s", "_x")] = round(run[key] / min(values), 2) \
                    if run.get(key) else None


def order(runs: list[dict[str, Any]], key: str) -> str:
    """Fastest first; equal times (the peer's one enqueue figure a library) joined by =."""
    ranked = sorted((r for r in runs if r.get(key)), key=lambda r: r[key])
    text = ranked[0]["name"] if ranked else ""
    for prev, run in itertools.pairwise(ranked):
        text += (" = " if run[key] == prev[key] else " < ") + run["name"]
    return text


def scaling(runs: list[dict[str, Any]]) -> list[str]:
    """Per library run with several worker counts: its finish time with the fewest workers
    over its time with each larger count, theirs and ours (above 1: more workers helped)."""
    lines = []
    for name in dict.fromkeys(r["name"] for r in runs):
        mine = sorted((r for r in runs if r["name"] == name), key=lambda r: r["workers"])
        for run in mine[1:]:
            first = mine[0]
            lines.append(
                f"- {name}, finish with {_workers(first['workers'])} over with "
                f"{_workers(run['workers'])}: "
                f"theirs {_ratio(first['their_finish_s'], run['their_finish_s'])}, "
                f"ours {_ratio(first['finish_s'], run['finish_s'])}")
    return lines


def _workers(count: int) -> str:
    return f"{count} worker" if count == 1 else f"{count} workers"


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}" if a and b else "—"


def markdown(results: dict[str, Any]) -> str:
    meta, runs = results["meta"], results["runs"]
    lines = [
        f"{meta['jobs']:,} jobs; theirs: the peer's README ({meta['their_machine']}); ours: "
        f"{meta['machine']['cpus']} CPUs, Python {meta['machine']['python']}, Redis "
        f"{meta['machine']['redis']}. x: the time over the fastest in its column, among the "
        "runs with as many workers.", "",
        "| library | workers | setup | enqueue theirs | x | enqueue ours | x | finish theirs "
        "| x | finish ours | x | ours: first job at | workers' CPU ms a job | finished "
        "| load 1 min before → after | others' CPU share |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
        "| ---: | ---: | --- | ---: |",
    ]
    for r in runs:
        lines.append(
            f"| {r['name']} ({r['version']}) | {r['workers']} | {r['setup']} "
            f"| {_s(r['their_enqueue_s'])} | {_s(r['their_enqueue_x'])} | {_s(r['enqueue_s'])} "
            f"| {_s(r['enqueue_x'])} | {_s(r['their_finish_s'])} | {_s(r['their_finish_x'])} "
            f"| {_s(r['finish_s'])} | {_s(r['finish_x'])} | {_s(r['first_job_s'])} "
            f"| {_s(r['workers_cpu_ms_per_job'])} | {r['finished']:,} "
            f"| {r['load_avg']['before'][0]:.2f} → {r['load_avg']['after'][0]:.2f} "
            f"| {r['others_cpu_share']:.0%} |")
    lines += ["", "What a job costs here (CPU time, so less disturbed by the machine's other "
              "work than the seconds above; Redis commands a job, the most sent first):", "",
              "| library | workers | client CPU ms a job | workers' CPU ms a job "
              "| Redis commands a job, enqueue | Redis commands a job, drain |",
              "| --- | ---: | ---: | ---: | --- | --- |"]
    for r in runs:
        calls = r.get("redis_calls_per_job", {})
        lines.append(f"| {r['name']} | {r['workers']} | {_s(r.get('client_cpu_ms_per_job'))} "
                     f"| {_s(r['workers_cpu_ms_per_job'])} | {_commands(calls.get('enqueue'))} "
                     f"| {_commands(calls.get('drain'))} |")
    lines += ["", "Order, fastest first:", ""]
    for workers in sorted({r["workers"] for r in runs}):
        group = [r for r in runs if r["workers"] == workers]
        for label, key in (("enqueue", "enqueue_s"), ("finish", "finish_s")):
            lines.append(f"- {label} ({_workers(workers)}), theirs: "
                         f"{order(group, 'their_' + key) or '—'}")
            lines.append(f"- {label} ({_workers(workers)}), ours: {order(group, key) or '—'}")
    lines += scaling(runs)
    for failure in results["failures"]:
        lines.append(f"- **{failure['name']} failed**: {failure['error'].splitlines()[-1]}")
    return "\n".join(lines) + "\n"


def _commands(calls: dict[str, float] | None) -> str:
    ranked = sorted((calls or {}).items(), key=lambda kv: -kv[1])
    return ", ".join(f"{name.upper()} {n:g}" for name, n in ranked) + \
        f" (all: {sum(n for _, n in ranked):.2f})" if ranked else "—"


def _s(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def table(runs: list[dict[str, Any]], title: str) -> Any:
    from rich.table import Table

    out = Table(title=f"{title} through raw mode (seconds)")
    for column in ("library", "workers", "enqueue theirs", "x", "enqueue ours", "x",
                   "finish theirs", "x", "finish ours", "x", "finished", "load before → after",
                   "others' CPU"):
        out.add_column(column, justify="left" if column == "library" else "right")
    for r in runs:
        out.add_row(r["name"], str(r["workers"]), _s(r["their_enqueue_s"]),
                    _s(r["their_enqueue_x"]), _s(r["enqueue_s"]), _s(r["enqueue_x"]),
                    _s(r["their_finish_s"]), _s(r["their_finish_x"]), _s(r["finish_s"]),
                    _s(r["finish_x"]), f"{r['finished']:,}/{r['jobs']:,}",
                    f"{r['load_avg']['before'][0]:.2f} → {r['load_avg']['after'][0]:.2f}",
                    f"{r['others_cpu_share']:.0%}")
    return out


def main(argv: Sequence[str] | None = None) -> None:
    args = parse(argv)
    peer: Peer = args.peer
    if args.run:
        print(json.dumps(run_one(peer, peer.by_name()[args.run], args.jobs, args.workers[0],
                                 args.redis, args.quiet)))
        return
    import redis
    from rich.console import Console

    try:
        info: Any = redis.Redis.from_url(args.redis, socket_connect_timeout=3).info("server")
    except redis.RedisError as exc:
        raise SystemExit(f"bench.peers: error: Redis at {args.redis} does not answer "
                         f"({exc})") from None
    console = Console(width=max(Console().width, 150))
    out: Path = args.out or ROOT / "bench" / "results" / time.strftime(
        f"peers-{peer.name}-%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"meta": {
        "peer": peer.name, "peer_url": peer.url, "peer_commit": peer.commit,
        "their_machine": peer.machine, "started": _now(),
        "command": " ".join(["python -m bench.peers", *(argv or sys.argv[1:])]),
        "jobs": args.jobs, "workers": args.workers, "enqueue_in_flight": peer.in_flight,
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "cpus": os.cpu_count(), "redis": info.get("redis_version")},
    }, "runs": [], "failures": []}
    for workers in args.workers:
        for config in args.configs:
            name = f"{config.name} ({_workers(workers)})"
            console.print(f"{name}: {args.jobs:,} jobs, {config.setup.format(w=workers)} …")
            try:
                results["runs"].append(run_config(config, workers, args))
            except Exception as exc:  # one broken library must not lose the others
                results["failures"].append({"name": name, "error": str(exc)})
                console.print(f"[red]{name}: failed: {exc}")
    ratios(results["runs"])
    results["meta"]["finished"] = _now()
    (out / "results.json").write_text(json.dumps(results, indent=1))
    (out / "peers.md").write_text(markdown(results))
    console.print(table(results["runs"], peer.url))
    console.print(f"results: {out / 'results.json'}, {out / 'peers.md'}")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


if __name__ == "__main__":
    main()
