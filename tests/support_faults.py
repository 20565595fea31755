"""Faults the outage tests cause: a redis-server of their own (killed, frozen, started
again on the same port and directory) and a TCP proxy in front of PostgreSQL that
cuts every connection and refuses new ones until it is restored.

The proxy, not a private PostgreSQL cluster: it puts the fault exactly between the
app and the database, it needs no initdb nor a non-root user (CI runs as root), it
starts in milliseconds, and the database behind it is one the test creates and drops
on the shared server, whose state nothing else touches. Toxiproxy does the same but
needs its Go server, which neither this machine nor CI has.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import psutil
import redis

from core.cli.procs import free_port, wait_until


class RedisServer:
    """A redis-server on a free port, owned by the test. `appendfsync` None: nothing on
    disk (no RDB, no AOF), as the tests' shared Redis; else AOF with that fsync policy."""

    def __init__(self, directory: Path, appendfsync: str | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise FileNotFoundError("redis-server is not on PATH (./run services redis)")
        self.binary = binary
        self.directory = directory
        self.appendfsync = appendfsync
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115 (closed in stop)
            prefix="qb-redis-", suffix=".log", delete=False)
        self.popen: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        persistence = (["--appendonly", "yes", "--appendfsync", self.appendfsync]
                       if self.appendfsync else ["--appendonly", "no"])
        self.popen = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--dir", str(self.directory), *persistence],
            stdout=self.log, stderr=subprocess.STDOUT)
        client = redis.Redis.from_url(self.url, socket_connect_timeout=1, socket_timeout=1)
        try:
            wait_until(lambda: self._answers(client), timeout=20, what=f"redis {self.url}")
        finally:
            client.close()

    def _answers(self, client: redis.Redis) -> bool:
        if self.popen is not None and self.popen.poll() is not None:
            raise RuntimeError(f"redis-server exited:\n{Path(self.log.name).read_text()}")
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False

    def kill(self) -> None:
        """SIGKILL: what was not on disk is gone."""
        if self.popen is not None:
            self.popen.kill()
            self.popen.wait(10)

    def freeze(self) -> None:
        """SIGSTOP: connections open (the kernel accepts them), nothing answers."""
        if self.popen is not None:
            self.popen.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        if self.popen is not None:
            self.popen.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.thaw()
            self.kill()
        self.log.close()


class CuttableProxy:
    """127.0.0.1:<port> forwarded to `target`; `cut()` resets every connection and
    refuses new ones, `restore()` listens again on the same port."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()
        self._thread = threading.Thread(target=self.loop.run_forever, name="qb-proxy",
                                        daemon=True)
        self._thread.start()
        self.restore()

    def _call(self, coro: object) -> None:
        asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)  # type: ignore[arg-type]

    def restore(self) -> None:
        async def listen() -> None:
            self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port,
                                                      reuse_address=True)
        self._call(listen())

    def cut(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
                self._server = None
            for writer in list(self._open):
                writer.transport.abort()  # RST, as a dead server or a lost route
            self._open.clear()
        self._call(close())

    def stop(self) -> None:
        self.cut()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._open.update((writer, up_writer))
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        self._open.discard(writer)
        writer.transport.abort()


def cpu_share(pid: int, seconds: float) -> float:
    """CPU seconds per wall second that process `pid` and its descendants used over
    `seconds` (1.0: one core busy all along)."""
    def used() -> float:
        total = 0.0
        root = psutil.Process(pid)
        for proc in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.NoSuchProcess):
                times = proc.cpu_times()
                total += times.user + times.system
        return total

    before, start = used(), time.monotonic()
    time.sleep(seconds)
    return (used() - before) / (time.monotonic() - start)


def descendants(pid: int) -> set[int]:
    """The pids of process `pid` and its descendants."""
    root = psutil.Process(pid)
    return {pid, *(p.pid for p in root.children(recursive=True))}
