"""Locust load on queuebench's HTTP API: POST /tasks/<workload>, as its users know it.

    locust -f bench/locustfile.py --host http://127.0.0.1:8000

opens Locust's web UI against a running `queuebench serve` (the backend is whatever
that server runs). `queuebench bench` runs this same file headless, adding:

    --qb-workload noop|sleep|cpu   the shared task to submit (default noop)
    --qb-tasks N                   stop after N accepted submissions (0: run on)
    --qb-rate R                    total submissions per second over all users (0: flat out)

A submission that is not 202 is a failure in Locust's statistics. End-to-end
completion is read by the harness from the task records, not measured here.
"""

from __future__ import annotations

from typing import Any

import gevent
from locust import FastHttpUser, constant_throughput, events, task
from locust.exception import StopUser

ARGUMENTS: dict[str, Any] = {"noop": None, "sleep": 0.01, "cpu": 20_000}
_sent = 0
_accepted = 0


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    parser.add_argument("--qb-workload", choices=sorted(ARGUMENTS), default="noop",
                        help="shared task to submit")
    parser.add_argument("--qb-arg", type=float, default=None,
                        help="its argument (default: sleep 0.01 s, cpu 20000 rounds)")
    parser.add_argument("--qb-tasks", type=int, default=0,
                        help="stop after this many accepted submissions (0: no limit)")
    parser.add_argument("--qb-rate", type=float, default=0.0,
                        help="submissions per second over all users (0: as fast as possible)")


class TaskSubmitter(FastHttpUser):
    def wait_time(self) -> float:
        options = self.environment.parsed_options
        rate = options.qb_rate if options else 0.0
        if not rate:
            return 0.0
        # The users asked for, not those spawned so far: the first ones would overshoot.
        users = max(1, options.num_users or 1)
        return float(constant_throughput(rate / users)(self))

    @task
    def submit(self) -> None:
        global _sent, _accepted
        options = self.environment.parsed_options
        workload = options.qb_workload if options else "noop"
        limit = options.qb_tasks if options else 0
        if limit and _sent >= limit:
            raise StopUser()
        _sent += 1
        argument = ARGUMENTS[workload] if options is None or options.qb_arg is None \
            else _typed(workload, options.qb_arg)
        with self.client.post(f"/tasks/{workload}", json={"args": [argument]},
                              name=f"/tasks/{workload}", catch_response=True) as response:
            if response.status_code == 202:
                _accepted += 1
                response.success()
            else:
                _sent -= 1  # not accepted: it is tried again, so exactly N get in
                response.failure(f"{response.status_code}: {response.text[:200]}")
        if limit and _accepted >= limit and self.environment.runner:
            gevent.spawn(self.environment.runner.quit)


def _typed(workload: str, value: float) -> Any:
    return int(value) if workload == "cpu" else value
