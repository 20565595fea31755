"""The `queuebench` command: a wrong setting or a service that is down is one clear line
on stderr and a non-zero exit."""

from __future__ import annotations

import pytest

from tests.conformance.support import cli


def test_unknown_backend_is_one_clear_line() -> None:
    done = cli("worker", QUEUE_BACKEND="rabbit")
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "QUEUE_BACKEND" in lines[0], done.stderr


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_redis_down_is_one_clear_line(command: str, backend_name: str) -> None:
    from core.cli.procs import free_port

    done = cli(command, "--backend", backend_name, REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "REDIS_URL" in lines[0], done.stderr


def test_processes_that_cannot_make_the_concurrency_is_one_clear_line(
        backend_name: str, redis_url: str) -> None:
    done = cli("worker", "--backend", backend_name, "--concurrency", "3", "--processes", "2",
               REDIS_URL=redis_url)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "--processes" in lines[0], done.stderr
