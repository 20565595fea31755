"""Fault injection, one implementation for the no-task-left-behind harness
(tests/chaos.py) and the benchmark's delivery-guarantee cells (bench/faults.py): the
parts a fault hits (a redis-server with its AOF, a RabbitMQ node, a worker run as a
container runs it, a worker host behind a link that can be cut) and the faults
themselves, each a blocking call that returns a line saying what it did.

Needs root for the containers (PID and UTS namespaces, `unshare`) and for the network
cut (`ip netns`, veth pairs), as the multi-host run (scripts/multihost.sh) does.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import redis

from core.cli.procs import ROOT, Proc, free_port, wait_until

T = TypeVar("T")
# A container's restart policy: a worker that exits at start (Redis or the broker away)
# is started again, for this long at most.
RESTART_WITHIN = 120.0
CRASH_LOSES = 1.0  # seconds of AOF writes an OS crash loses under everysec, at most


def spawn(argv: list[str], env: dict[str, str], log: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, cwd=ROOT, env={**os.environ, **env}, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)


def kill(proc: Proc) -> None:
    """SIGKILL to the process and everything in its group (a stopped one too)."""
    proc.signal_group(signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.popen.wait(10)


def restarting(start: Callable[[], T]) -> T:
    """`start()` again while the process it starts exits at once (as a container's
    restart policy does), for RESTART_WITHIN seconds at most."""
    deadline = time.monotonic() + RESTART_WITHIN
    while True:
        try:
            return start()
        except RuntimeError:  # it exited: Redis or the broker is away
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


class Container(Proc):
    """A worker as a container runs it: pid 1 of a fresh PID namespace, with its own
    /proc and a hostname of its own (UTS namespace); with `netns`, inside that network
    namespace (a host of its own: NetHost). Started again (`again()`), it has the same
    hostname and the same pid. Its group is the whole container: SIGKILL, SIGSTOP and
    SIGCONT reach every process in it. `module` is what `python -m` runs:
    queuebench's CLI, or a library's own worker command."""

    def __init__(self, hostname: str, args: list[str], env: dict[str, str], log: Path,
                 module: str = "core.cli.main", netns: str | None = None) -> None:
        self.hostname = hostname
        self.args = args
        self.env = env
        self.module = module
        self.netns = netns
        self.log_path = log
        self.log = log.open("ab")  # appended to by each incarnation
        enter = ["nsenter", f"--net=/run/netns/{netns}"] if netns else []
        self.popen = spawn(
            [*enter, "unshare", "--pid", "--fork", "--kill-child", "--uts", "--mount-proc",
             "sh", "-c", 'hostname "$0" && exec "$@"', hostname,
             sys.executable, "-m", module, *args], env, self.log)

    def again(self) -> Container:
        """The same container started again (after it died)."""
        return Container(self.hostname, self.args, self.env, self.log_path, self.module,
                         self.netns)


class RedisServer:
    """A redis-server on a free port, owned by its caller. `appendfsync` None: nothing on
    disk (no RDB, no AOF), as the tests' shared Redis; else AOF with that fsync policy.
    `also_bind`: addresses it listens on besides 127.0.0.1 (a NetHost's `here`)."""

    def __init__(self, directory: Path, appendfsync: str | None = None,
                 also_bind: tuple[str, ...] = ()) -> None:
        self.also_bind = also_bind
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
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", *self.also_bind,
             "--protected-mode", "no" if self.also_bind else "yes", "--save", "",
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


class RabbitNode:
    """A RabbitMQ node of its own, to kill and restart without touching the
    machine's: its own node name, AMQP (on 127.0.0.1 and `also_bind`'s addresses) and
    distribution ports, Mnesia and log directories, config (no plugins), Erlang cookie
    ($HOME). It registers with the machine's epmd (port 4369), as any node does.
    Started from the Debian package's script itself (/usr/lib/rabbitmq/bin):
    /usr/sbin/rabbitmq-server, run as root, goes through `su rabbitmq`, which drops this
    environment."""

    def __init__(self, directory: Path, also_bind: tuple[str, ...] = ()) -> None:
        script = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
        found = str(script) if script.exists() else shutil.which("rabbitmq-server")
        if found is None:
            raise FileNotFoundError("rabbitmq-server is not installed "
                                    "(./run services rabbitmq installs it)")
        self.script = found
        directory.mkdir(parents=True, exist_ok=True)
        self.port, dist_port = free_port(), free_port()
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}//"
        (directory / "rabbitmq.conf").write_text("".join(
            f"listeners.tcp.{n} = {address}:{self.port}\n"
            for n, address in enumerate(("127.0.0.1", *also_bind), 1)))
        (directory / "rabbitmq-env.conf").write_text("")
        (directory / "enabled_plugins").write_text("[].\n")
        self.env = {
            "HOME": str(directory), "RABBITMQ_CONF_ENV_FILE": str(directory / "rabbitmq-env.conf"),
            "RABBITMQ_CONFIG_FILE": str(directory / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(directory / "enabled_plugins"),
            "RABBITMQ_NODENAME": f"qbfault{self.port}@localhost",
            "RABBITMQ_NODE_PORT": str(self.port), "RABBITMQ_DIST_PORT": str(dist_port),
            "RABBITMQ_MNESIA_BASE": str(directory / "mnesia"),
            "RABBITMQ_LOG_BASE": str(directory / "log"), "ERL_EPMD_ADDRESS": "127.0.0.1",
            "ERL_FLAGS": "-kernel inet_dist_use_interface {127,0,0,1}"}
        self.log = (directory / "node.log").open("ab")
        self.popen: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        from core.brokers.amqp import check

        self.popen = subprocess.Popen([self.script], env={**os.environ, **self.env},
                                      stdout=self.log, stderr=subprocess.STDOUT,
                                      start_new_session=True)

        def answers() -> bool:
            if self.popen is not None and self.popen.poll() is not None:
                raise RuntimeError(f"rabbitmq-server exited: see {self.log.name}")
            return check(self.url, timeout=2) is None

        wait_until(answers, timeout=120, every=0.3, what=f"RabbitMQ on port {self.port}")

    def kill(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(10)

    def stop(self) -> None:
        self.kill()
        self.log.close()


class AofWatch:
    """An OS crash under `appendfsync everysec`, modelled: Redis has written each reply's
    commands to its AOF (the kernel's page cache) but fsyncs only once a second, so a
    crash of the machine, unlike a kill of the process, loses what came since. This
    samples the size of the AOF's newest file (Redis 7's appendonlydir) every 50 ms;
    `cut_back(t)` cuts it to its size at `t` (Redis loads a truncated AOF, dropping a
    partial last command: aof-load-truncated)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.samples: list[tuple[float, Path, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="qb-aof", daemon=True)
        self._thread.start()

    def newest(self) -> Path | None:
        manifest = self.directory / "appendonly.aof.manifest"
        with contextlib.suppress(OSError):
            names = [line.split()[1] for line in manifest.read_text().splitlines()
                     if line.endswith("type i")]
            return self.directory / names[-1] if names else None
        return None

    def _watch(self) -> None:
        while not self._stop.wait(0.05):
            path = self.newest()
            with contextlib.suppress(OSError):
                if path is not None:
                    self.samples.append((time.monotonic(), path, path.stat().st_size))
                    del self.samples[:-400]  # the last 20 s

    def cut_back(self, at: float) -> str:
        path = self.newest()
        before = [s for s in self.samples if s[0] <= at and s[1] == path]
        if path is None or not before:
            return "AOF not cut (no sample of its file from then)"
        size, now = before[-1][2], path.stat().st_size
        os.truncate(path, size)
        return f"AOF cut back by {now - size} bytes (the OS crash's unsynced writes)"

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


class NetHost:
    """A worker host of its own network: a namespace joined to this machine's by a veth
    pair, `10.<net>.<n>.1` on this side and `.2` inside, so a server on this side bound
    to `.1` is reachable from inside. `cut()` sets this side's end down (packets stop:
    no reset, as a pulled cable), `restore()` up again. `net` keeps concurrent runs
    apart (a namespace and subnet per host)."""

    def __init__(self, name: str, subnet: int, net: int = 79) -> None:
        self.name = name
        self.outer = f"{name[:10]}-o"
        self.here = f"10.{net}.{subnet}.1"
        self.there = f"10.{net}.{subnet}.2"
        self.close()  # a namespace left behind by an earlier run of the same name
        for cmd in (["netns", "add", name],
                    ["link", "add", self.outer, "type", "veth", "peer", "name", "eth0",
                     "netns", name],
                    ["addr", "add", f"{self.here}/30", "dev", self.outer],
                    ["link", "set", self.outer, "up"],
                    ["-n", name, "addr", "add", f"{self.there}/30", "dev", "eth0"],
                    ["-n", name, "link", "set", "eth0", "up"],
                    ["-n", name, "link", "set", "lo", "up"]):
            _ip(*cmd)

    def cut(self) -> None:
        _ip("link", "set", self.outer, "down")

    def restore(self) -> None:
        _ip("link", "set", self.outer, "up")

    def close(self) -> None:
        """Deletes the namespace (its end of the veth, and so the pair, with it)."""
        with contextlib.suppress(subprocess.CalledProcessError):
            _ip("link", "del", self.outer)
        with contextlib.suppress(subprocess.CalledProcessError):
            _ip("netns", "del", self.name)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


# -- the faults: each blocks until it is over and says what it did --------------------

def worker_kill(container: Container) -> None:
    """SIGKILL to the whole container; its log closed (`again()` opens it anew)."""
    kill(container)
    container.log.close()


def worker_pause(container: Container, hold: float) -> str:
    """SIGSTOP to the whole container, SIGCONT `hold` seconds later."""
    container.signal_group(signal.SIGSTOP)
    time.sleep(hold)
    container.signal_group(signal.SIGCONT)
    return f"stopped {hold:g} s"


def redis_crash(server: RedisServer, hold: float, aof: AofWatch | None = None) -> str:
    """SIGKILL to redis-server; with `aof`, an OS crash too (the AOF cut back by its
    last CRASH_LOSES seconds); started again `hold` seconds later, from its AOF."""
    killed = time.monotonic()
    server.kill()
    crash = f", {aof.cut_back(killed - CRASH_LOSES)}" if aof is not None else ""
    time.sleep(hold)
    server.start()
    return (f"down {hold:g} s{crash}, restarted from its AOF "
            f"(appendfsync {server.appendfsync})")


def rabbit_restart(node: RabbitNode, hold: float) -> str:
    """SIGKILL to the node, started again `hold` seconds later (durable queues and
    persistent messages come back; what was unacked is delivered again)."""
    node.kill()
    time.sleep(hold)
    node.start()
    return f"down {hold:g} s, restarted"


def net_cut(host: NetHost, hold: float) -> str:
    host.cut()
    time.sleep(hold)
    host.restore()
    return f"{host.name} cut off {hold:g} s (its link down), then back"
