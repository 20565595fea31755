"""The conformance suite's own fixture: `queuebench scheduler` processes (the workers,
the API server and the client are tests/conftest.py's, shared with the other suites)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from core.cli.procs import Proc


@pytest.fixture
def start_scheduler(backend_name: str, base_env: dict[str, str]) -> Iterator[Callable[..., Proc]]:
    """Start `queuebench scheduler` for the backend on a schedule file (extra
    arguments: `--native`); each is stopped at the end of the test."""
    started: list[Proc] = []

    def start(schedule_file: str, *extra: str, **env: str) -> Proc:
        proc = Proc(["scheduler", "--backend", backend_name, *extra],
                    {**base_env, "SCHEDULE_FILE": schedule_file, **env})
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()
