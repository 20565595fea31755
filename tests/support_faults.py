"""Faults the outage tests cause: a redis-server of their own (killed, frozen, started
again on the same port and directory: bench/inject.py's RedisServer, shared with the
fault harness and the benchmark) and a TCP proxy in front of PostgreSQL that
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
import threading
import time

import psutil

from bench.inject import RedisServer
from core.cli.procs import free_port

__all__ = ["CuttableProxy", "RedisServer", "cpu_share", "descendants"]


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
