"""The fault harness's short run (tests/chaos.py): a minute of mixed load through the
API with random faults (workers, the API, Redis, and RabbitMQ with `--broker
rabbitmq`), then every accepted task must be final, as its task says, its work done
once where no fault touched it, and no final state may ever change.

A fixed seed (QB_CHAOS_SEED overrides it); REDELIVERY_AFTER 5 s and WORKER_HEARTBEAT
0.5 s, so that a dead worker's tasks come back within the run. The stack is the
harness's own (a redis-server, a RabbitMQ node, the API and two workers in PID
namespaces): the suite's shared services are not touched. A failure prints the seed
and the command that runs the same plan again (`./run chaos ...`, longer with
`--minutes`).
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.chaos import KINDS, Config, plan_faults, plan_load, run
from tests.conftest import service_down

pytestmark = pytest.mark.faults

SEED = int(os.environ.get("QB_CHAOS_SEED", "20"))


def test_every_accepted_task_ends_once_whatever_dies(backend_name: str, tmp_path: Path,
                                                     request: pytest.FixtureRequest) -> None:
    broker = request.config.getoption("--broker")
    if broker == "rabbitmq" and backend_name == "arq":
        pytest.skip("arq needs Redis as its broker")
    probe = ["unshare", "--pid", "--fork", "--kill-child", "--uts", "--mount-proc", "true"]
    if shutil.which("unshare") is None or subprocess.run(probe, capture_output=True).returncode:
        service_down("the workers run in PID and UTS namespaces: unshare, as root")
    if shutil.which("redis-server") is None:
        service_down("redis-server is not on PATH (./run services redis)")
    config = Config(backend=backend_name, broker=broker, seconds=60, seed=SEED)
    try:
        report = run(config, tmp_path)
    except FileNotFoundError as exc:  # rabbitmq-server not installed
        service_down(str(exc))
    print(report.text())
    assert report.passed, report.text()
    # The harness's own premise: a worker started again is the dead one's hostname and pid.
    assert report.same_host_and_pid == report.worker_restarts, report.text()


def test_a_seed_gives_one_plan_with_every_kind_of_fault() -> None:
    config = Config(backend="arq", broker="rabbitmq", seconds=60, seed=SEED)

    def plan(seed: int) -> tuple[list[object], list[object]]:
        rng = random.Random(seed)
        return plan_faults(rng, config), plan_load(rng, config)

    assert plan(SEED) == plan(SEED)
    assert plan(SEED) != plan(SEED + 1)
    faults, load = plan(SEED)
    assert {f.kind for f in faults} == {*KINDS, "broker_restart"}
    assert all(3 < f.at < 57 for f in faults)
    assert 300 < len(load) < 700
