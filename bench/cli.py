"""`queuebench bench`: Celery, arq, Dramatiq and taskiq side by side, in one run.

Every (backend, mode, workload) is one session (bench/session.py) in that backend's
own environment, with its Redis database flushed and fresh worker processes. Rounds
repeat the whole grid; within a round the backends are interleaved and their order
rotates, so a slow minute of the machine does not land on one backend.

    queuebench bench --profile quick          # all backends and modes, about 4 minutes
    queuebench bench --profile full           # 3 repeats, every workload, a load sweep, and
                                              # Celery, Dramatiq and taskiq on RabbitMQ too (~34 min
                                              # before RabbitMQ's sessions were added)
    queuebench bench --profile long           # full, longer bursts, a worker killed mid-burst

full and long also run the faults dimension (bench/faults.py) after the speed sessions:
every backend, broker and mode (the library alone with its defaults and its safe
settings, and queuebench) under each fault, counting what is lost or run twice
(`--no-faults` to skip it, `--fault-kinds` to choose).

Writes results.json, report.md, report.html and PNG charts to --out
(default bench/results/<timestamp>/).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from bench import faults, report, schema, stats
from bench.session import LOG_LEVEL, WARMUP, Spec
from core.cli.procs import ROOT, venv_python
from core.db import migrate
from core.settings import BACKENDS

# "+history": with HISTORY_ENABLED (finished tasks streamed to the database), as a user
# gets it by default; the plain modes run without. Direct also gives "batch": its
# burst again through submit_many.
MODES = ("raw", "direct", "http", "direct+history", "http+history")
WORKLOADS = ("noop", "sleep", "cpu")
LIBRARIES = {"celery": ("celery", "kombu", "redis"), "arq": ("arq", "redis"),
             "dramatiq": ("dramatiq", "redis"),
             "taskiq": ("taskiq", "taskiq-redis", "taskiq-aio-pika", "redis")}


CONFIGS = ("safe", "defaults")
# `defaults` runs the library alone and queuebench's direct path, where a worker's own
# settings are what differ; a kill session runs this workload.
DEFAULTS_MODES = ("raw", "direct")
KILL_WORKLOAD = "sleep"
# The broker dimension: RabbitMQ for the libraries that speak it, in these modes (the
# `safe` config); every other session runs on Redis.
BROKERS = ("redis", "rabbitmq")
AMQP_BACKENDS = ("celery", "dramatiq", "taskiq")
AMQP_MODES = ("raw", "direct", "http")


@dataclasses.dataclass(frozen=True)
class Profile:
    workloads: tuple[str, ...]
    repeats: int
    tasks: dict[str, int]            # burst size per workload
    rates: dict[str, list[float]]    # sustained rates per workload (the sweep)
    seconds: float                   # per sustained rate
    configs: tuple[str, ...] = ("safe",)
    kill: bool = False               # a kill session per backend, mode and config (round 1)
    kill_tasks: int = 3000
    # workloads that also run the history modes and the `defaults` config, in the first
    # round (the rest run raw, direct and http, safe): noop, where queuebench's own
    # cost shows most
    dimensions: tuple[str, ...] = ("noop",)
    brokers: tuple[str, ...] = ("redis",)
    faults: bool = False             # the faults dimension (bench/faults.py)


PROFILES = {
    "quick": Profile(workloads=("noop",), repeats=1, tasks={"noop": 1500},
                     rates={"noop": [200.0]}, seconds=2.0),
    "full": Profile(workloads=WORKLOADS, repeats=3,
                    tasks={"noop": 3000, "sleep": 2000, "cpu": 1000},
                    rates={"noop": [250.0, 500.0, 1000.0, 2000.0],
                           "sleep": [200.0], "cpu": [100.0]},
                    seconds=2.0, configs=CONFIGS, brokers=BROKERS, faults=True),
    # full, with bursts long enough that the fastest drain lasts about 5 s here, and a
    # worker killed mid-burst in every backend, mode and config
    "long": Profile(workloads=WORKLOADS, repeats=3,
                    tasks={"noop": 10000, "sleep": 4000, "cpu": 2000},
                    rates={"noop": [250.0, 500.0, 1000.0, 2000.0],
                           "sleep": [200.0], "cpu": [100.0]},
                    seconds=3.0, configs=CONFIGS, kill=True, brokers=BROKERS, faults=True),
}


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="queuebench bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", choices=sorted(PROFILES), default="quick")
    p.add_argument("--backends", default=",".join(BACKENDS))
    p.add_argument("--modes", default=None, help=f"{','.join(MODES)} (default: all; direct "
                   "on noop adds batch; the ceiling is measured whenever http is)")
    p.add_argument("--configs", default=None,
                   help="safe (acks late, prefetch 1, the same shape everywhere), defaults "
                   "(each worker as a new user starts it; raw and direct): default: the "
                   "profile's")
    p.add_argument("--kill", action=argparse.BooleanOptionalAction, default=None,
                   help="also SIGKILL a worker mid-burst per backend, mode and config, and "
                   "count the tasks that never finish (default: the profile's)")
    p.add_argument("--faults", action=argparse.BooleanOptionalAction, default=None,
                   help="after the speed sessions, the faults dimension: lost, run twice "
                   "and recovery per backend, broker, mode and fault (default: the "
                   "profile's: on in full and long)")
    p.add_argument("--fault-kinds", default=",".join(faults.FAULTS),
                   help=f"the faults of that dimension ({', '.join(faults.FAULTS)})")
    p.add_argument("--fault-tasks", type=int, default=120, help="tasks per fault cell")
    p.add_argument("--fault-parallel", type=int, default=3,
                   help="fault cells run at a time (they mostly wait)")
    p.add_argument("--brokers", default=None,
                   help="redis, rabbitmq (Celery, Dramatiq and taskiq in raw, direct and "
                   "http; the rest on Redis): default: the profile's")
    p.add_argument("--amqp", default="amqp://guest:guest@127.0.0.1:5672",
                   help="RabbitMQ: each session makes a vhost of its own there (rabbitmqctl)")
    p.add_argument("--arrivals", choices=("constant", "poisson"), default="constant",
                   help="sustained phases: evenly spaced or Poisson arrivals (open loop)")
    p.add_argument("--workloads", default=None, help="default: the profile's")
    p.add_argument("--repeats", type=int, default=None, help="default: the profile's")
    p.add_argument("--tasks", type=int, default=None, help="burst size (default: profile's)")
    p.add_argument("--rates", default=None,
                   help="sustained rates, comma-separated tasks/s (default: profile's; "
                   "'' for none)")
    p.add_argument("--seconds", type=float, default=None, help="per sustained rate")
    p.add_argument("--processes", type=int, default=2, help="worker processes per backend")
    p.add_argument("--concurrency", type=int, default=8,
                   help="tasks in flight per backend, over all its worker processes")
    p.add_argument("--users", type=int, default=32, help="Locust users (http, ceiling)")
    p.add_argument("--submitters", type=int, default=16,
                   help="concurrent submit calls in direct mode (and raw, where async)")
    p.add_argument("--batch-size", type=int, default=100,
                   help="direct mode on noop also submits the burst through submit_many, "
                   "this many tasks a call (0: not)")
    p.add_argument("--batch-calls", type=int, default=4, help="submit_many calls at a time")
    p.add_argument("--server-workers", type=int, default=1,
                   help="uvicorn processes of the API (http) and of the ceiling app alike")
    p.add_argument("--redis", default="redis://127.0.0.1:6379/9",
                   help="a Redis database the benchmark may flush")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    # --modes or --configs given: every workload and round runs them
    args.workloads_all_dimensions = args.modes is not None or args.configs is not None
    args.backends = _names(args.backends, BACKENDS, "backend", p)
    args.modes = _names(args.modes or ",".join(MODES), MODES, "mode", p)
    profile = PROFILES[args.profile]
    args.workloads = _names(args.workloads, WORKLOADS, "workload", p) if args.workloads \
        else list(profile.workloads)
    args.configs = _names(args.configs, CONFIGS, "config", p) if args.configs \
        else list(profile.configs)
    args.kill = profile.kill if args.kill is None else args.kill
    args.faults = profile.faults if args.faults is None else args.faults
    args.fault_kinds = _names(args.fault_kinds, faults.FAULTS, "fault", p)
    args.brokers = _names(args.brokers, BROKERS, "broker", p) if args.brokers \
        else list(profile.brokers)
    if "redis" not in args.brokers and not set(args.backends) & set(AMQP_BACKENDS):
        p.error(f"--brokers rabbitmq: only {', '.join(AMQP_BACKENDS)} run on RabbitMQ "
                "(arq needs Redis)")
    if args.concurrency % args.processes:
        p.error("--concurrency must be a multiple of --processes (the same slots per process)")
    if args.batch_size < 0 or args.batch_calls < 1 or args.server_workers < 1:
        p.error("--batch-size must be at least 0, --batch-calls and --server-workers at least 1")
    return args


def _names(text: str, allowed: Sequence[str], what: str, p: argparse.ArgumentParser
           ) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    for name in names:
        if name not in allowed:
            p.error(f"unknown {what} {name!r} (choose from {', '.join(allowed)})")
    return names


def _rotated(items: Sequence[Any], by: int) -> list[Any]:
    by %= max(1, len(items))
    return [*items[by:], *items[:by]]


def plan(args: argparse.Namespace, database_url: str) -> list[Spec]:
    """Every session, round by round; backends interleaved, and both the backends' and
    the modes' order (the ceiling's included) rotating from round to round."""
    profile = PROFILES[args.profile]
    repeats = args.repeats or profile.repeats
    specs: list[Spec] = []
    for repeat in range(repeats):
        order = _rotated(args.backends, repeat)
        rotated = _rotated([*args.modes, *(["ceiling"] if any(
            m.startswith("http") for m in args.modes) else [])], repeat)
        for workload in args.workloads:
            rates = profile.rates.get(workload, []) if args.rates is None else \
                [float(r) for r in args.rates.split(",") if r.strip()]
            common = dict(workload=workload, redis_url=args.redis, database_url=database_url,
                          tasks=args.tasks or profile.tasks.get(workload, 1000),
                          seconds=args.seconds or profile.seconds, processes=args.processes,
                          concurrency=args.concurrency, users=args.users,
                          submitters=args.submitters, repeat=repeat, round=repeat,
                          # submit_many's rate is the producer's alone: noop measures it
                          batch_size=args.batch_size if workload == "noop" else 0,
                          batch_calls=args.batch_calls, server_workers=args.server_workers,
                          arrivals=args.arrivals)
            # the history modes and `defaults`: in the first round, on the profile's
            # workloads (every round and workload when --modes or --configs is given)
            wide = (workload in profile.dimensions and repeat == 0) or \
                args.workloads_all_dimensions
            modes = [m for m in rotated if wide or "+" not in m]
            for mode in modes:
                if mode == "ceiling":
                    specs.append(Spec(backend="ceiling", mode="ceiling", **common))
                    continue
                for config in args.configs if wide else ["safe"]:
                    if config == "safe" or mode in DEFAULTS_MODES:
                        specs.extend(Spec(backend=b, mode=mode, rates=rates, config=config,
                                          broker=broker, amqp_url=args.amqp, **common)
                                     for b in order for broker in args.brokers
                                     if on_broker(broker, b, mode, config))
        if args.kill and repeat == 0:
            specs.extend(
                Spec(backend=b, mode=mode, workload=KILL_WORKLOAD, redis_url=args.redis,
                     database_url=database_url, tasks=profile.kill_tasks, kill=True,
                     config=config, processes=args.processes, concurrency=args.concurrency)
                for config in args.configs for mode in DEFAULTS_MODES
                if mode in args.modes for b in order)
    return specs


def on_broker(broker: str, backend: str, mode: str, config: str) -> bool:
    """Whether a session of `backend`, `mode` and `config` runs on `broker` too."""
    return broker == "redis" or (backend in AMQP_BACKENDS and mode in AMQP_MODES
                                 and config == "safe")


def run_session(spec: Spec) -> list[dict[str, Any]]:
    python = sys.executable if spec.mode == "ceiling" else venv_python(spec.backend)
    done = subprocess.run([python, "-m", "bench.session", json.dumps(dataclasses.asdict(spec))],
                          cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip().splitlines()[-1] if done.stderr.strip()
                           else f"exit code {done.returncode}")
    return list(json.loads(done.stdout))


def run_faults(args: argparse.Namespace, console: Console) -> list[dict[str, Any]]:
    """The faults dimension: its rows, in the plan's order (bench/faults.py)."""
    cells = faults.plan(args.backends, args.brokers, args.fault_kinds, tasks=args.fault_tasks)
    rows = []
    started = time.monotonic()
    for number, row in enumerate(faults.run_cells(cells, args.fault_parallel), 1):
        rows.append(row)
        shown = row.get("error") or f"lost {row['lost']}, run twice {row['run_twice']}, " \
            f"recovery {row['recovery_s']} s ({row.get('seconds')} s)"
        console.print(f"[faults {number}/{len(cells)}] {row['backend']} on {row['broker']}, "
                      f"{row['mode']}, {row['fault']}: {shown}")
    console.print(f"faults: {len(cells)} cells in {time.monotonic() - started:.0f} s")
    return rows


def settings_table(args: argparse.Namespace) -> list[dict[str, str]]:
    """Every setting that differs between backends, modes and configs, one row each:
    what the report's configuration table shows."""
    slots = args.concurrency // args.processes
    cpus = os.cpu_count() or 1
    safe = {
        "celery": (f"{args.processes} x `celery worker --pool threads -c {slots}`",
                   "late", f"1 per thread ({slots} held)", "10 priority lists, polled in order"),
        "dramatiq": (f"{args.processes} x `dramatiq --processes 1 --threads {slots}`",
                     "late (after the run)", f"= threads ({slots} held)", ""),
        "arq": (f"{args.processes} x arq Worker, max_jobs {slots}", "job kept until done",
                f"max_jobs minus running ({slots} held)", "poll delay 0.05 s, no abort polling"),
        "taskiq": (f"{args.processes} x `taskiq worker --workers 1 --max-async-tasks {slots}`",
                   "late (after the result is saved)",
                   f"XREADGROUP COUNT {slots} (up to {2 * slots - 1} held: a read while "
                   "the last slot frees)", "RedisStreamBroker, consumer group from the "
                   "stream's start (consumer_id 0); a pending entry reclaimed after 10 min"),
    }
    defaults = {
        "celery": (f"1 x `celery worker` (prefork, {cpus} children)", "early",
                   f"4 per child ({4 * cpus} held)", "one list"),
        "dramatiq": (f"1 x `dramatiq` ({cpus} processes x 8 threads)", "late (after the run)",
                     f"2 x threads ({16 * cpus} held)", ""),
        "arq": ("1 x arq Worker, max_jobs 10", "job kept until done", "up to 10 held",
                "poll delay 0.5 s"),
        "taskiq": ("1 x `taskiq worker` (2 processes x 100 async slots)",
                   "late (after the result is saved)",
                   "XREADGROUP COUNT 100 per process (up to 199 held each)",
                   "RedisStreamBroker, consumer group from new entries ($; the client "
                   "makes it before sending)"),
    }
    # RabbitMQ (safe only): the prefetch where it differs from Redis's, and the rest
    amqp = {"celery": ("", "queues with x-max-priority 9"), "dramatiq": ("", ""),
            "taskiq": (f"qos {slots} ({slots} held)", "AioPikaBroker, a quorum queue "
                       "(its default), publisher confirms")}
    rows = []
    for config, table in (("safe", safe), ("defaults", defaults)):
        if config not in args.configs:
            continue
        for backend, broker in ((b, k) for b in args.backends for k in args.brokers):
            workers, acks, prefetch, other = table[backend]
            if broker == "rabbitmq":
                held, other = amqp.get(backend, ("", other))  # arq: no RabbitMQ sessions
                prefetch = held or prefetch
            for mode in (m for m in ("raw", "direct") if on_broker(broker, backend, m, config)):
                shown = workers if mode == "raw" else \
                    f"{args.processes} x `queuebench worker -c {slots} --processes 1`: {workers}" \
                    if config == "safe" else f"1 x `queuebench worker` (its defaults): {workers}"
                rows.append({"backend": backend, "broker": broker, "mode": mode,
                             "config": config, "workers": shown, "acks": acks,
                             "prefetch": prefetch, "log level": LOG_LEVEL,
                             "producer": "the library's own client" if mode == "raw" else
                             "queuebench native (record and message in one script)"
                             if broker == "redis" else "queuebench native (record in Redis, "
                             "then an AMQP publish with confirms, aio-pika)",
                             "other": "; ".join(part for part in (other, "" if mode == "raw"
                                                else "records: 2 Lua scripts a task") if part)})
    return rows


def meta(args: argparse.Namespace, argv: Sequence[str] | None) -> dict[str, Any]:
    import redis

    info = redis.Redis.from_url(args.redis).info("server")
    slots = args.concurrency // args.processes
    return {
        "started": _now(), "profile": args.profile,
        "command": " ".join(["queuebench bench", *(argv or sys.argv[1:])]),
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "cpus": os.cpu_count(), "memory_gb": _memory_gb(),
                    "redis": info.get("redis_version")},
        "versions": {b: _versions(b) for b in args.backends},
        "settings": {"processes": args.processes, "concurrency": args.concurrency,
                     "users": args.users, "submitters": args.submitters,
                     "batch_size": args.batch_size, "batch_calls": args.batch_calls,
                     "server_workers": args.server_workers,
                     "repeats": args.repeats or PROFILES[args.profile].repeats,
                     "workloads": args.workloads, "modes": args.modes,
                     "warm_up_excluded": "a burst's completions before every worker process "
                     f"had finished one (readiness barrier; else the first {WARMUP:.0%})",
                     "arrivals": args.arrivals, "log_level": LOG_LEVEL,
                     "configs": args.configs, "kill": args.kill, "brokers": args.brokers,
                     "faults": args.fault_kinds if args.faults else [],
                     "fault_tasks": args.fault_tasks},
        "settings_table": settings_table(args),
        "mapping": {
            "celery": f"{args.processes} x `celery worker --pool threads --concurrency {slots}`"
                      " (acks late, prefetch 1)",
            "dramatiq": f"{args.processes} x dramatiq worker, 1 process x {slots} threads",
            "arq": f"{args.processes} x arq Worker, max_jobs {slots} (poll delay 0.05 s)",
            "taskiq": f"{args.processes} x `taskiq worker --workers 1 --max-async-tasks "
                      f"{slots}` (RedisStreamBroker, XREADGROUP COUNT {slots})",
        },
    }


def _headline(runs: list[dict[str, Any]]) -> str:
    burst = runs[0]
    done = burst.get("throughput_tasks_per_s")
    return ", ".join(part for part in (
        f"{done:.0f} tasks/s" if done else "",
        f"submit {burst['submit_rps']:.0f}/s" if burst.get("submit_rps") else "",
        f"lost {sum(r.get('lost') or 0 for r in runs)}" if burst.get("lost") is not None else "",
    ) if part)


def _versions(backend: str) -> dict[str, str]:
    code = ("import json, sys; from importlib.metadata import version; "
            "print(json.dumps({n: version(n) for n in sys.argv[1:]}))")
    done = subprocess.run([venv_python(backend), "-c", code, *LIBRARIES[backend]],
                          capture_output=True, text=True, check=False)
    return dict(json.loads(done.stdout)) if done.returncode == 0 else {"error": done.stderr}


def _memory_gb() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        return None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _check(args: argparse.Namespace) -> None:
    import redis

    try:
        redis.Redis.from_url(args.redis, socket_connect_timeout=3).ping()
    except redis.RedisError as exc:
        raise SystemExit(f"queuebench bench: error: Redis at {args.redis} does not answer "
                         f"({exc}); start it (./run services redis) or pass --redis") from None
    if "rabbitmq" in args.brokers and any(b in AMQP_BACKENDS for b in args.backends):
        import socket
        from urllib.parse import urlsplit

        where = urlsplit(args.amqp)
        try:  # the sessions' own environments speak AMQP; this one need not
            socket.create_connection((where.hostname or "127.0.0.1", where.port or 5672),
                                     timeout=3).close()
        except OSError as exc:
            raise SystemExit(f"queuebench bench: error: RabbitMQ at {args.amqp} does not "
                             f"answer ({exc}); start it (./run services rabbitmq), pass "
                             "--amqp, or --brokers redis") from None
    missing = [b for b in args.backends if not Path(venv_python(b)).exists()]
    if missing:
        raise SystemExit(f"queuebench bench: error: no environment for {', '.join(missing)}; "
                         "run ./run envs (or use ./run bench)")


def main(argv: Sequence[str] | None = None) -> None:
    args = parse(argv)
    _check(args)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    out: Path = args.out or ROOT / "bench" / "results" / time.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    console = Console(width=max(Console().width, 150))
    results: dict[str, Any] = {"schema_version": schema.VERSION, "meta": meta(args, argv),
                               "runs": [], "failures": []}
    with tempfile.TemporaryDirectory(prefix="qb-bench-") as scratch:
        specs = plan(args, migrate.scratch_sqlite(Path(scratch) / "bench.db"))
        # The order the sessions ran in, so the interleaving can be checked.
        results["meta"]["order"] = [f"{s.round + 1}:{s.backend}:{s.mode}:{s.workload}"
                                    + ("" if s.broker == "redis" else f":{s.broker}")
                                    for s in specs]
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=console) as progress:
            bar = progress.add_task("starting", total=len(specs))
            for number, spec in enumerate(specs, 1):
                name = (f"round {spec.round + 1}: {spec.backend} {spec.mode} {spec.workload}"
                        + ("" if spec.broker == "redis" else f" on {spec.broker}"))
                progress.update(bar, description=name)
                started = time.monotonic()
                try:
                    runs = run_session(spec)
                except Exception as exc:  # one broken session must not lose the others
                    results["failures"].append({"session": name, "error": str(exc)})
                    progress.console.print(f"[red]{name}: failed: {exc}")
                else:
                    results["runs"].extend(runs)
                    if not console.is_terminal:  # a log (CI, a pipe): a line per session
                        console.print(f"[{number}/{len(specs)}] {name}: "
                                      f"{_headline(runs)} ({time.monotonic() - started:.0f} s)")
                progress.advance(bar)
    if args.faults:
        results["faults"] = run_faults(args, console)
    results["meta"]["finished"] = _now()
    results["summary"] = stats.summarise(results["runs"])
    results["ratios"] = stats.ratios(results["summary"])
    results["overhead"] = stats.overhead(results["summary"])
    results["saturation"] = stats.saturation(results["runs"])
    (out / "results.json").write_text(json.dumps(results, indent=1))
    written = report.render(results, out)
    for sentence in report.findings(results):
        console.print(Text(f"• {sentence}"))
    console.print(report.summary_table(results))
    console.print(report.ratios_table(results))
    console.print(report.overhead_table(results))
    console.print(f"results: {out / 'results.json'}; report: "
                  f"{', '.join(p.name for p in written)}")
    if results["failures"] or any(r.get("lost") for r in results["runs"]):
        raise SystemExit(1)
