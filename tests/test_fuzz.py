"""schemathesis against the API of a real server and worker of the backend: every
operation of /openapi.json (tasks, batches, schedules, users, health, metrics), its
examples, coverage, fuzzing and stateful phases (links from the Location headers),
all checks: no 5xx, every response as its schema says, no undocumented status,
schema-valid requests accepted and schema-violating ones refused.

`use_after_free` is left out: DELETE /tasks/{id} cancels, and the task stays readable
as REVOKED (shared/API.md). /wait's timeout is fixed short (tests/schemathesis.toml).
A failure prints schemathesis's report: each case with a curl line to reproduce it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from core.cli.procs import Proc, Server
from tests.conftest import redis_database

pytestmark = pytest.mark.fuzz

# A Redis database where no session's worker lives (flushed, as by the worker's unit
# tests that share it): the fuzzer's tasks (delayed ones, cpu rounds) never reach the
# other tests' workers, nor the next backend's fuzz run theirs.
FUZZ_REDIS_DB = 10
CONFIG = Path(__file__).with_name("schemathesis.toml")
SEED = 20261126
EXAMPLES = 15


def operations(url: str) -> int:
    with urllib.request.urlopen(f"{url}/openapi.json", timeout=10) as answer:
        paths = json.load(answer)["paths"]
    return sum(len(methods) for methods in paths.values())


def test_the_api_answers_as_its_openapi_says(
        backend_name: str, start_worker: Callable[..., Proc],
        start_server: Callable[..., Server], tmp_path: Path) -> None:
    # A short DEFAULT_TIME_LIMIT: the fuzzer's cpu and sleep tasks end in seconds.
    env = {"REDIS_URL": redis_database(FUZZ_REDIS_DB, flush=True),
           "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'fuzz.db'}",
           "DEFAULT_TIME_LIMIT": "5"}
    worker = start_worker(**env)
    server = start_server(**env)
    try:
        count = operations(server.url)
        run = subprocess.run(
            [str(Path(sys.executable).with_name("schemathesis")), "--config-file", str(CONFIG),
             "--no-color", "run", f"{server.url}/openapi.json", "--checks", "all",
             "--exclude-checks", "use_after_free", "--max-examples", str(EXAMPLES),
             "--seed", str(SEED), "--generation-database", "none", "--request-timeout", "30"],
            cwd=tmp_path, capture_output=True, text=True, timeout=600)
    finally:
        server.stop()
        worker.stop()
    report = run.stdout + run.stderr
    assert run.returncode == 0, report[-20_000:]
    assert count >= 30, count  # tasks x (submit, batch), schedules, users, health, metrics
    assert re.search(rf"Selected: {count}/{count}\s+Tested: {count}\b", report), report[-3000:]
    assert "Stateful" in report and "No issues found" in report, report[-3000:]
