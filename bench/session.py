"""One benchmark session, run in the backend's own environment:

    .venv/<backend>/bin/python -m bench.session '<Spec as JSON>'

flushes its Redis database (with the RabbitMQ broker, makes a virtual host of its own,
deleted after), then for one backend, broker, mode and workload:

- burst: `tasks` submissions with no worker running (the submit figures), then the
  workers start and drain them (completed tasks/s, warm-up excluded); a direct session
  with a `batch_size` submits the same burst again through `Backend.submit_many`, in
  batches, before the workers start (mode "batch": its submit rate is tasks/s, its
  submit latency a whole call's), and drains it after the first;
- sustained: for each offered rate, submissions at that rate for `seconds` with the
  workers running (latency at a known load; achieved against offered rate).

It prints its runs as one JSON list on stdout (the fields of results.json). Modes:
raw (the library alone, bench/raw), direct (queuebench's core interface), http
(queuebench's API under Locust) and ceiling (Locust on bench/ceiling.py, no worker).
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis as sync_redis

from bench import openloop
from bench.stats import cdf_points, percentiles
from core.backend import backend_class
from core.cli.procs import ROOT, Proc, Server, free_port, wait_until
from core.settings import Settings
from core.states import FINISHED, TaskState
from core.store.keys import INDEX_KEY, TASK_KEY
from core.store.records import RecordStore, connect

#: submissions that count as warm-up in a drain: the first completions, excluded
WARMUP = 0.05
#: a sweep stops at the first rate whose achieved throughput falls below this share
SATURATED = 0.9
#: threads for a blocking producer's calls in flight (raw Celery and Dramatiq)
PRODUCER_THREADS = 64
#: a kill session: the share of the burst done before the SIGKILL, and how long the
#: harness then waits for the rest (past queuebench's REDELIVERY_AFTER of 30 s)
KILL_AT = 0.2
KILL_WAIT = 60.0
#: Locust users of an open-loop phase: the most submissions in flight at once
OPEN_LOOP_USERS = 256
#: the log level of every worker, queuebench's and the libraries' alike
LOG_LEVEL = "WARNING"
#: processes that run tasks in one worker as a new user starts it, where not one per CPU
#: (arq's Worker is one; `taskiq worker` starts 2 children, its --workers default)
DEFAULT_PROCESSES = {"arq": 1, "taskiq": 2}
ARGUMENTS: dict[str, Any] = {"noop": None, "sleep": 0.01, "cpu": 20_000}
# (succeeded, started, finished, the worker process that ran it); None: never finished
Outcome = tuple[bool, float, float, Any] | None
FINAL = {s.value for s in FINISHED}  # the final states' words, as records store them


@dataclasses.dataclass
class Spec:
    backend: str
    mode: str
    workload: str
    redis_url: str
    database_url: str = ""
    # the broker: Redis (redis_url's), or RabbitMQ (a fresh vhost beside amqp_url; Celery,
    # Dramatiq and taskiq), task records and raw mode's results staying in Redis
    broker: str = "redis"
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672"
    tasks: int = 2000
    rates: list[float] = dataclasses.field(default_factory=list)
    seconds: float = 3.0
    processes: int = 2
    concurrency: int = 8
    users: int = 32          # Locust users (http, ceiling)
    submitters: int = 16     # concurrent submit calls (direct, and raw where async)
    batch_size: int = 0      # tasks per submit_many call in a direct session (0: none)
    batch_calls: int = 4     # submit_many calls at a time
    server_workers: int = 1  # uvicorn processes of the API and of the ceiling app
    quiet: float = 20.0      # seconds without progress before the rest counts as lost
    arrivals: str = "constant"  # sustained phases: constant spacing or Poisson
    # safe: acks late, prefetch 1, the same processes and tasks in flight everywhere;
    # defaults: each library's worker as a new user starts it (and queuebench's own)
    config: str = "safe"
    kill: bool = False          # a kill session: SIGKILL a worker mid-burst, count losses
    repeat: int = 0
    round: int = 0
    arg: Any = None

    @property
    def argument(self) -> Any:
        return ARGUMENTS[self.workload] if self.arg is None else self.arg

    @property
    def base_mode(self) -> str:
        """The mode without its variant: "direct+history" runs as "direct"."""
        return self.mode.split("+")[0]

    @property
    def worker_processes(self) -> int:
        """OS processes that run tasks: with `defaults`, what each worker starts alone
        (Celery prefork and Dramatiq a process per CPU; arq one; taskiq two children)."""
        if self.config == "safe":
            return self.processes
        return DEFAULT_PROCESSES.get(self.backend, os.cpu_count() or 1)

    @property
    def history(self) -> bool:
        """Whether queuebench keeps history (HISTORY_ENABLED) in this session."""
        return self.mode.endswith("+history")


@dataclasses.dataclass
class Phase:
    """What one burst or sustained phase submitted."""

    submitted: list[float]          # time.time() of each accepted submission
    handles: list[Any]              # what outcomes() needs: ids or the library's handles
    submit_ms: list[float]          # latency of each submit call
    seconds: float                  # from first to last submission
    rejected: int = 0               # submissions the API refused (http)
    accepted: int | None = None     # what the API said it accepted (http, ceiling)
    generator: dict[str, Any] | None = None  # an open-loop phase: offered vs achieved

    @property
    def count(self) -> int:
        return len(self.handles) if self.accepted is None else self.accepted


# -- the ways of submitting -----------------------------------------------------------

class Driver:
    """Submits one workload; tells what became of the submissions."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec

    async def submit(self) -> tuple[Any, float]:
        """One submission: (handle, its submitted time)."""
        raise NotImplementedError

    async def outcomes(self, phase: Phase) -> list[Outcome]:
        raise NotImplementedError

    async def done(self, handle: Any) -> bool:
        """Whether this one submission has finished."""
        raise NotImplementedError

    async def burst(self, tasks: int) -> Phase:
        return await self._run(tasks, rate=0.0)

    async def sustained(self, rate: float, seconds: float) -> Phase:
        return await self._run(round(rate * seconds), rate)

    async def _run(self, tasks: int, rate: float) -> Phase:
        if rate:
            return await self._open_loop(tasks, rate)
        handles: list[Any] = [None] * tasks
        submitted = [0.0] * tasks
        submit_ms = [0.0] * tasks

        async def one(i: int) -> None:
            start = time.perf_counter()
            handles[i], submitted[i] = await self.submit()
            submit_ms[i] = (time.perf_counter() - start) * 1000

        start = time.perf_counter()
        await _flat_out(one, tasks, self.spec.submitters)
        return Phase(submitted, handles, submit_ms, time.perf_counter() - start)

    async def _open_loop(self, tasks: int, rate: float) -> Phase:
        """`tasks` submissions at `rate`/s, open loop (bench/openloop.py): a task's
        submitted time is its intended time, so its latencies count from there."""
        offsets = openloop.schedule(rate, tasks, self.spec.arrivals, seed=self.spec.repeat)
        return self._phase(await openloop.drive(self.submit, offsets), rate)

    def _phase(self, out: openloop.Outcome, rate: float) -> Phase:
        accepted = [(result[0], intended, latency * 1000) for result, intended, latency
                    in zip(out.results, out.intended, out.latency, strict=True)
                    if not isinstance(result, BaseException)]
        generator = {"arrivals": self.spec.arrivals, "offered_rate": rate,
                     "achieved_rate": out.achieved_rate, "late": out.late,
                     "late_after_ms": openloop.LATE_S * 1000,
                     "lag_ms": percentiles([lag * 1000 for lag in out.lag])}
        return Phase([a[1] for a in accepted], [a[0] for a in accepted],
                     [a[2] for a in accepted], out.ended - out.start, rejected=out.failed,
                     generator=generator)

    async def aclose(self) -> None:
        pass


async def _flat_out(one: Callable[[int], Awaitable[None]], tasks: int, concurrency: int) -> None:
    """`tasks` calls, `concurrency` at a time."""
    counter = iter(range(tasks))

    async def loop() -> None:
        for i in counter:
            await one(i)

    await asyncio.gather(*(loop() for _ in range(concurrency)))


class RawDriver(Driver):
    """The library's own client (bench/raw/<backend>_app.py)."""

    def __init__(self, spec: Spec) -> None:
        super().__init__(spec)
        self.client = raw_module(spec.backend).Client()
        # A blocking producer (Celery's, Dramatiq's) runs on threads, enough for the
        # calls in flight, never on the loop that keeps the schedule.
        self.pool = ThreadPoolExecutor(max_workers=PRODUCER_THREADS,
                                       thread_name_prefix="producer")

    async def _call(self, method: Callable[..., Any], *args: Any) -> Any:
        """A client method: awaited when async, else on the producer threads."""
        if asyncio.iscoroutinefunction(method):
            return await method(*args)
        return await asyncio.get_running_loop().run_in_executor(self.pool, method, *args)

    async def submit(self) -> tuple[Any, float]:
        now = time.time()
        return await self._call(self.client.submit, self.spec.workload, self.spec.argument), now

    async def outcomes(self, phase: Phase) -> list[Outcome]:
        return list(await self.client.outcomes(phase.handles, self.spec.quiet))

    async def done(self, handle: Any) -> bool:
        return bool(await self._call(self.client.done, handle))

    async def aclose(self) -> None:
        self.pool.shutdown()
        await self.client.aclose()


class RecordDriver(Driver):
    """Outcomes from queuebench's task records in Redis (direct and http)."""

    def __init__(self, spec: Spec) -> None:
        super().__init__(spec)
        self.redis = connect(spec.redis_url)
        self.store = RecordStore(self.redis)

    async def outcomes(self, phase: Phase) -> list[Outcome]:
        await _wait_final(self.redis, phase.handles, self.spec.quiet)
        found = {}
        for first in range(0, len(phase.handles), 1000):
            found.update({r.id: r for r in
                          await self.store.get_many(phase.handles[first:first + 1000])})
        out: list[Outcome] = []
        for task_id in phase.handles:
            record = found.get(task_id)  # None: Redis lost it
            if record is None or record.state not in FINISHED:
                out.append(None)
            else:
                out.append((record.state is TaskState.SUCCESS, record.started_at or 0.0,
                            record.finished_at or 0.0, record.worker))
        return out

    async def done(self, handle: Any) -> bool:
        state = await self.redis.hget(TASK_KEY.format(handle), "state")
        return state is not None and state.decode() in FINAL

    async def aclose(self) -> None:
        await self.redis.aclose()


async def _wait_final(redis: Any, ids: list[str], quiet: float) -> None:
    """Until every id is final, or nothing moved for `quiet` seconds. Tasks finish in
    about the order they were sent, so only the oldest unfinished ones are read."""
    remaining = list(ids)
    moved = time.monotonic()
    while remaining:
        chunk = remaining[:500]
        async with redis.pipeline(transaction=False) as pipe:
            for task_id in chunk:
                pipe.hget(TASK_KEY.format(task_id), "state")
            states = await pipe.execute()
        left = [i for i, s in zip(chunk, states, strict=True) if (s or b"").decode() not in FINAL]
        if len(left) < len(chunk):
            moved = time.monotonic()
        remaining = left + remaining[len(chunk):]
        if left:
            if time.monotonic() - moved > quiet:
                return
            await asyncio.sleep(0.1)


class DirectDriver(RecordDriver):
    """queuebench's core interface, in process: `Backend.submit`."""

    def __init__(self, spec: Spec) -> None:
        super().__init__(spec)
        settings = Settings(queue_backend=spec.backend, redis_url=spec.redis_url,
                            database_url=spec.database_url, history_enabled=spec.history)
        self.backend = backend_class(spec.backend)(settings, self.redis)

    async def submit(self) -> tuple[Any, float]:
        record = await self.backend.submit(self.spec.workload, [self.spec.argument])
        return record.id, record.submitted_at or time.time()

    async def batch(self, tasks: int) -> Phase:
        """`tasks` submissions through `submit_many`, `batch_size` a call and
        `batch_calls` calls at a time; a submit latency is a whole call's."""
        size = self.spec.batch_size
        calls = -(-tasks // size)
        ids: list[list[str]] = [[] for _ in range(calls)]
        sent = [0.0] * calls
        submit_ms = [0.0] * calls
        item: tuple[list[Any], dict[str, Any]] = ([self.spec.argument], {})

        async def one(i: int) -> None:
            sent[i], start = time.time(), time.perf_counter()
            items = [item] * min(size, tasks - i * size)
            ids[i] = await self.backend.submit_many(self.spec.workload, items)
            submit_ms[i] = (time.perf_counter() - start) * 1000

        start = time.perf_counter()
        await _flat_out(one, calls, self.spec.batch_calls)
        return Phase([sent[i] for i, chunk in enumerate(ids) for _ in chunk],
                     [task_id for chunk in ids for task_id in chunk], submit_ms,
                     time.perf_counter() - start)

    async def aclose(self) -> None:
        await self.backend.aclose()
        await super().aclose()


class LocustDriver(RecordDriver):
    """Locust (bench/locustfile.py, FastHttpUser) against a server at `url`: a burst
    flat out, its ids the records the API made, read back from its index; a sustained
    phase on the open-loop schedule (Locust's own pacing is closed loop per user)."""

    url = ""

    async def _open_loop(self, tasks: int, rate: float) -> Phase:
        """Locust's users on the open-loop schedule (bench/locustfile.py): as many
        users as requests may be in flight; a request that found none free started
        late, and says so."""
        with tempfile.NamedTemporaryFile(suffix=".jsonl") as lines:
            args = ["--qb-workload", self.spec.workload, "--qb-tasks", str(tasks),
                    "--qb-rate", str(rate), "--qb-arrivals", self.spec.arrivals,
                    "--qb-seed", str(self.spec.repeat), "--qb-out", lines.name]
            if self.spec.arg is not None:
                args += ["--qb-arg", str(self.spec.arg)]
            await asyncio.to_thread(locust, self.url, OPEN_LOOP_USERS, args,
                                    run_time=60.0 + 2 * tasks / rate)
            head, *rows = Path(lines.name).read_text().splitlines()
        start = json.loads(head)["start"]
        found = sorted((json.loads(row) for row in rows), key=lambda r: r["i"])
        offsets = openloop.schedule(rate, tasks, self.spec.arrivals, seed=self.spec.repeat)
        out = openloop.Outcome(start=start, offsets=[offsets[r["i"]] for r in found],
                               lag=[r["lag"] for r in found],
                               latency=[r["latency"] for r in found],
                               results=[(r["id"], 0.0) if r["status"] == 202 else
                                        RuntimeError(str(r["status"])) for r in found])
        out.ended = max((start + o + lat for o, lat in zip(out.offsets, out.latency,
                                                           strict=True)), default=start)
        phase = self._phase(out, rate)
        phase.rejected += tasks - len(found)  # never sent: Locust ended first
        return phase

    async def _run(self, tasks: int, rate: float) -> Phase:
        if rate:
            return await self._open_loop(tasks, rate)
        since = time.time()
        args = ["--qb-workload", self.spec.workload, "--qb-tasks", str(tasks)]
        if self.spec.arg is not None:
            args += ["--qb-arg", str(self.spec.arg)]
        stats = await asyncio.to_thread(locust, self.url, self.spec.users, args,
                                        run_time=max(60.0, tasks / 50.0))
        entry = next(s for s in stats if s["name"].startswith("/tasks/"))
        submit_ms = _expand(entry["response_times"])
        seconds = entry["last_request_timestamp"] - entry["start_time"]
        ids, submitted = await self._ids_since(since)
        accepted = entry["num_requests"] - entry["num_failures"]
        return Phase(submitted, ids, submit_ms, seconds, rejected=entry["num_failures"],
                     accepted=accepted)

    async def _ids_since(self, since: float) -> tuple[list[str], list[float]]:
        pairs = await self.redis.zrangebyscore(INDEX_KEY, since, "+inf", withscores=True)
        return [i.decode() for i, _ in pairs], [float(s) for _, s in pairs]


def locust(url: str, users: int, extra: list[str], run_time: float) -> list[dict[str, Any]]:
    """Locust headless; its final statistics (--json)."""
    done = subprocess.run(
        [sys.executable, "-m", "locust", "-f", str(ROOT / "bench" / "locustfile.py"),
         "--headless", "--users", str(users), "--spawn-rate", str(users), "--host", url,
         "--run-time", f"{round(run_time)}s", "--json", "--skip-log", "--only-summary",
         "--exit-code-on-error", "0", *extra],
        capture_output=True, text=True, cwd=ROOT, check=False)
    try:
        return list(json.loads(done.stdout))
    except json.JSONDecodeError:
        raise RuntimeError(f"locust failed ({done.returncode}): {done.stderr[-2000:]}") from None


def _expand(histogram: dict[str, int]) -> list[float]:
    """Locust's response-time histogram (rounded ms -> count) as a list of values."""
    return [float(ms) for ms, count in sorted(histogram.items(), key=lambda kv: float(kv[0]))
            for _ in range(count)]


def raw_module(backend: str) -> Any:
    return importlib.import_module(f"bench.raw.{backend}_app")


# -- processes -------------------------------------------------------------------------

def worker(spec: Spec, env: dict[str, str]) -> Proc:
    """One worker: with `safe`, of `concurrency // processes` slots in one process;
    with `defaults`, the library's (or queuebench's) worker as a new user starts it."""
    slots = None if spec.config == "defaults" else max(1, spec.concurrency // spec.processes)
    if spec.base_mode == "raw":
        module, args, extra = raw_module(spec.backend).worker_command(slots)
        return Proc(args, {**env, **extra}, module=module)
    if slots is None:
        return Proc(["worker", "--backend", spec.backend], env)
    return Proc(["worker", "--backend", spec.backend, "--concurrency", str(slots),
                 "--processes", "1"], env)


@contextmanager
def workers(spec: Spec, env: dict[str, str]) -> Iterator[list[Proc]]:
    """`processes` workers (`safe`), or one as a new user starts it (`defaults`)."""
    procs: list[Proc] = []
    try:
        for _ in range(spec.processes if spec.config == "safe" else 1):
            procs.append(worker(spec, env))
        if spec.history and spec.base_mode == "direct":
            # No API runs its history writer here: the writer alone, as without an API.
            procs.append(Proc(["history"], env))
        yield procs
    finally:
        for proc in procs:
            proc.stop()


@contextmanager
def server(spec: Spec, env: dict[str, str]) -> Iterator[str]:
    # The API and the ceiling app alike (uvicorn processes, logs), so their ratio is fair.
    processes = str(spec.server_workers)
    if spec.base_mode == "http":
        api = Server(spec.backend, env, None, "--workers", processes)
        try:
            if spec.server_workers > 1:
                settle(api)
            yield api.url
        finally:
            api.stop()
        return
    port = free_port()
    bare = Proc(["bench.ceiling:app", "--port", str(port), "--no-access-log",
                 "--log-level", "warning", "--workers", processes], env, module="uvicorn")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _answers(f"{url}/health", bare), timeout=30, what="ceiling app")
        if spec.server_workers > 1:
            settle(bare)
        yield url
    finally:
        bare.stop()


def settle(proc: Proc, timeout: float = 30.0) -> None:
    """Until `proc` and its children use under 5% of a CPU for a second: the first
    uvicorn worker to answer is not the last to start (nor one that uvicorn's health
    check killed and started again). Gives up quietly after `timeout`."""
    quiet = 0.05 * os.sysconf("SC_CLK_TCK")
    deadline = time.monotonic() + timeout
    before = _cpu_ticks(proc.pid)
    while time.monotonic() < deadline:
        time.sleep(1.0)
        now = _cpu_ticks(proc.pid)
        if 0 <= now - before <= quiet:  # below 0: a process went, one may be starting
            return
        before = now


def _cpu_ticks(session: int) -> int:
    """CPU time so far, in clock ticks, of the live processes of a session (Linux /proc;
    Proc starts each in a session of its own)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if int(fields[3]) == session:  # fields from the state on: session, ..., utime, stime
            total += int(fields[11]) + int(fields[12])
    return total


def _answers(url: str, proc: Proc) -> bool:
    if not proc.alive():
        raise RuntimeError(f"exited:\n{proc.output()}")
    try:
        with urllib.request.urlopen(url, timeout=1) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


# -- figures -----------------------------------------------------------------------------

def figures(spec: Spec, phase: Phase, outcomes: list[Outcome], kind: str,
            rate: float | None) -> dict[str, Any]:
    done = [(s, o) for s, o in zip(phase.submitted, outcomes, strict=True) if o is not None]
    ok = [(s, o[1], o[2]) for s, o in done if o is not None and o[0]]
    wait = [(start - sub) * 1000 for sub, start, _ in ok]
    e2e = [(end - sub) * 1000 for sub, _, end in ok]
    ready = readiness([o for _, o in done if o is not None and o[0]],
                      spec.worker_processes) if kind == "burst" else None
    run: dict[str, Any] = {
        "backend": spec.backend, "workload": spec.workload, "phase": kind,
        # a `defaults` session is its own mode in the tables: "raw/defaults"
        "mode": spec.mode if spec.config == "safe" else f"{spec.mode}/{spec.config}",
        "repeat": spec.repeat, "round": spec.round, "tasks": phase.count,
        "offered_rate": rate, "duration_s": round(phase.seconds, 3),
        "submit_rps": phase.count / phase.seconds if phase.seconds > 0 else None,
        "throughput_tasks_per_s": _throughput(ok, kind, ready),
        "readiness": ready,
        "latency_ms": {"submit": percentiles(phase.submit_ms), "queue_wait": percentiles(wait),
                       "end_to_end": percentiles(e2e)},
        "latency_cdf_ms": {"end_to_end": cdf_points(e2e), "queue_wait": cdf_points(wait)},
        "errors": phase.rejected + len(done) - len(ok),
        "history": spec.history,
        "config": spec.config,
        "broker": spec.broker,
        "generator": phase.generator,
        # Accepted but never finished, including any the API accepted without a record.
        "lost": max(phase.count, len(outcomes)) - len(done),
    }
    return run


def limited_by(run: dict[str, Any]) -> str | None:
    """What kept a sustained run from its offered rate, if anything: the submit path
    (accepted submissions below 90% of the offered rate: the API or producer, or every
    generator slot waiting on one), the generator itself (the rate was reached, but
    over 1% of its calls started more than LATE_S late: its own CPU, not the system),
    or the workers (completions below 90% of what was really submitted)."""
    generator = run.get("generator") or {}
    offered = run.get("offered_rate") or 0.0
    achieved = generator.get("achieved_rate") or 0.0
    done = run.get("throughput_tasks_per_s") or 0.0
    if achieved < SATURATED * offered:
        return "submit"
    if run.get("tasks") and generator.get("late", 0) > 0.01 * run["tasks"]:
        return "generator"
    if done < SATURATED * min(offered, achieved):
        return "workers"
    return None


def readiness(ok: list[tuple[bool, float, float, Any]], processes: int) -> dict[str, Any]:
    """The burst's readiness barrier: the time by which every worker process had
    finished a task (so was up, connected and running), from the worker each outcome
    names. Before it, start-up skew between processes would be inside the window."""
    first: dict[Any, float] = {}
    for _, _, end, worker in ok:
        if worker is not None and end < first.get(worker, float("inf")):
            first[worker] = end
    ends = sorted(end for _, _, end, _ in ok)
    at = max(first.values()) if len(first) >= processes else None
    before = sum(end <= at for end in ends) if at is not None else None
    # A barrier that leaves under half the burst says the burst is too short for
    # the processes' start-up skew: the drain then counts from the first WARMUP.
    used = before is not None and len(ends) - before >= max(2, len(ends) // 2)
    return {"workers_seen": len(first), "workers_expected": processes, "at": at,
            "before": before, "used": used,
            "drain_s": round(ends[-1] - at, 3) if at is not None and ends else None}


def _throughput(ok: list[tuple[float, float, float]], kind: str,
                ready: dict[str, Any] | None = None) -> float | None:
    """burst: completions per second once every worker process is ready (readiness),
    or, when not every process ran a task, once the first WARMUP of them are done;
    sustained: completions per second from the first submission to the last finish."""
    if len(ok) < 2:
        return None
    ends = sorted(end for _, _, end in ok)
    if kind == "burst":
        at = (ready or {}).get("at") if (ready or {}).get("used") else None
        skip = sum(end <= at for end in ends) if at is not None else \
            max(1, int(len(ends) * WARMUP))
        if len(ends) - skip < 2:
            return None
        span = ends[-1] - ends[skip - 1]
        return (len(ends) - skip) / span if span > 0 else None
    span = ends[-1] - min(sub for sub, _, _ in ok)
    return len(ends) / span if span > 0 else None


def ceiling_run(spec: Spec, phase: Phase) -> dict[str, Any]:
    return {
        "backend": "ceiling", "workload": spec.workload, "mode": "ceiling", "phase": "burst",
        "repeat": spec.repeat, "round": spec.round, "tasks": phase.count,
        "offered_rate": None, "duration_s": round(phase.seconds, 3),
        "submit_rps": phase.count / phase.seconds if phase.seconds > 0 else None,
        "throughput_tasks_per_s": None,
        "latency_ms": {"submit": percentiles(phase.submit_ms)},
        "latency_cdf_ms": {}, "errors": phase.rejected, "lost": None,
    }


# -- the session -------------------------------------------------------------------------

@contextmanager
def broker_url(spec: Spec) -> Iterator[str]:
    if spec.broker == "redis":
        yield spec.redis_url
        return
    from core.brokers.amqp import scratch_vhost

    with scratch_vhost(spec.amqp_url, "qb-bench") as url:
        yield url


async def run(spec: Spec) -> list[dict[str, Any]]:
    sync_redis.Redis.from_url(spec.redis_url).flushdb()
    with broker_url(spec) as url:
        return await _run(spec, url)


async def _run(spec: Spec, broker: str) -> list[dict[str, Any]]:
    env = {"REDIS_URL": spec.redis_url, "RAW_REDIS_URL": spec.redis_url,
           "BROKER_URL": broker, "RAW_BROKER_URL": broker,
           "QUEUE_BACKEND": spec.backend if spec.backend != "ceiling" else "arq",
           "DATABASE_URL": spec.database_url,
           "HISTORY_ENABLED": "true" if spec.history else "false",
           "ENVIRONMENT": "production", "LOG_LEVEL": LOG_LEVEL, "RAW_CONFIG": spec.config}
    os.environ.update(env)  # raw modules read RAW_REDIS_URL at import
    if spec.base_mode in ("http", "ceiling"):
        with server(spec, env) as url:
            return await _session(spec, env, url)
    return await _session(spec, env, "")


async def _session(spec: Spec, env: dict[str, str], url: str) -> list[dict[str, Any]]:
    driver: Driver
    if spec.base_mode in ("http", "ceiling"):
        driver = LocustDriver(spec)
        driver.url = url
    else:
        driver = RawDriver(spec) if spec.base_mode == "raw" else DirectDriver(spec)
    try:
        if spec.kill:
            return [await _kill(spec, env, driver)]
        burst = await driver.burst(spec.tasks)
        if spec.mode == "ceiling":
            return [ceiling_run(spec, burst)]
        # Queued behind the burst, so the burst drains as it would alone.
        batch = await driver.batch(spec.tasks) if isinstance(driver, DirectDriver) and \
            spec.mode == "direct" and spec.batch_size > 0 else None
        with workers(spec, env):
            runs = [figures(spec, burst, await driver.outcomes(burst), "burst", None)]
            if batch is not None:
                as_batch = dataclasses.replace(spec, mode="batch")
                runs.append({**figures(as_batch, batch, await driver.outcomes(batch),
                                       "burst", None), "batch_size": spec.batch_size})
            for rate in sorted(spec.rates):
                phase = await driver.sustained(rate, spec.seconds)
                run = figures(spec, phase, await driver.outcomes(phase), "sustained", rate)
                run["limited_by"] = limited_by(run)
                runs.append(run)
                if run["limited_by"]:
                    break  # saturated: higher rates would only queue up
        return runs
    finally:
        await driver.aclose()


async def _kill(spec: Spec, env: dict[str, str], driver: Driver) -> dict[str, Any]:
    """A worker dies mid-burst: the burst is submitted, the workers start, and once
    KILL_AT of the burst is done one worker is SIGKILLed (its whole process group) and a fresh one
    started in its place, as a supervisor would. Whatever has not finished KILL_WAIT
    seconds later (time for queuebench's reaper, REDELIVERY_AFTER 30 s by default)
    counts as lost: the library may still redeliver it, after its own visibility
    timeout (Celery, Dramatiq: an hour with queuebench's settings), or never."""
    burst = await driver.burst(spec.tasks)
    with workers(spec, env) as procs:
        # Mid-burst: once KILL_AT of it is done, every worker has long been taking tasks.
        mark = burst.handles[int(len(burst.handles) * KILL_AT)]
        deadline = time.monotonic() + spec.quiet * 3
        while not await driver.done(mark) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        procs[0].signal_group(signal.SIGKILL)
        killed = time.time()
        procs.append(worker(spec, env))
        quiet, spec.quiet = spec.quiet, KILL_WAIT
        try:
            outcomes = await driver.outcomes(burst)
        finally:
            spec.quiet = quiet
    run = figures(spec, burst, outcomes, "kill", None)
    ends = [o[2] for o in outcomes if o is not None]
    run.update(killed_at_share=KILL_AT, finished_before_kill=sum(e < killed for e in ends),
               lost_share=run["lost"] / max(1, burst.count))
    return run


def main() -> None:
    spec = Spec(**json.loads(sys.argv[1]))
    print(json.dumps(asyncio.run(run(spec))))


if __name__ == "__main__":
    main()
