"""`queuebench worker` and `queuebench serve` as subprocesses, for the tests, the
demo and the benchmark. `python` picks the interpreter: a backend's own virtualenv
(`.venv/<backend>/bin/python`) or this one."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def venv_python(backend: str) -> str:
    """The interpreter of a backend's own environment (see README, Environments)."""
    return str(ROOT / ".venv" / backend / "bin" / "python")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(check: Callable[[], Any], timeout: float = 30, every: float = 0.05,
               what: str = "condition") -> Any:
    """Poll `check` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout}s")
        time.sleep(every)


class Proc:
    """A queuebench subprocess whose output goes to a file, shown if a test fails."""

    def __init__(self, args: list[str], env: dict[str, str], python: str | None = None,
                 module: str = "core.cli.main") -> None:
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115 (closed in stop)
            prefix="qb-", suffix=".log", delete=False)
        self.args = args
        self.env = env
        self.popen = subprocess.Popen(
            [python or sys.executable, "-m", module, *args], cwd=ROOT,
            env={**os.environ, **env},
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, sig)

    def stop(self, timeout: float = 20) -> int:
        if self.alive():
            self.signal_group(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.signal_group(signal.SIGKILL)
                self.popen.wait(5)
        self.signal_group(signal.SIGKILL)  # children a library left behind
        self.log.close()
        return self.popen.returncode


class Server(Proc):
    def __init__(self, backend: str, env: dict[str, str], python: str | None = None,
                 *extra: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        super().__init__(["serve", "--backend", backend, "--port", str(self.port),
                          "--no-access-log", "--log-level", "warning", *extra], env, python)
        try:
            wait_until(self._ready, timeout=30, what=f"server {self.url}")
        except BaseException:  # never ready: not left running behind the failed test
            self.stop()
            raise

    def _ready(self) -> bool:
        if not self.alive():
            raise RuntimeError(f"server exited:\n{self.output()}")
        try:
            with urllib.request.urlopen(f"{self.url}/openapi.json", timeout=1) as answer:
                return bool(answer.status == 200)
        except urllib.error.HTTPError as refused:  # it answers (401 with API_KEY set)
            return refused.code == 401
        except OSError:
            return False
