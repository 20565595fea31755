"""The benchmark's `faults` dimension: what each queue loses or runs twice when a part
dies, and how long until every task is done. One cell, run in the backend's own
environment, prints one JSON row:

    .venv/<backend>/bin/python -m bench.faults '<Cell as JSON>'

A cell is (backend, broker, mode, fault), on a stack of its own: a redis-server on a
free port (AOF, `appendfsync always`, or `everysec` for broker_crash_everysec), for
RabbitMQ a node of its own (bench/inject.py's RabbitNode; durable queues, persistent
messages), and two worker containers (qbw1, qbw2: PID and UTS namespaces, so a
restarted worker has the dead one's hostname and pid). Modes:

- `raw-defaults`, `raw-safe`: the library alone (bench/raw/<backend>_app.py, its own
  client and worker command), RAW_CONFIG=defaults (as a new user gets it) or safe (acks
  late, prefetch 1, 4 slots a worker). The task is `counted(key, seconds)`
  (bench/workloads.py): it counts its runs that reached their end under
  `qb:counted:<key>` in the Redis the library keeps its results in (the cell's Redis,
  so an OS crash of it can lose a count as it loses a message).
- `queuebench`: `queuebench worker --concurrency 4` with every other setting at its
  default (REDELIVERY_AFTER 30 s), tasks submitted with core's Backend.submit; the task
  is the shared `sleep(seconds, key)`, counting under `qb:slept:<key>`.

`tasks` tasks, each with a key of its own, are submitted with both workers running;
once a third have finished the fault is injected:

- worker_kill: qbw1 SIGKILLed (the whole container), not started again;
- worker_restart: qbw1 SIGKILLed and its container started again `hold` s later;
- broker_restart: Redis SIGKILLed and started again from its AOF (appendfsync always),
  or the RabbitMQ node SIGKILLed and started again, `hold` s later;
- broker_crash_everysec (Redis): as broker_restart under appendfsync everysec, and an OS
  crash: the AOF cut back by its last second (AofWatch);
- eta_past_visibility: no process fault; every task has a countdown (COUNTDOWN_S) longer
  than the visibility timeout, shortened to VISIBILITY_S in every mode (Celery: the Redis
  transport's `visibility_timeout`; Dramatiq: the Redis broker's `heartbeat_timeout`;
  arq: none, a deferred job waits in Redis, not in a worker; queuebench:
  VISIBILITY_TIMEOUT, its libraries' own timeout behind its heartbeat-based redelivery);
  Redis only;
- net_cut: qbw1 runs in a network namespace of its own (a veth pair to this machine);
  its link is set down for `cut_hold` s (longer than REDELIVERY_AFTER), then up.

A worker container that exits (its broker away) is started again, as a restart policy
would, except the one worker_kill killed. The cell waits until every task has finished
or `deadline` s after the fault ended.

The row (results["faults"], a list):
- backend, broker, mode, fault: the cell;
- tasks: submitted; finished: those counted at least once by the end; lost: tasks -
  finished (not finished within the deadline: a library that redelivers later, as
  Celery after its 1 h visibility timeout, shows as lost);
- run_twice: tasks counted more than once (a run that reached its end twice);
- recovery_s: seconds from the fault's start until the last task first finished (for
  eta_past_visibility, from the end of the submissions); null when some never did;
- deadline_s: how long after the fault ended the cell waited at most;
- note: what happened (the fault's own line, restarts); settings: what differed from
  the library's or queuebench's defaults; seconds: the cell's wall time;
- error (only on a cell that failed to run): why; its counts are then null.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import redis.asyncio

from bench import inject
from bench.workloads import COUNTED_KEY
from core.cli.procs import ROOT, venv_python
from core.store.keys import TASK_KEY

FAULTS = ("worker_kill", "worker_restart", "broker_restart", "broker_crash_everysec",
          "eta_past_visibility", "net_cut")
MODES = ("raw-defaults", "raw-safe", "queuebench")
BROKERS = ("redis", "rabbitmq")
AMQP_BACKENDS = ("celery", "dramatiq", "taskiq")
WORKERS = ("qbw1", "qbw2")
VISIBILITY_S = 5
COUNTDOWN_S = 10.0
POLL_S = 0.1
# What each mode sets apart from the library's (or queuebench's) defaults.
MODE_SETTINGS = {
    "raw-defaults": "the library's defaults (bench/raw, RAW_CONFIG=defaults)",
    "raw-safe": "acks late, prefetch 1, 4 slots a worker (bench/raw, RAW_CONFIG=safe)",
    "queuebench": "queuebench worker --concurrency 4; REDELIVERY_AFTER 30 s (default)",
}
ETA_SETTINGS = {
    "celery": f"visibility_timeout {VISIBILITY_S} s, unacked_restore_interval 1 s and "
              "unacked_restore_throttle 1 (Redis "
              "transport options)",
    "dramatiq": f"heartbeat_timeout {VISIBILITY_S} s (Redis broker)",
    "arq": "arq has no visibility timeout (a deferred job waits in Redis)",
    "taskiq": f"idle_timeout {VISIBILITY_S} s (RedisStreamBroker)",
    "queuebench": f"VISIBILITY_TIMEOUT {VISIBILITY_S} s (the library's own redelivery, "
                  "behind queuebench's heartbeat-based one)",
}


def settings_of(cell: Cell) -> str:
    """What differed from defaults in the cell, in words."""
    eta = cell.fault == "eta_past_visibility"
    own = ETA_SETTINGS["queuebench" if cell.mode == "queuebench" else cell.backend]
    return "; ".join([MODE_SETTINGS[cell.mode], *([own] if eta else [])])


@dataclasses.dataclass
class Cell:
    backend: str
    broker: str
    mode: str
    fault: str
    tasks: int = 120
    seconds: float = 0.2  # each task's sleep
    deadline: float = 45.0  # after the fault ended: past REDELIVERY_AFTER (30 s)
    hold: float = 1.0  # a killed worker's or broker's time down before its restart
    cut_hold: float = 35.0  # net_cut: the link down, past REDELIVERY_AFTER
    index: int = 0  # its place in the plan: keeps concurrent cells' networks apart


def planned(backend: str, broker: str, mode: str, fault: str) -> bool:
    """Whether the cell can exist: arq has no RabbitMQ; the OS crash and the eta past
    the visibility timeout are Redis's; taskiq alone has no countdown. The network cut
    runs on Redis only: a worker in its namespace does not reach the cell's RabbitMQ
    node yet (NET_CUT_AMQP), so the cut would meet no task."""
    if broker == "rabbitmq" and (backend not in AMQP_BACKENDS
                                 or fault in ("broker_crash_everysec", "eta_past_visibility",
                                              "net_cut")):
        return False
    return not (fault == "eta_past_visibility" and backend == "taskiq" and mode != "queuebench")


def plan(backends: Sequence[str], brokers: Sequence[str], kinds: Sequence[str],
         **sizes: Any) -> list[Cell]:
    cells = [Cell(b, k, m, f, **sizes) for f in kinds for k in brokers for b in backends
             for m in MODES if planned(b, k, m, f)]
    for i, cell in enumerate(cells):
        cell.index = i
    return cells


# -- the row ------------------------------------------------------------------------

def tally(first_done: Sequence[float | None], counts: Sequence[int], since: float
          ) -> dict[str, Any]:
    """The row's counts from each task's first finish (time.time(), None: never seen)
    and its final count of runs; `since`: the fault's start."""
    finished = sum(1 for c in counts if c >= 1)
    lost = len(counts) - finished
    done = [t for t in first_done if t is not None]
    return {"tasks": len(counts), "finished": finished, "lost": lost,
            "run_twice": sum(1 for c in counts if c > 1),
            "recovery_s": round(max(0.0, max(done) - since), 2) if done and not lost
            else None}


# -- the stack -----------------------------------------------------------------------

class Stack:
    """Redis, RabbitMQ, the two worker containers of one cell; the fault."""

    def __init__(self, cell: Cell, directory: Path) -> None:
        self.cell = cell
        self.directory = directory
        self.restarts = 0
        self.workers: dict[str, inject.Container] = {}
        self.dead: set[str] = set()  # killed for good
        self.host: inject.NetHost | None = None
        self.rabbit: inject.RabbitNode | None = None
        self.aof: inject.AofWatch | None = None
        (directory / "redis").mkdir(parents=True)
        if cell.fault == "net_cut":
            self.host = inject.NetHost(f"qbf{os.getpid()}", 1 + cell.index % 250)
        also = (self.host.here,) if self.host else ()
        everysec = cell.fault == "broker_crash_everysec"
        self.redis = inject.RedisServer(directory / "redis", "everysec" if everysec
                                        else "always", also_bind=also)
        if everysec:
            self.aof = inject.AofWatch(directory / "redis" / "appendonlydir")
        if cell.broker == "rabbitmq":
            self.rabbit = inject.RabbitNode(directory / "rabbitmq", also_bind=also)
        broker = self.rabbit.url if self.rabbit else self.redis.url
        # The default vhost: "//" to queuebench's URL parser, "/%2F" to pika and kombu's.
        raw_broker = broker.removesuffix("//") + "/%2F" if self.rabbit else broker
        self.env = {"REDIS_URL": self.redis.url, "RAW_REDIS_URL": self.redis.url,
                    "BROKER_URL": broker, "RAW_BROKER_URL": raw_broker,
                    "RAW_CONFIG": "defaults" if cell.mode == "raw-defaults" else "safe",
                    "QUEUE_BACKEND": cell.backend, "HISTORY_ENABLED": "false",
                    "DATABASE_URL": f"sqlite+aiosqlite:///{directory / 'history.db'}",
                    "ENVIRONMENT": "production", "LOG_LEVEL": "WARNING",
                    "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}
        if cell.fault == "eta_past_visibility":
            self.env.update(RAW_VISIBILITY_TIMEOUT=str(VISIBILITY_S),
                            VISIBILITY_TIMEOUT=str(VISIBILITY_S))
        # The raw apps read their URLs at import (here, or in submit_all): this process
        # is the cell's alone, and none may import one before this.
        if f"bench.raw.{cell.backend}_app" in sys.modules:
            raise RuntimeError("a raw app was imported before the cell's URLs were set")
        os.environ.update(self.env)
        for name in WORKERS:
            self.workers[name] = self.container(name)

    def container(self, name: str) -> inject.Container:
        cell, env = self.cell, dict(self.env)
        netns = self.host.name if self.host and name == WORKERS[0] else None
        if netns and self.host:  # the cut host reaches the servers through its link
            env = {k: v.replace("127.0.0.1", self.host.here) for k, v in env.items()}
        log = self.directory / f"worker-{name}.log"
        if cell.mode == "queuebench":
            return inject.Container(name, ["worker", "--backend", cell.backend,
                                           "--concurrency", "4"], env, log, netns=netns)
        raw = importlib.import_module(f"bench.raw.{cell.backend}_app")
        module, args, extra = raw.worker_command(4 if cell.mode == "raw-safe" else None)
        return inject.Container(name, args, {**env, **extra}, log, module=module, netns=netns)

    def keep_running(self) -> None:
        """The restart policy: a worker that exited (its broker away) starts again."""
        for name, worker in self.workers.items():
            if name not in self.dead and not worker.alive():
                worker.log.close()
                self.workers[name] = worker.again()
                self.restarts += 1

    def fault(self) -> str:
        """Inject the cell's fault; blocks until it is over; what happened."""
        cell, first = self.cell, WORKERS[0]
        if cell.fault in ("worker_kill", "worker_restart"):
            inject.worker_kill(self.workers[first])
            if cell.fault == "worker_kill":
                self.dead.add(first)
                return f"{first} SIGKILLed, not restarted"
            time.sleep(cell.hold)
            self.workers[first] = self.workers[first].again()
            return (f"{first} SIGKILLed, back {cell.hold:g} s later as host {first} pid 1 "
                    "(its PID namespace's)")
        if cell.fault in ("broker_restart", "broker_crash_everysec"):
            if self.rabbit is not None:
                return "RabbitMQ " + inject.rabbit_restart(self.rabbit, cell.hold)
            return "Redis " + inject.redis_crash(self.redis, cell.hold, self.aof)
        if cell.fault == "net_cut" and self.host is not None:
            return inject.net_cut(self.host, cell.cut_hold)
        raise ValueError(f"no fault {cell.fault!r}")

    def close(self) -> None:
        for worker in self.workers.values():
            inject.kill(worker)
            worker.log.close()
        if self.aof is not None:
            self.aof.stop()
        if self.rabbit is not None:
            self.rabbit.stop()
        self.redis.stop()
        if self.host is not None:
            self.host.close()


# -- submitting ----------------------------------------------------------------------

async def submit_all(cell: Cell, env: dict[str, str], keys: list[str], countdown: float
                     ) -> list[str]:
    """Every task through the mode's own client: the library's, or core's Backend;
    queuebench's task ids (the raw clients' handles are not kept)."""
    if cell.mode == "queuebench":
        from core.backend import backend_class
        from core.settings import Settings
        from core.store.records import connect
        from core.tasks.options import TaskOptions

        settings = Settings(queue_backend=cell.backend, redis_url=env["REDIS_URL"],
                            broker_url=env["BROKER_URL"], database_url=env["DATABASE_URL"],
                            history_enabled=False)
        client = connect(env["REDIS_URL"])
        backend = backend_class(cell.backend)(settings, client)
        options = TaskOptions(countdown=countdown) if countdown else None
        try:
            return [(await backend.submit("sleep", [cell.seconds], {"key": key}, options)).id
                    for key in keys]
        finally:
            await backend.aclose()
            await client.aclose()
    raw = importlib.import_module(f"bench.raw.{cell.backend}_app").Client()
    try:
        for key in keys:
            made = raw.counted(key, cell.seconds, countdown)
            if asyncio.iscoroutine(made):
                await made
    finally:
        await raw.aclose()
    return []


# -- the cell ------------------------------------------------------------------------

async def run(cell: Cell, directory: Path) -> dict[str, Any]:
    started = time.time()
    stack = await asyncio.to_thread(Stack, cell, directory)
    try:
        return await _run(cell, stack, started)
    finally:
        await asyncio.to_thread(stack.close)


async def _run(cell: Cell, stack: Stack, started: float) -> dict[str, Any]:
    keys = [f"{cell.index}-{i}" for i in range(cell.tasks)]
    pattern = "qb:slept:{}" if cell.mode == "queuebench" else COUNTED_KEY
    counters = [pattern.format(k) for k in keys]
    first_done: list[float | None] = [None] * cell.tasks
    client = redis.asyncio.Redis.from_url(stack.redis.url, socket_timeout=2,
                                          socket_connect_timeout=1)
    eta = cell.fault == "eta_past_visibility"

    async def counts() -> list[int]:
        values = await client.mget(counters)
        now = time.time()
        out = [int(v or 0) for v in values]
        for i, n in enumerate(out):
            if n and first_done[i] is None:
                first_done[i] = now
        return out

    async def poll_until(done: Any, until: float) -> list[int]:
        seen = [0] * cell.tasks
        while time.time() < until:
            with contextlib.suppress(redis.RedisError, OSError):
                seen = await counts()
                if done(seen):
                    return seen
            await asyncio.to_thread(stack.keep_running)
            await asyncio.sleep(POLL_S)
        return seen

    try:
        ids = await submit_all(cell, stack.env, keys, COUNTDOWN_S if eta else 0)
        if eta:
            since, note = time.time(), f"countdown {COUNTDOWN_S:g} s, visibility {VISIBILITY_S} s"
            fault_end = since + COUNTDOWN_S
        else:
            third = cell.tasks // 3
            await poll_until(lambda seen: sum(n > 0 for n in seen) >= third, time.time() + 120)
            if sum(t is not None for t in first_done) < third:
                raise RuntimeError(f"a third of the tasks not done within 120 s "
                                   f"(see {stack.directory})")
            since = time.time()
            injecting = asyncio.ensure_future(asyncio.to_thread(stack.fault))
            while not injecting.done():  # count meanwhile, Redis permitting
                with contextlib.suppress(redis.RedisError, OSError):
                    await counts()
                await asyncio.sleep(POLL_S)
            at_fault = sum(t is not None and t <= since for t in first_done)
            note, fault_end = injecting.result(), time.time()
            note += (f"; done when it began {at_fault}, when it ended "
                     f"{sum(t is not None for t in first_done)}")
        await poll_until(lambda seen: all(seen), fault_end + cell.deadline)
        final = await _final_counts(counts)
        if ids:  # where queuebench's records say the tasks ran; what of the lost ones
            note += "; ran on " + await _hosts(client, ids)
            if not all(final):
                note += "; lost ones' records: " + await _states(
                    client, [i for i, n in zip(ids, final, strict=True) if not n])
    finally:
        await client.aclose()
    restarts = f"; worker containers restarted by the policy: {stack.restarts}" \
        if stack.restarts else ""
    return judged({"backend": cell.backend, "broker": cell.broker, "mode": cell.mode,
                   "fault": cell.fault, **tally(first_done, final, since),
                   "deadline_s": cell.deadline, "note": note + restarts,
                   "settings": settings_of(cell),
                   "seconds": round(time.time() - started, 1)})


DONE_AT_FAULT = re.compile(r"done when it began (\d+),")
NET_CUT_AMQP = ("not measured: the cut worker never ran a task, its namespace does not "
                "reach the cell's RabbitMQ node (a queuebench cell ran 120 of 120 on qbw2, "
                "qbw1 restarted by the policy)")


def judged(row: dict[str, Any]) -> dict[str, Any]:
    """`row`, with an `error` when its fault met no task: every one had finished when the
    fault began (a worker with more slots than the cell has tasks, as taskiq's defaults,
    2 processes x 100, runs the whole burst at once). Its counts then measure nothing
    about the fault (an OS crash still rolls back finished tasks' counts), so no reader
    may take them for a queue that survived it."""
    found = DONE_AT_FAULT.search(row.get("note") or "")
    if found and int(found.group(1)) >= (row.get("tasks") or 0) and "error" not in row:
        return {**row, "error": f"nothing left to fault: all {found.group(1)} tasks were "
                                "done when it began (more slots than tasks)"}
    return row


async def _hosts(client: Any, ids: list[str]) -> str:
    """How many of `ids` each worker host ran last: "qbw1 40, qbw2 80"."""
    owners = [await client.hget(TASK_KEY.format(i), "worker") for i in ids]
    seen = Counter((w or b"none").decode().split(":")[0] for w in owners)
    return ", ".join(f"{host} {n}" for host, n in sorted(seen.items()))


async def _states(client: Any, ids: list[str]) -> str:
    """How many of `ids` are in each state, with their errors: "FAILURE 4 (...)"."""
    rows = [await client.hmget(TASK_KEY.format(i), "state", "error") for i in ids]
    seen = Counter((s.decode() if s else "gone", (e or b"").decode()[:80]) for s, e in rows)
    return ", ".join(f"{state} {n}" + (f" ({error})" if error else "")
                     for (state, error), n in seen.most_common())


async def _final_counts(counts: Any) -> list[int]:
    """The counts once more, Redis given time to answer if a fault just ended."""
    deadline = time.time() + 30
    while True:
        try:
            return list(await counts())
        except (redis.RedisError, OSError):
            if time.time() > deadline:
                raise
            await asyncio.sleep(0.5)


def error_row(cell: Cell, error: str) -> dict[str, Any]:
    return {"backend": cell.backend, "broker": cell.broker, "mode": cell.mode,
            "fault": cell.fault, "tasks": cell.tasks, "finished": None, "lost": None,
            "run_twice": None, "recovery_s": None, "deadline_s": cell.deadline,
            "note": "", "settings": settings_of(cell), "error": error}


# -- the parent's side: cells in their environments ----------------------------------

def run_cell(cell: Cell, timeout: float = 600) -> dict[str, Any]:
    """One cell in its backend's environment; a cell that fails is a row with `error`."""
    try:
        done = subprocess.run([venv_python(cell.backend), "-m", "bench.faults",
                               json.dumps(dataclasses.asdict(cell))], cwd=ROOT,
                              capture_output=True, text=True, check=False, timeout=timeout)
    except subprocess.TimeoutExpired:
        return error_row(cell, f"no row within {timeout:g} s")
    if done.returncode != 0 or not done.stdout.strip():
        lines = done.stderr.strip().splitlines()
        return error_row(cell, lines[-1] if lines else f"exit code {done.returncode}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def run_cells(cells: Sequence[Cell], parallel: int = 3) -> Iterator[dict[str, Any]]:
    """Rows in the cells' order, `parallel` cells at a time: a cell's figures are counts
    and seconds of recovery, not speeds, and a cell mostly waits (for a redelivery, a
    deadline), so cells share the machine."""
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        yield from pool.map(run_cell, cells)


def main() -> None:
    cell = Cell(**json.loads(sys.argv[1]))
    keep = os.environ.get("QB_FAULTS_KEEP")  # a directory to keep the logs in
    with contextlib.nullcontext(keep) if keep else \
            tempfile.TemporaryDirectory(prefix="qb-fault-") as tmp:
        row = asyncio.run(run(cell, Path(tmp)))
    print(json.dumps(row))


if __name__ == "__main__":
    main()
