"""The stack across network hosts (scripts/multihost.sh, `ip netns` on this machine):
Redis, the API and two workers each on a host of its own, tasks submitted over HTTP
from a fifth. They run on both worker hosts, none is lost, none runs to its end twice,
and the tasks running on a worker host whose link goes down mid-run run again on the
other host once its heartbeat is REDELIVERY_AFTER old: with the default, 30 s.

Needs root and `ip`: skipped locally without them, failed in CI (CI=true)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from core.cli.procs import ROOT
from core.settings import Settings
from tests.conftest import IN_CI

SCRIPT = ROOT / "scripts" / "multihost.sh"
TASKS = 40

pytestmark = pytest.mark.netns


@pytest.fixture
def netns_ready() -> None:
    missing = [tool for tool in ("ip", "unshare", "setsid", "flock", "redis-server")
               if not shutil.which(tool)]
    reason = ("not root" if os.geteuid() != 0 else
              f"no {', '.join(missing)} on PATH" if missing else None)
    if reason:
        message = f"the multi-host run needs root and ip netns: {reason}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


def test_tasks_run_on_both_worker_hosts_and_a_cut_hosts_tasks_run_on_the_other(
        netns_ready: None, backend_name: str, tmp_path: Path) -> None:
    redelivery_after = Settings(_env_file=None).redelivery_after  # type: ignore[call-arg]
    env = {**os.environ, "QB_MH_STATE": str(tmp_path), "QB_MH_TASKS": str(TASKS)}
    env.pop("REDELIVERY_AFTER", None)  # the default a user gets
    try:
        run = subprocess.run([str(SCRIPT), "run", backend_name], env=env, capture_output=True,
                             text=True, timeout=240)
    finally:  # also when the script was killed before its own teardown
        subprocess.run([str(SCRIPT), "down"], capture_output=True, timeout=60)
    logs = "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
                     for p in sorted(tmp_path.glob("*.log")))
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr}\n{logs}"
    figures = json.loads(run.stdout.strip().splitlines()[-1])
    print(json.dumps(figures))

    assert (figures["tasks"], figures["succeeded"], figures["lost"]) == (TASKS, TASKS, 0)
    assert set(figures["per_host"]) == {"qbmh-w1", "qbmh-w2"}  # both hosts ran tasks
    assert sum(figures["per_host"].values()) == TASKS
    assert figures["runs_to_the_end"] == {"1": TASKS}  # each ran to its end once
    stranded = figures["stranded"]
    assert stranded, "the cut host ran nothing when it was cut"
    for task in stranded:  # the cut host's running tasks ended on the other host
        assert (task["state"], task["host"], task["deliveries"]) == ("SUCCESS", "qbmh-w2", 1)
    # Not before the cut host's heartbeat (every 2 s) was REDELIVERY_AFTER old.
    assert figures["redelivery_after"] == redelivery_after
    heartbeat = Settings(_env_file=None).worker_heartbeat  # type: ignore[call-arg]
    assert len(figures["resent_after_cut_s"]) == len(stranded)
    assert min(figures["resent_after_cut_s"]) >= redelivery_after - heartbeat
    assert not list(Path("/run/netns").glob("qbmh-*")), "namespaces left behind"
