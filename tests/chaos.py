"""The randomized fault harness: whatever dies, whenever, every accepted task
ends final, its work done at least once (exactly once where no fault touched it), and
no final state ever changes.

    .venv/B/bin/python -m tests.chaos --backend B [--broker redis|rabbitmq] [--minutes N]
        [--seed S] [--appendfsync always|everysec]                   (./run chaos ...)

A stack of its own: a redis-server (AOF, `appendfsync always` unless told otherwise),
for `--broker rabbitmq` a RabbitMQ node of its own (BROKER_URL=amqp://...), the API
(`queuebench serve`) and two workers, each run as a container runs it: pid 1 of a fresh
PID namespace under a hostname of its own (unshare), so a restarted worker has the
hostname and the pid of the dead one. History in a SQLite file of the run's directory.

Everything random comes from one seed (`random.Random(seed)`): the load (which task,
its arguments, when) and the faults (which, on what, when, for how long). Real
processes on a shared machine do not replay to the millisecond: a seed reproduces the
plan, not every interleaving.

Load, over HTTP, open loop: noop, sleep(s, key), sleep with a countdown, flaky(n, key)
with `max_retries`/`retry_backoff` (enough retries, or too few: FAILURE) and batches
(`POST /tasks/{name}/batch`) of sleep or flaky. Every task has a key of its own, so its
side effect is counted (`qb:slept:<key>`, `qb:flaky:<key>`). Only a 202 is an accepted
task (a batch's ids); a 503, a timeout or a refused connection was not accepted.

Faults at random times: a worker SIGKILLed (its container restarted after a while),
a worker SIGSTOPped then SIGCONTed (its whole container, sometimes past
REDELIVERY_AFTER), the API SIGKILLed and restarted on its port, the API SIGSTOPped,
Redis SIGKILLed and restarted (same port and directory: the AOF replays), on RabbitMQ
the broker SIGKILLed and restarted. Mostly one after another; about a quarter start
while the one before is still on, on another part. A worker or API started while
Redis or the broker is away exits at once, and is started again (a restart policy).
Each fault's window (start to the end of its recovery) is logged.

Checks, per accepted task, from its record in Redis (read every half second) and its
counter at the end:
- lost: not final `REDELIVERY_AFTER` + slack after the last fault and the last submit;
  late: final, but later than that after the last fault its life overlapped;
- unexpected: a final state or result other than its task says (sleep ends SUCCESS;
  flaky with fail_times <= max_retries SUCCESS, with too few retries FAILURE, or
  SUCCESS when a fault made an attempt vanish), its side effect missing, or run more
  than planned while no fault touched it. A fault touches a task when its window
  overlaps the task's life, submit to finish (a record's started_at is its last run's:
  an earlier, killed run is not in it). Faults of the API do not count: they cannot
  run a task twice. A FAILURE is allowed where a Redis outage overlapped the task and
  the task counts in Redis: its own INCR failed (a sleep without retries), or spent a
  flaky's retry; such ones are counted apart;
- final-state changes: a record once seen final is later seen in another state, or gone.
Also reported, not judged: submits refused though sent after every fault was over (how
soon the API serves again), and the slowest task to end after its last fault.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import secrets
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis
import redis.asyncio

from bench.inject import (
    CRASH_LOSES,
    AofWatch,
    Container,
    RabbitNode,
    RedisServer,
    kill,
    rabbit_restart,
    redis_crash,
    restarting,
    spawn,
    worker_kill,
    worker_pause,
)
from core.cli.procs import Server, free_port, wait_until
from core.db.migrate import scratch_sqlite
from core.settings import BACKENDS
from core.store.keys import FLAKY_KEY, SLEPT_KEY, TASK_KEY, WORKERS_KEY, WORKERS_SEEN_KEY

FINAL = ("SUCCESS", "FAILURE", "REVOKED", "EXPIRED")
WORKERS = ("qbw1", "qbw2")
KINDS = ("worker_kill", "worker_stop", "api_kill", "api_stop", "redis_kill")
# Faults that may make a task run again; the API's cannot.
TOUCH_RUNS = ("worker_kill", "worker_stop", "redis_kill", "broker_restart")
# Seconds a kind of fault takes to recover from, nominally: the plan leaves room for it.
RECOVERY = {"worker_kill": 4.0, "worker_stop": 0.0, "api_kill": 3.0, "api_stop": 0.0,
            "redis_kill": 0.5, "broker_restart": 8.0}
OVERLAP = 0.25
POLL_EVERY = 0.5
FINALS_PER_POLL = 500  # final records read again per poll, in turn (all at the end)
MAX_IN_FLIGHT = 64  # submits waiting for an answer; past it a planned one is skipped
SUBMIT_TIMEOUT = 5.0
REFUSED_GRACE = 2.0
RECORD_FIELDS = ("state", "submitted_at", "started_at", "finished_at", "worker",
                 "deliveries", "retries", "result", "error")


@dataclass(frozen=True)
class Config:
    backend: str
    broker: str = "redis"
    seconds: float = 60.0  # of load; faults happen within it
    seed: int = 20
    appendfsync: str = "always"
    redelivery_after: float = 5.0
    heartbeat: float = 0.5
    rate: float = 8.0  # submissions a second (a batch is one)
    slack: float = 60.0  # beyond REDELIVERY_AFTER, for retries, countdowns, a busy machine
    concurrency: int = 4
    # A Redis kill is also an OS crash: what was written but not yet fsynced is lost
    # (under everysec, the AOF cut back to its size CRASH_LOSES seconds before).
    os_crash: bool = False

    @property
    def bound(self) -> float:
        return self.redelivery_after + self.slack

    def reproduce(self) -> str:
        return (f"./run chaos --backend {self.backend} --broker {self.broker} "
                f"--seed {self.seed} --minutes {self.seconds / 60:g} "
                f"--appendfsync {self.appendfsync} --redelivery-after {self.redelivery_after:g} "
                f"--heartbeat {self.heartbeat:g} --rate {self.rate:g}"
                f"{' --os-crash' if self.os_crash else ''}")


# -- the plan, from the seed ---------------------------------------------------------

@dataclass(frozen=True)
class Expect:
    """What one accepted task must come to."""

    kind: str
    counter: str | None  # the Redis key counting its side effect
    runs: int  # that count when no fault touched the task
    state: str = "SUCCESS"
    also_if_touched: tuple[str, ...] = ()  # other final states a fault may explain
    result: Any = None  # its result when no fault touched it (None: not checked)


@dataclass(frozen=True)
class Submission:
    at: float  # seconds from the start of the load
    path: str
    body: dict[str, Any]
    expects: tuple[Expect, ...]  # one per task, in the order of their ids


@dataclass(frozen=True)
class PlannedFault:
    at: float
    kind: str
    target: str
    hold: float  # seconds down (or stopped) before it comes back
    overlaps: bool = False  # starts while the fault before it is still on


def plan_faults(rng: random.Random, config: Config) -> list[PlannedFault]:
    """Faults from 3 s into the load to 3 s before its end; the kinds in shuffled
    rounds, so that a short run sees each kind once. About one in OVERLAP starts while
    the one before it is still on, on another part (a worker killed while Redis is
    away, the API frozen while the broker restarts); the rest come one after another."""
    kinds = [*KINDS, *(("broker_restart",) if config.broker == "rabbitmq" else ())]
    faults: list[PlannedFault] = []
    cycle: list[str] = []
    holds = {"worker_kill": (0, 3), "worker_stop": (0.5, 2 * config.redelivery_after),
             "api_kill": (0, 2), "api_stop": (0.5, 6), "redis_kill": (0, 3),
             "broker_restart": (0, 3)}
    end = 3.0  # when the faults so far are over, nominally
    while True:
        gap = rng.uniform(1.5, 4.0)
        if not cycle:
            cycle = rng.sample(kinds, len(kinds))
        kind = cycle.pop()
        hold = round(rng.uniform(*holds[kind]), 2)
        target = rng.choice(WORKERS) if kind.startswith("worker") else kind.split("_")[0]
        last = faults[-1] if faults else None
        overlaps = (last is not None and not last.overlaps and last.hold > 0.5
                    and rng.random() < OVERLAP)
        if last is not None and overlaps and target == last.target:
            target = next(w for w in WORKERS if w != target) if target in WORKERS else target
            overlaps = target != last.target
        if last is not None and overlaps:
            at = round(last.at + rng.uniform(0.2, last.hold), 2)
        else:
            at = round(end + gap, 2)
        if at > config.seconds - 3:
            return faults
        faults.append(PlannedFault(at, kind, target, hold, overlaps))
        end = max(end, at + hold + RECOVERY[kind])


def plan_load(rng: random.Random, config: Config) -> list[Submission]:
    """Open loop: Poisson arrivals at `rate` a second for `seconds`."""
    subs: list[Submission] = []
    at = 0.0
    while True:
        at += rng.expovariate(config.rate)
        if at >= config.seconds:
            return subs
        subs.append(submission(rng, len(subs), round(at, 3)))


def _sleep(rng: random.Random, key: str, long: bool = True) -> tuple[dict[str, Any], Expect]:
    seconds = round(rng.uniform(1, 4) if long and rng.random() < 0.3 else
                    rng.uniform(0.05, 0.5), 2)
    return ({"args": [seconds], "kwargs": {"key": key}},
            Expect("sleep", SLEPT_KEY.format(key), 1, result=seconds))


def _flaky(rng: random.Random, key: str, max_retries: int, enough: bool
           ) -> tuple[dict[str, Any], Expect]:
    if enough:
        fail_times = rng.randint(0, max_retries)
        return ({"args": [fail_times, key]},
                Expect("flaky", FLAKY_KEY.format(key), fail_times + 1, result=fail_times + 1))
    fail_times = max_retries + rng.randint(1, 2)
    return ({"args": [fail_times, key]},
            Expect("flaky-exhausted", FLAKY_KEY.format(key), max_retries + 1, state="FAILURE",
                   also_if_touched=("SUCCESS",)))


def _retries(rng: random.Random, low: int) -> dict[str, Any]:
    return {"max_retries": rng.randint(low, 4), "retry_backoff": round(rng.uniform(0.1, 0.5), 2)}


# A sleep's retries outlast any Redis outage of the plan (backoff 1 s, doubling, five
# times: 15 s at least), so a run whose key could not be counted runs again.
SLEEP_RETRIES = {"max_retries": 5, "retry_backoff": 1.0}


def submission(rng: random.Random, i: int, at: float) -> Submission:
    kind = rng.choices(("noop", "sleep", "countdown", "flaky", "flaky-exhausted", "batch"),
                       weights=(3, 3, 1, 2, 1, 1))[0]
    key = f"k{i}"
    if kind == "noop":
        payload = f"payload-{i}"
        return Submission(at, "/tasks/noop", {"args": [payload]},
                          (Expect("noop", None, 0, result=payload),))
    if kind in ("sleep", "countdown"):
        body, expect = _sleep(rng, key, long=kind == "sleep")
        # Most with retries; the rest without, whose run fails if Redis is away as it counts.
        body["options"] = dict(SLEEP_RETRIES) if rng.random() < 0.7 else {}
        if kind == "countdown":
            body["options"]["countdown"] = round(rng.uniform(0.5, 3), 2)
            expect = Expect("countdown", expect.counter, 1, result=expect.result)
        return Submission(at, "/tasks/sleep", body, (expect,))
    if kind.startswith("flaky"):
        options = _retries(rng, 1 if kind == "flaky" else 0)
        if kind == "flaky-exhausted":
            options["max_retries"] = min(options["max_retries"], 2)
        body, expect = _flaky(rng, key, options["max_retries"], kind == "flaky")
        return Submission(at, "/tasks/flaky", {**body, "options": options}, (expect,))
    name = rng.choice(("sleep", "flaky"))
    options = _retries(rng, 1) if name == "flaky" else dict(SLEEP_RETRIES)
    items, expects = [], []
    for j in range(rng.randint(2, 6)):
        if name == "sleep":
            item, expect = _sleep(rng, f"{key}-{j}", long=False)
        else:
            item, expect = _flaky(rng, f"{key}-{j}", options["max_retries"], True)
        items.append(item)
        expects.append(Expect(f"batch-{name}", expect.counter, expect.runs,
                              result=expect.result))
    return Submission(at, f"/tasks/{name}/batch", {"items": items, "options": options},
                      tuple(expects))


# -- the processes -------------------------------------------------------------------

class Api(Server):
    """`queuebench serve` on a given port: started again, it is where clients expect it."""

    def __init__(self, backend: str, env: dict[str, str], port: int, log: Path) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.args = ["serve", "--backend", backend, "--port", str(port), "--no-access-log",
                     "--log-level", "warning"]
        self.env = env
        self.log = log.open("ab")
        self.popen = spawn([sys.executable, "-m", "core.cli.main", *self.args], env, self.log)
        try:
            wait_until(self._ready, timeout=60, what=f"server {self.url}")
        except BaseException:
            kill(self)
            raise


@dataclass
class Fault:
    kind: str
    target: str
    start: float  # time.time()
    end: float  # recovered (restarted and answering, or SIGCONT sent)
    note: str = ""


class Stack:
    """Redis, the broker, the API and the two workers of one run; the faults."""

    def __init__(self, config: Config, directory: Path) -> None:
        self.config = config
        self.directory = directory
        self.restarts: list[tuple[str, dict[str, Any], dict[str, Any]]] = []  # name, before, after
        self.redis: RedisServer | None = None
        self.rabbit: RabbitNode | None = None
        self.api: Api | None = None
        self.workers: dict[str, Container] = {}
        self.incarnation: dict[str, dict[str, Any]] = {}
        self.aof: AofWatch | None = None
        try:
            self._start()
        except BaseException:
            self.close()
            raise

    def _start(self) -> None:
        config, directory = self.config, self.directory
        (directory / "redis").mkdir(parents=True, exist_ok=True)
        self.redis = RedisServer(directory / "redis", config.appendfsync)
        if config.os_crash and config.appendfsync != "always":
            self.aof = AofWatch(directory / "redis" / "appendonlydir")
        if config.broker == "rabbitmq":
            self.rabbit = RabbitNode(directory / "rabbitmq")
        self.env = {
            "REDIS_URL": self.redis.url,
            "BROKER_URL": self.rabbit.url if self.rabbit else self.redis.url,
            "DATABASE_URL": scratch_sqlite(directory / "history.db"),
            "ENVIRONMENT": "testing", "PYTHONUNBUFFERED": "1",
            "WORKER_HEARTBEAT": str(config.heartbeat),
            "REDELIVERY_AFTER": str(config.redelivery_after)}
        self.api_port = free_port()
        self.api = self.start_api()
        for name in WORKERS:
            self.workers[name] = self.start_worker(name)

    def start_api(self) -> Api:
        return restarting(lambda: Api(self.config.backend, self.env, self.api_port,
                                       self.directory / "api.log"))

    def start_worker(self, name: str) -> Container:
        return restarting(lambda: self._start_worker(name))

    def _start_worker(self, name: str) -> Container:
        args = ["worker", "--backend", self.config.backend,
                "--concurrency", str(self.config.concurrency)]
        launched = time.time()
        made = Container(name, args, self.env, self.directory / f"worker-{name}.log")
        assert self.redis is not None
        client = redis.Redis.from_url(self.redis.url, socket_timeout=2, socket_connect_timeout=2)

        def beating() -> dict[str, Any] | None:
            if not made.alive():
                raise RuntimeError(f"worker {name} exited: see {made.log.name}")
            with contextlib.suppress(redis.RedisError):
                for raw in client.hvals(WORKERS_KEY):
                    info = json.loads(raw)
                    if (info.get("host") == name and info.get("role") == "worker"
                            and info.get("started_at", 0) >= launched - 1):
                        return dict(info)
            return None

        try:
            self.incarnation[name] = wait_until(beating, timeout=90, every=0.1,
                                                what=f"worker {name}'s heartbeat")
        except BaseException:
            kill(made)
            made.log.close()
            raise
        finally:
            client.close()
        return made

    def fault(self, planned: PlannedFault) -> Fault:
        """Inject one fault and recover from it (blocking: run it off the event loop)."""
        start = time.time()
        note = getattr(self, f"_{planned.kind}")(planned.target, planned.hold)
        return Fault(planned.kind, planned.target, start, time.time(), note)

    def _worker_kill(self, name: str, hold: float) -> str:
        before = self.incarnation[name]
        worker_kill(self.workers[name])
        time.sleep(hold)  # the container's restart delay
        self.workers[name] = self.start_worker(name)
        after = self.incarnation[name]
        self.restarts.append((name, before, after))
        same = (after["host"], after["pid"]) == (before["host"], before["pid"])
        return (f"down {hold:g} s, back as host {after['host']} pid {after['pid']} "
                f"({'the same as the dead one' if same else 'NOT the same'}), "
                f"id {before['id']} -> {after['id']}")

    def _worker_stop(self, name: str, hold: float) -> str:
        return worker_pause(self.workers[name], hold)

    def _api_kill(self, _: str, hold: float) -> str:
        assert self.api is not None
        kill(self.api)
        self.api.log.close()
        time.sleep(hold)
        self.api = self.start_api()
        return f"down {hold:g} s, restarted on port {self.api_port}"

    def _api_stop(self, _: str, hold: float) -> str:
        assert self.api is not None
        self.api.signal_group(signal.SIGSTOP)
        time.sleep(hold)
        self.api.signal_group(signal.SIGCONT)
        return f"stopped {hold:g} s"

    def _redis_kill(self, _: str, hold: float) -> str:
        assert self.redis is not None
        return redis_crash(self.redis, hold, self.aof)

    def _broker_restart(self, _: str, hold: float) -> str:
        assert self.rabbit is not None
        return rabbit_restart(self.rabbit, hold)

    def close(self) -> None:
        if self.aof is not None:
            self.aof.stop()
        for proc in [*self.workers.values(), *([self.api] if self.api else [])]:
            kill(proc)
            proc.log.close()
        if self.rabbit is not None:
            self.rabbit.stop()
        if self.redis is not None:
            self.redis.stop()


# -- the run -------------------------------------------------------------------------

@dataclass
class Tracked:
    """One accepted task as seen over the run."""

    id: str
    expect: Expect
    accepted_at: float
    final: str | None = None  # the first final state seen
    final_seen_at: float | None = None
    changes: list[str] = field(default_factory=list)
    record: dict[str, str | None] = field(default_factory=dict)  # as last read

    def see(self, row: list[Any], now: float, origin: float) -> None:
        record = {k: (v.decode() if isinstance(v, bytes) else v)
                  for k, v in zip(RECORD_FIELDS, row, strict=True)}
        state = record["state"]
        if self.final is None:
            if state in FINAL:
                self.final, self.final_seen_at = state, now
        elif state != self.final:
            change = f"{self.final} -> {state or 'no record'}"
            if not self.changes or not self.changes[-1].endswith(change):
                self.changes.append(f"+{now - origin:.1f}s {change}")
        self.record = record  # all None: Redis lost the record


class Run:
    def __init__(self, config: Config, stack: Stack) -> None:
        self.config = config
        self.stack = stack
        rng = random.Random(config.seed)
        self.planned = plan_faults(rng, config)
        self.load = plan_load(rng, config)
        self.tracked: dict[str, Tracked] = {}
        self.submits: Counter[str] = Counter()  # by answer: 202, 503, ConnectError...
        self.refused: list[tuple[float, str]] = []  # when a submit was sent, its answer
        self.faults: list[Fault] = []
        self.origin = 0.0
        self.load_end = 0.0
        self.stop_polling = asyncio.Event()
        assert stack.redis is not None
        self.redis = redis.asyncio.Redis.from_url(stack.redis.url, socket_timeout=3,
                                                  socket_connect_timeout=2)

    def say(self, line: str) -> None:
        print(f"chaos: +{time.time() - self.origin:6.1f}s {line}", flush=True)

    async def main(self) -> float:
        """The load and the faults, then reading until all are final or the bound; the
        deadline that was applied."""
        self.origin = time.time()
        poller = asyncio.create_task(self.poll())
        await asyncio.gather(self.submit_all(), self.inject_all())
        quiet_since = max([self.load_end, *(f.end for f in self.faults)])
        deadline = quiet_since + self.config.bound
        self.say(f"load and faults over: waiting for every task to end (at most "
                 f"{deadline - time.time():.0f} s)")
        while time.time() < deadline and any(t.final is None for t in self.tracked.values()):
            await asyncio.sleep(POLL_EVERY)
        await asyncio.sleep(2 * POLL_EVERY)  # one more round over the last to end
        self.stop_polling.set()
        await poller
        await self.read_all()
        return deadline

    async def submit_all(self) -> None:
        timeout = httpx.Timeout(SUBMIT_TIMEOUT, connect=2.0)
        limits = httpx.Limits(max_connections=MAX_IN_FLIGHT, keepalive_expiry=2)
        async with httpx.AsyncClient(base_url=self.stack.api.url if self.stack.api else "",
                                     timeout=timeout, limits=limits) as http:
            in_flight: set[asyncio.Task[None]] = set()
            for sub in self.load:
                await asyncio.sleep(max(0.0, self.origin + sub.at - time.time()))
                if len(in_flight) >= MAX_IN_FLIGHT:
                    self.submits["skipped (too many in flight)"] += 1
                    continue
                task = asyncio.create_task(self.submit(http, sub))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
            await asyncio.gather(*in_flight)
        self.load_end = time.time()

    async def submit(self, http: httpx.AsyncClient, sub: Submission) -> None:
        sent = time.time()
        try:
            answer = await http.post(sub.path, json=sub.body)
        except httpx.HTTPError as exc:
            self.submits[type(exc).__name__] += 1
            self.refused.append((sent, type(exc).__name__))
            return
        self.submits[str(answer.status_code)] += 1
        if answer.status_code != 202:
            self.refused.append((sent, str(answer.status_code)))
            return
        body = answer.json()
        ids = body["ids"] if "ids" in body else [body["id"]]
        now = time.time()
        for task_id, expect in zip(ids, sub.expects, strict=True):
            self.tracked[task_id] = Tracked(task_id, expect, now)

    async def inject_all(self) -> None:
        """The plan's faults: each at its time once the ones before it are over, or, if
        it overlaps, that long after the start of the one before it."""
        running: set[asyncio.Task[None]] = set()
        previous = (self.origin, 0.0)  # the last fault's start, and its planned time
        for planned in self.planned:
            if planned.overlaps and running:
                at = previous[0] + planned.at - previous[1]
            else:
                await asyncio.gather(*running)
                last_end = max((f.end for f in self.faults), default=self.origin)
                at = max(self.origin + planned.at, last_end + 1.0)
            if at > self.origin + self.config.seconds - 1:
                break  # recoveries ran late: no fault after the load
            await asyncio.sleep(max(0.0, at - time.time()))
            previous = (time.time(), planned.at)
            task = asyncio.create_task(self.inject(planned))
            running.add(task)
            task.add_done_callback(running.discard)
        await asyncio.gather(*running)

    async def inject(self, planned: PlannedFault) -> None:
        self.say(f"{planned.kind} {planned.target} ..."
                 f"{' (while the one before is on)' if planned.overlaps else ''}")
        fault = await asyncio.to_thread(self.stack.fault, planned)
        self.faults.append(fault)
        self.say(f"{fault.kind} {fault.target}: {fault.note} "
                 f"(window {fault.end - fault.start:.1f} s)")

    async def poll(self) -> None:
        turn = 0
        while not self.stop_polling.is_set():
            open_ids = [t.id for t in self.tracked.values() if t.final is None]
            finals = [t.id for t in self.tracked.values() if t.final is not None]
            if finals:
                start = (turn * FINALS_PER_POLL) % len(finals)
                open_ids += finals[start:start + FINALS_PER_POLL]
            turn += 1
            with contextlib.suppress(redis.RedisError, OSError):
                await self.read(open_ids)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.stop_polling.wait(), POLL_EVERY)

    async def read(self, ids: list[str]) -> None:
        for first in range(0, len(ids), 2000):
            chunk = ids[first:first + 2000]
            async with self.redis.pipeline(transaction=False) as pipe:
                for task_id in chunk:
                    pipe.hmget(TASK_KEY.format(task_id), RECORD_FIELDS)
                rows = await pipe.execute()
            now = time.time()
            for task_id, row in zip(chunk, rows, strict=True):
                self.tracked[task_id].see(row, now, self.origin)

    async def read_all(self) -> None:
        """Every record once more, Redis given time to answer if a fault just ended."""
        deadline = time.time() + 30
        while True:
            try:
                await self.read(list(self.tracked))
                return
            except (redis.RedisError, OSError):
                if time.time() > deadline:
                    raise
                await asyncio.sleep(POLL_EVERY)

    async def counts(self) -> dict[str, int]:
        keys = [t.expect.counter for t in self.tracked.values() if t.expect.counter]
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.get(key)
            values = await pipe.execute()
        return {k: int(v or 0) for k, v in zip(keys, values, strict=True)}

    async def owners(self) -> dict[str, float]:
        """Each worker id's last heartbeat, time.time()."""
        return {(k.decode() if isinstance(k, bytes) else k): float(v)
                for k, v in await self.redis.zrange(WORKERS_SEEN_KEY, 0, -1, withscores=True)}


# -- the verdict ---------------------------------------------------------------------

@dataclass
class Report:
    config: dict[str, Any]
    seconds: float  # the whole run, start-up included
    submits: dict[str, int]
    accepted: int
    faults: list[dict[str, Any]]
    faults_by_kind: dict[str, int]
    worker_restarts: int
    same_host_and_pid: int
    lost: list[str]
    late: list[str]
    unexpected: list[str]
    twice_touched: int
    twice_untouched: list[str]
    final_changes: list[str]
    longest_to_final: float  # seconds from the last fault a task's life overlapped
    # FAILURE explained by a Redis outage during the task's own call (in the JSON only)
    redis_failures: list[str]
    # Submits not accepted though sent more than REFUSED_GRACE after every fault was
    # over: how long the API takes to serve again (reported, not judged), by answer.
    refused_after_recovery: dict[str, int]

    @property
    def passed(self) -> bool:
        return not (self.lost or self.late or self.unexpected or self.twice_untouched
                    or self.final_changes)

    def text(self) -> str:
        c = self.config
        lines = [
            f"chaos: {c['backend']} on {c['broker']}, seed {c['seed']}, {c['seconds']:g} s of "
            f"load, appendfsync {c['appendfsync']}"
            f"{' (a Redis kill is an OS crash)' if c['os_crash'] else ''}, "
            f"REDELIVERY_AFTER {c['redelivery_after']:g} s, "
            f"WORKER_HEARTBEAT {c['heartbeat']:g} s; {self.seconds:.0f} s in all",
            f"  submits: {sum(self.submits.values())}{_counts(self.submits)}",
            f"  tasks accepted: {self.accepted}",
            f"  not accepted though sent {REFUSED_GRACE:g} s or more after the faults were "
            f"over: {sum(self.refused_after_recovery.values())}"
            f"{_counts(self.refused_after_recovery)}",
            f"  faults: {len(self.faults)} "
            f"({', '.join(f'{k} {v}' for k, v in sorted(self.faults_by_kind.items()))})",
            f"  worker restarts: {self.worker_restarts}, same hostname and pid as the dead "
            f"one: {self.same_host_and_pid}",
            f"  lost (not final {c['redelivery_after'] + c['slack']:g} s after the last "
            f"fault): {len(self.lost)}",
            f"  late (final, but past that bound after its last fault): {len(self.late)}",
            f"  unexpected outcomes: {len(self.unexpected)} (and FAILURE of the task's own "
            f"Redis call while Redis was away, allowed: {len(self.redis_failures)})",
            f"  run twice: {self.twice_touched} with a fault, "
            f"{len(self.twice_untouched)} without",
            f"  final-state changes: {len(self.final_changes)}",
            f"  slowest to final after its last fault: {self.longest_to_final:.1f} s",
        ]
        for title, items in (("lost", self.lost), ("late", self.late),
                             ("unexpected", self.unexpected),
                             ("run twice without a fault", self.twice_untouched),
                             ("final-state changes", self.final_changes)):
            if items:
                lines.append(f"  {title}:")
                lines += [f"    {item}" for item in items[:25]]
                if len(items) > 25:
                    lines.append(f"    ... and {len(items) - 25} more")
        verdict = "PASSED" if self.passed else "FAILED"
        lines.append(f"chaos: {verdict} (seed {c['seed']}); reproduce: {c['reproduce']}")
        return "\n".join(lines)


def _counts(counts: dict[str, int]) -> str:
    return f" ({', '.join(f'{k}: {v}' for k, v in sorted(counts.items()))})" if counts else ""


def _window(t: Tracked) -> tuple[float, float]:
    rec = t.record
    start = float(rec.get("submitted_at") or t.accepted_at)
    end = float(rec.get("finished_at") or t.final_seen_at or time.time())
    return start, end


def _describe(t: Tracked, run: Run, beats: dict[str, float], now: float) -> str:
    """One line on a task that went wrong: its record, its owner's last heartbeat, and
    the faults from its submit to a lease after its last start (what stranded it)."""
    rec, origin = t.record, run.origin
    owner = rec.get("worker") or "-"
    beat = beats.get(owner)
    life = "no heartbeat" if beat is None else f"last beat {now - beat:.1f} s ago"

    def at(key: str) -> str:
        return f"+{float(rec[key]) - origin:.1f}s" if rec.get(key) else "-"

    error = json.loads(rec["error"]) if rec.get("error") else None
    failed = f", error {error['type']}: {error['message'][:80]}" if error else ""
    start, _ = _window(t)
    until = max(start, float(rec.get("started_at") or 0)) + run.config.redelivery_after
    near = [f"{f.kind} {f.target} +{f.start - origin:.1f}s" for f in run.faults
            if f.start <= until and f.end >= start]
    return (f"{t.id} {t.expect.kind}: {rec.get('state') or 'no record'}, owner {owner} "
            f"({life}), deliveries {rec.get('deliveries') or 0}, retries "
            f"{rec.get('retries') or 0}, submitted {at('submitted_at')}, started "
            f"{at('started_at')}, finished {at('finished_at')}{failed}; faults: "
            f"{', '.join(near) or 'none'}")


def _outcome(t: Tracked, count: int | None, touched: bool, redis_down: bool
             ) -> tuple[list[str], bool, bool]:
    """What is wrong with a final task; whether it ran more than planned; whether it
    failed for want of Redis: a task that counts its runs there (sleep with a key,
    flaky) fails when Redis is away as it counts, and a flaky one spends a retry on
    it, so a Redis outage over its life explains a FAILURE."""
    e, rec = t.expect, t.record
    state = t.final
    if not rec.get("state"):  # Redis lost the record, and its counter with it
        return [], False, False  # (a final-state change)
    if state == "FAILURE" != e.state and redis_down and e.counter:
        return [], bool(count and count > e.runs), True
    problems = []
    if not (state == e.state or (touched and state in e.also_if_touched)):
        problems.append(f"ended {state}, expected {e.state}")
    # A flaky task's result is its attempt count: a fault may add attempts.
    if (e.result is not None and state == e.state and rec.get("state")
            and not (touched and "flaky" in e.kind)):
        result = json.loads(rec["result"]) if rec.get("result") else None
        if result != e.result:
            problems.append(f"result {result!r}, expected {e.result!r}")
    twice = False
    if count is not None and state in ("SUCCESS", "FAILURE"):
        least = e.runs if state == e.state else 1
        if count < least:
            problems.append(f"side effect counted {count}, expected {least}")
        twice = count > e.runs
    return problems, twice, False


async def judge(run: Run, deadline: float, started: float) -> Report:
    counts = await run.counts()
    beats = await run.owners()
    now = time.time()
    touching = [f for f in run.faults if f.kind in TOUCH_RUNS]
    lost, late, unexpected, untouched, changes = [], [], [], [], []
    twice_touched = 0
    redis_failures: list[str] = []
    longest = 0.0
    for t in run.tracked.values():
        if t.final is None:
            lost.append(_describe(t, run, beats, now))
            continue
        start, end = _window(t)
        hit = [f for f in touching if f.start <= end and f.end >= start]
        since = max([t.accepted_at, *(f.end for f in run.faults if f.start <= end)])
        longest = max(longest, (t.final_seen_at or now) - since)
        if (t.final_seen_at or now) > since + run.config.bound:
            late.append(f"final {(t.final_seen_at or now) - since:.0f} s after its last "
                        f"fault: {_describe(t, run, beats, now)}")
        problems, twice, failed = _outcome(t, counts.get(t.expect.counter or ""), bool(hit),
                                           any(f.kind == "redis_kill" for f in hit))
        if failed:
            redis_failures.append(_describe(t, run, beats, now))
        if problems:
            unexpected.append(f"{'; '.join(problems)}: {_describe(t, run, beats, now)}")
        if twice and hit:
            twice_touched += 1
        elif twice:
            untouched.append(f"counted {counts.get(t.expect.counter or '')}, planned "
                             f"{t.expect.runs}: {_describe(t, run, beats, now)}")
        if t.changes:
            changes.append(f"{t.id} {t.expect.kind}: {', '.join(t.changes)}")
    restarts = run.stack.restarts
    return Report(
        config={**asdict(run.config), "reproduce": run.config.reproduce()},
        seconds=now - started, submits=dict(run.submits), accepted=len(run.tracked),
        faults=[{**asdict(f), "start": round(f.start - run.origin, 2),
                 "end": round(f.end - run.origin, 2)} for f in run.faults],
        faults_by_kind=dict(Counter(f.kind for f in run.faults)),
        worker_restarts=len(restarts),
        same_host_and_pid=sum((b["host"], b["pid"]) == (a["host"], a["pid"])
                              for _, b, a in restarts),
        lost=lost, late=late, unexpected=unexpected, twice_touched=twice_touched,
        twice_untouched=untouched, final_changes=changes, longest_to_final=longest,
        redis_failures=redis_failures,
        refused_after_recovery=dict(Counter(
            answer for sent, answer in run.refused
            if not any(f.start - SUBMIT_TIMEOUT <= sent <= f.end + REFUSED_GRACE
                       for f in run.faults))))


def run(config: Config, directory: Path) -> Report:
    """One run of the harness in `directory` (Redis's AOF, logs, the history file)."""
    started = time.time()
    print(f"chaos: {config.backend} on {config.broker}, seed {config.seed}: starting the "
          f"stack in {directory}", flush=True)
    stack = Stack(config, directory)
    try:
        async def go() -> Report:
            chaos = Run(config, stack)
            try:
                deadline = await chaos.main()
                return await judge(chaos, deadline, started)
            finally:
                await chaos.redis.aclose()

        return asyncio.run(go())
    finally:
        stack.close()


@contextlib.contextmanager
def workdir(keep: str | None) -> Iterator[Path]:
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        yield Path(keep)
        return
    with tempfile.TemporaryDirectory(prefix="qb-chaos-") as tmp:
        yield Path(tmp)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="./run chaos", description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", required=True, choices=BACKENDS)
    parser.add_argument("--broker", choices=("redis", "rabbitmq"), default="redis")
    parser.add_argument("--minutes", type=float, default=5.0, help="of load (default 5)")
    parser.add_argument("--seed", type=int, default=None, help="default: a new one, printed")
    parser.add_argument("--appendfsync", choices=("always", "everysec"), default="always")
    parser.add_argument("--redelivery-after", type=float, default=5.0,
                        help="REDELIVERY_AFTER, seconds (default 5; the setting's own: 30)")
    parser.add_argument("--heartbeat", type=float, default=0.5,
                        help="WORKER_HEARTBEAT, seconds (default 0.5; the setting's own: 2)")
    parser.add_argument("--os-crash", action="store_true",
                        help="a Redis kill also loses the AOF's writes not yet fsynced: "
                             f"under everysec, the last {CRASH_LOSES:g} s (always: none)")
    parser.add_argument("--rate", type=float, default=8.0, help="submissions a second")
    parser.add_argument("--keep", metavar="DIR", help="run in DIR and keep it (logs, AOF)")
    parser.add_argument("--json", metavar="FILE", help="write the report there as JSON")
    args = parser.parse_args(argv)
    if args.backend == "arq" and args.broker == "rabbitmq":
        parser.error("arq needs Redis as its broker: --broker redis")
    config = Config(backend=args.backend, broker=args.broker, seconds=args.minutes * 60,
                    seed=args.seed if args.seed is not None else secrets.randbelow(10**6),
                    appendfsync=args.appendfsync, redelivery_after=args.redelivery_after,
                    heartbeat=args.heartbeat, rate=args.rate, os_crash=args.os_crash)
    with workdir(args.keep) as directory:
        report = run(config, directory)
    print(report.text(), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({**asdict(report), "passed": report.passed},
                                              indent=2))
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
