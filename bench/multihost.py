"""The multi-host run's client (scripts/multihost.sh check): submits `sleep` tasks over
HTTP to the API host, waits until both worker hosts have run some and the first
still runs some, cuts the first host off (`--cut`, its link set down), and waits for
every task to finish. Prints one JSON object: tasks per host, lost, the tasks that
were running on the cut host and where they ended, and the seconds from the cut to
their second start.

Which host ran a task: its record's `worker` (host:pid, core/worker/heartbeat.py), read from
Redis on the Redis host; `qb:slept:<key>` counts the runs that reached their end
(core/tasks/shared.py), so a task run to the end twice shows."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from typing import Any

import httpx
import redis

from core.cli.procs import wait_until
from core.store.keys import SLEPT_KEY, TASK_KEY, WORKERS_KEY
from core.worker.heartbeat import host_and_pid

FINAL = {"SUCCESS", "FAILURE", "REVOKED", "EXPIRED"}


def host_of(worker: str | None) -> str | None:
    return host_and_pid(worker)[0] if worker else None


def live_hosts(client: redis.Redis, within: float = 10) -> set[str]:
    now = time.time()
    return {info["host"] for info in map(json.loads, client.hgetall(WORKERS_KEY).values())
            if info.get("role") == "worker" and info.get("seen_at", 0) > now - within}


def concurrency(client: redis.Redis, host: str) -> int:
    return next(info["concurrency"]
                for info in map(json.loads, client.hgetall(WORKERS_KEY).values())
                if info.get("role") == "worker" and info.get("host") == host)


def records(client: redis.Redis, ids: list[str]) -> dict[str, dict[str, Any]]:
    fields = ("state", "worker", "deliveries", "started_at")
    with client.pipeline(transaction=False) as pipe:
        for task_id in ids:
            pipe.hmget(TASK_KEY.format(task_id), *fields)
        rows = pipe.execute()
    return {task_id: dict(zip(fields, (v.decode() if v else None for v in row), strict=True))
            for task_id, row in zip(ids, rows, strict=True)}


def on_host(found: dict[str, dict[str, Any]], host: str, states: set[str]) -> list[str]:
    return [i for i, r in found.items() if r["state"] in states and host_of(r["worker"]) == host]


def run(args: argparse.Namespace) -> dict[str, Any]:
    client = redis.Redis.from_url(args.redis, socket_timeout=10)
    cut_host, other = args.hosts.split(",")
    wait_until(lambda: {cut_host, other} <= live_hosts(client), timeout=90,
               what=f"workers on {cut_host} and {other}")
    keys = [uuid.uuid4().hex for _ in range(args.tasks)]
    with httpx.Client(base_url=args.api, timeout=30) as http:
        answer = http.post("/tasks/sleep/batch",
                           json={"items": [{"args": [args.seconds, k]} for k in keys]})
        answer.raise_for_status()
    ids: list[str] = answer.json()["ids"]
    submitted_at = time.time()

    slots = concurrency(client, cut_host)

    def cut_now() -> bool:
        """Both hosts finished some, and every slot of the cut host runs a task well
        inside its sleep: the cut strands running tasks, not one that ends or starts
        at that instant (such a race is a case of its own: see the README)."""
        found = records(client, ids)
        running = on_host(found, cut_host, {"STARTED"})
        now = time.time()
        return bool(on_host(found, cut_host, {"SUCCESS"}) and on_host(found, other, {"SUCCESS"})
                    and len(running) == slots
                    and all(now - args.seconds + 0.5 < float(found[i]["started_at"] or 0)
                            < now - 0.2 for i in running))

    wait_until(cut_now, timeout=60, every=0.02,
               what=f"tasks finished on both hosts and {slots} running on {cut_host}")
    cut_at = time.time()
    subprocess.run(shlex.split(args.cut), check=True)
    # Read after the cut: the cut host can change none of its records any more.
    stranded = on_host(records(client, ids), cut_host, {"STARTED"})

    resent: dict[str, float] = {}  # when the reaper sent a stranded task again

    def all_final() -> dict[str, dict[str, Any]] | None:
        found = records(client, ids)
        for i in stranded:
            if int(found[i]["deliveries"] or 0) and i not in resent:
                resent[i] = time.time() - cut_at
        return found if all(r["state"] in FINAL for r in found.values()) else None

    try:
        found = wait_until(all_final, timeout=args.deadline, every=0.2, what="every task final")
    except TimeoutError:
        found = records(client, ids)
    runs = [int(client.get(SLEPT_KEY.format(k)) or 0) for k in keys]
    hosts = Counter(host_of(r["worker"]) for r in found.values() if r["state"] == "SUCCESS")
    again = [float(found[i]["started_at"] or 0) - cut_at for i in stranded]
    return {
        "tasks": len(ids),
        "succeeded": sum(r["state"] == "SUCCESS" for r in found.values()),
        "lost": sum(r["state"] != "SUCCESS" for r in found.values()),
        "per_host": dict(hosts),
        "runs_to_the_end": dict(Counter(runs)),
        "cut_host": cut_host,
        "cut_after_s": round(cut_at - submitted_at, 2),
        "stranded": [{"id": i, "state": found[i]["state"], "host": host_of(found[i]["worker"]),
                      "deliveries": int(found[i]["deliveries"] or 0)} for i in stranded],
        # Seen sent again (polled every 0.2 s), and started again on the other host
        # (later when its slots are busy with the queue's other tasks).
        "resent_after_cut_s": sorted(round(s, 1) for s in resent.values()),
        "restarted_after_cut_s": [round(s, 2) for s in sorted(again)],
        # Not succeeded, or not run to the end exactly once: what happened to each.
        "odd": [{"id": i, **found[i], "runs": n, "stranded": i in stranded}
                for i, n in zip(ids, runs, strict=True)
                if n != 1 or found[i]["state"] != "SUCCESS"],
        "all_done_after_cut_s": round(time.time() - cut_at, 2),
        "redelivery_after": float(os.environ.get("REDELIVERY_AFTER", 30)),
    }


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.multihost", description=__doc__)
    p.add_argument("--api", required=True, help="the API host's URL")
    p.add_argument("--redis", required=True, help="REDIS_URL on the Redis host")
    p.add_argument("--hosts", required=True, help="the two worker hosts' names, the one "
                   "to cut first")
    p.add_argument("--cut", required=True, help="the command that cuts the first host off")
    p.add_argument("--tasks", type=int, default=40)
    p.add_argument("--seconds", type=float, default=2.0, help="each task's sleep")
    p.add_argument("--deadline", type=float, default=None,
                   help="seconds after the cut for every task to finish "
                   "(default: REDELIVERY_AFTER + 45)")
    args = p.parse_args(argv)
    if args.deadline is None:
        args.deadline = float(os.environ.get("REDELIVERY_AFTER", 30)) + 45
    json.dump(run(args), sys.stdout)
    print()


if __name__ == "__main__":
    main()
