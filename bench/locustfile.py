"""Locust load on queuebench's HTTP API: POST /tasks/<workload>, as its users know it.

    locust -f bench/locustfile.py --host http://127.0.0.1:8000

opens Locust's web UI against a running `queuebench serve` (the backend is whatever
that server runs). `queuebench bench` runs this same file headless, adding:

    --qb-workload noop|sleep|cpu   the shared task to submit (default noop)
    --qb-tasks N                   stop after N accepted submissions (0: run on)
    --qb-rate R                    open loop: submission i is intended at i / R seconds
                                   (0: flat out, each user as fast as it gets replies)
    --qb-arrivals constant|poisson the spacing of the intended times (bench/openloop.py)
    --qb-out FILE                  open loop: one JSON line per submission (intended
                                   time, how late it started, latency from the intended
                                   time, status, task id)

Open loop is wrk2's design on Locust's users: the schedule is fixed before the run,
each free user takes the next intended time and waits for it, and latency counts from
that intended time. Users are the most requests in flight: when all are busy, the next
request starts late and that lateness is recorded, never hidden (no coordinated
omission). Locust's own `constant_throughput` is closed loop per user (a user waits
for its reply before its next request), which is why it is not used for measured runs.

A submission that is not 202 is a failure in Locust's statistics. End-to-end
completion is read by the harness from the task records, not measured here.
"""

from __future__ import annotations

import json
import time
from typing import Any

import gevent
from locust import FastHttpUser, events, task
from locust.exception import StopUser

from bench.openloop import schedule

ARGUMENTS: dict[str, Any] = {"noop": None, "sleep": 0.01, "cpu": 20_000}
# Seconds between the test's start and the first intended time: every user is
# spawned by then, so the schedule does not begin with users still arriving.
LEAD = 1.0
_sent = 0
_accepted = 0
_plan: dict[str, Any] = {}   # open loop: start, offsets, next index
_lines: list[str] = []       # open loop: a JSON line per submission


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    parser.add_argument("--qb-workload", choices=sorted(ARGUMENTS), default="noop",
                        help="shared task to submit")
    parser.add_argument("--qb-arg", type=float, default=None,
                        help="its argument (default: sleep 0.01 s, cpu 20000 rounds)")
    parser.add_argument("--qb-tasks", type=int, default=0,
                        help="stop after this many accepted submissions (0: no limit)")
    parser.add_argument("--qb-rate", type=float, default=0.0,
                        help="open loop at this many submissions per second over all "
                        "users (0: flat out)")
    parser.add_argument("--qb-arrivals", choices=("constant", "poisson"), default="constant")
    parser.add_argument("--qb-seed", type=int, default=0)
    parser.add_argument("--qb-out", default="", help="open loop: where to write its lines")


@events.test_start.add_listener
def _start(environment: Any, **_: Any) -> None:
    options = environment.parsed_options
    if options is not None and options.qb_rate:
        count = options.qb_tasks or int(options.qb_rate * 60)
        _plan.update(start=time.time() + LEAD, next=0,
                     offsets=schedule(options.qb_rate, count, options.qb_arrivals,
                                      options.qb_seed))


@events.quitting.add_listener
def _write(environment: Any, **_: Any) -> None:
    options = environment.parsed_options
    if options is not None and options.qb_out:
        with open(options.qb_out, "w") as out:
            out.write(json.dumps({"start": _plan.get("start")}) + "\n")
            out.writelines(_lines)


class TaskSubmitter(FastHttpUser):
    wait_time = staticmethod(lambda: 0.0)  # flat out; the open loop waits in `submit`

    def _body(self) -> tuple[str, dict[str, Any]]:
        options = self.environment.parsed_options
        workload = options.qb_workload if options else "noop"
        argument = ARGUMENTS[workload] if options is None or options.qb_arg is None \
            else _typed(workload, options.qb_arg)
        return workload, {"args": [argument]}

    @task
    def submit(self) -> None:
        if _plan:
            return self._scheduled()
        global _sent, _accepted
        options = self.environment.parsed_options
        limit = options.qb_tasks if options else 0
        if limit and _sent >= limit:
            raise StopUser()
        _sent += 1
        workload, body = self._body()
        with self.client.post(f"/tasks/{workload}", json=body,
                              name=f"/tasks/{workload}", catch_response=True) as response:
            if response.status_code == 202:
                _accepted += 1
                response.success()
            else:
                _sent -= 1  # not accepted: it is tried again, so exactly N get in
                response.failure(f"{response.status_code}: {response.text[:200]}")
        if limit and _accepted >= limit and self.environment.runner:
            gevent.spawn(self.environment.runner.quit)

    def _scheduled(self) -> None:
        """The next intended time of the schedule: wait for it, then submit once."""
        i = _plan["next"]
        offsets = _plan["offsets"]
        if i >= len(offsets):
            raise StopUser()
        _plan["next"] = i + 1
        intended = _plan["start"] + offsets[i]
        if (delay := intended - time.time()) > 0:
            gevent.sleep(delay)
        started = time.time()
        workload, body = self._body()
        task_id, status = None, 0
        with self.client.post(f"/tasks/{workload}", json=body,
                              name=f"/tasks/{workload}", catch_response=True) as response:
            status = response.status_code
            if status == 202:
                task_id = response.json().get("id")
                response.success()
            else:
                response.failure(f"{status}: {response.text[:200]}")
        _lines.append(json.dumps({"i": i, "lag": started - intended,
                                  "latency": time.time() - intended, "status": status,
                                  "id": task_id}) + "\n")
        if len(_lines) == len(offsets) and self.environment.runner:
            gevent.spawn(self.environment.runner.quit)


def _typed(workload: str, value: float) -> Any:
    return int(value) if workload == "cpu" else value
