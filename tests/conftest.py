"""Fixtures of every suite (the conformance suite in tests/conformance/ and the ones
beside it): one backend per run (`--backend B`, repeatable), real Redis, real worker
and server processes. `--broker rabbitmq` runs them with RabbitMQ as the broker
(BROKER_URL=amqp://..., in a virtual host of the session's own), task records still
in Redis.

A service that is down skips the tests locally but fails them in CI (CI=true)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable, Generator, Iterator

import httpx
import pytest
import pytest_asyncio
import redis

from core.backend import backend_class
from core.cli.procs import Proc, Server, wait_until
from core.errors import ConfigError
from core.settings import BACKENDS
from core.store.keys import WORKERS_KEY
from core.tasks.features import Support

# Databases and the stacks that use them (tests/test_db.py, test_history.py, test_users.py);
# the worker's unit tests' Redis, store and heartbeat (test_runner.py, test_lane.py, ...).
pytest_plugins = ("tests.support_db", "tests.support_worker")

# Each backend's tests use their own Redis database, flushed at the start. A run's
# sixteen databases: 11-13 and 5 these, 1-4 and 6-9 the stacks (tests/support_db.py),
# 14 the spare, 10 and 15 flushed by the tests that use them (one at a time); 0 is left
# alone (a local Redis's default database).
REDIS_DB = {"celery": 11, "arq": 12, "dramatiq": 13, "taskiq": 5}
SPARE_DB = 14  # a Redis database where no worker runs
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
BROKERS = ("redis", "rabbitmq")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--backend", action="append", choices=BACKENDS,
                     help="backend(s) to test; default: all of them")
    parser.addoption("--broker", choices=BROKERS, default="redis",
                     help="the broker: Redis (REDIS_URL), or RabbitMQ at QB_TEST_AMQP "
                          "(default amqp://guest:guest@127.0.0.1:5672), in a vhost of "
                          "the session's own")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
        item: pytest.Item, call: pytest.CallInfo[None],
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """An xpass (a test marked xfail, not strict, that passed) is written to JUnit as a
    plain pass: the `xpass` property, with the marker's reason, tells it apart, so the
    feature matrix (tests/matrix.py) counts it as no proof."""
    report: pytest.TestReport = yield
    if report.when == "call" and report.passed and hasattr(report, "wasxfail"):
        item.user_properties.append(("xpass", report.wasxfail))
    return report


def selected_backends(config: pytest.Config) -> list[str]:
    return config.getoption("--backend") or list(BACKENDS)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend_name" in metafunc.fixturenames:
        metafunc.parametrize("backend_name", selected_backends(metafunc.config),
                             scope="session")


def service_down(message: str) -> None:
    if IN_CI:
        pytest.fail(f"{message} (CI=true: a missing service fails the run)")
    pytest.skip(message)


def redis_base() -> str:
    url = os.environ.get("QB_TEST_REDIS", "redis://127.0.0.1:6379")
    return url.rstrip("/")


@pytest.fixture(scope="session")
def redis_url(backend_name: str) -> str:
    try:
        backend_class(backend_name)
    except ConfigError as exc:
        pytest.fail(f"backend {backend_name} was asked for but cannot load: {exc.detail}")
    return redis_database(REDIS_DB[backend_name], flush=True)


def amqp_base() -> str:
    return os.environ.get("QB_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672").rstrip("/")


@pytest.fixture(scope="session")
def broker_url(request: pytest.FixtureRequest, backend_name: str,
               redis_url: str) -> Iterator[str]:
    """BROKER_URL of the session: REDIS_URL's, or a fresh RabbitMQ virtual host
    (created with rabbitmqctl, deleted at the end), so no queue of another run
    meets this one's workers."""
    if request.config.getoption("--broker") == "redis":
        yield redis_url
        return
    if "amqp" not in backend_class(backend_name).brokers:
        pytest.fail(f"--broker rabbitmq: backend {backend_name} needs Redis as its broker; "
                    "run it with --broker redis")
    from core.brokers.amqp import check, scratch_vhost

    with contextlib.ExitStack() as stack:
        try:
            url = stack.enter_context(scratch_vhost(amqp_base(), f"qb-{backend_name}"))
        except (OSError, subprocess.SubprocessError) as exc:
            service_down(f"rabbitmqctl cannot make a vhost beside {amqp_base()}: {exc}")
        reason = check(url)
        if reason:
            service_down(f"RabbitMQ at {url} does not answer: {reason}")
        yield url


def redis_database(db: int, *, flush: bool) -> str:
    """The URL of Redis database `db`, once it answers (flushed if asked)."""
    url = f"{redis_base()}/{db}"
    try:
        client = redis.Redis.from_url(url)
        client.flushdb() if flush else client.ping()
    except redis.RedisError as exc:
        service_down(f"Redis at {url} does not answer: {exc}")
    return url


@pytest.fixture(scope="session")
def spare_redis_url() -> str:
    url = f"{redis_base()}/{SPARE_DB}"
    redis.Redis.from_url(url).flushdb()
    return url


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory, backend_name: str) -> str:
    return f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('db') / f'{backend_name}.db'}"


@pytest.fixture(scope="session")
def base_env(redis_url: str, broker_url: str, sqlite_url: str) -> dict[str, str]:
    return {"REDIS_URL": redis_url, "BROKER_URL": broker_url, "DATABASE_URL": sqlite_url,
            "ENVIRONMENT": "testing", "WORKER_HEARTBEAT": "0.5", "PYTHONUNBUFFERED": "1"}


def _prepare_database(url: str) -> None:
    try:
        from tests.support_db import prepare_database
    except ImportError:  # the database layer is not there yet
        return
    prepare_database(url)


@pytest.fixture(scope="session")
def start_worker(backend_name: str, base_env: dict[str, str]) -> Iterator[Callable[..., Proc]]:
    """Start `queuebench worker` for the backend; stopped at the end of the session
    unless the test stops it first."""
    started: list[Proc] = []

    def start(concurrency: int = 4, queues: str | None = None, wait: bool = True,
              processes: int | None = None, **env: str) -> Proc:
        args = ["worker", "--backend", backend_name, "--concurrency", str(concurrency)]
        if queues:
            args += ["--queues", queues]
        if processes is not None:
            args += ["--processes", str(processes)]
        proc = Proc(args, {**base_env, **env})
        started.append(proc)
        if wait:
            url = env.get("REDIS_URL", base_env["REDIS_URL"])
            wait_until(lambda: _heartbeat_of(url, backend_name, proc), timeout=60,
                       what=f"{backend_name} worker heartbeat")
        return proc

    yield start
    for proc in started:
        proc.stop()


def _heartbeat_of(url: str, backend: str, proc: Proc) -> bool:
    if not proc.alive():
        raise RuntimeError(f"worker exited:\n{proc.output()}")
    client = redis.Redis.from_url(url)
    return any(entry.get("backend") == backend and entry.get("pid") == proc.pid
               for entry in map(json.loads, client.hvals(WORKERS_KEY)))


@pytest.fixture(scope="session")
def start_server(backend_name: str, base_env: dict[str, str]) -> Iterator[Callable[..., Server]]:
    started: list[Server] = []

    def start(**env: str) -> Server:
        full = {**base_env, **env}
        _prepare_database(full["DATABASE_URL"])
        server = Server(backend_name, full)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def worker(start_worker: Callable[..., Proc]) -> Proc:
    return start_worker()


@pytest.fixture(scope="session")
def server(start_server: Callable[..., Server]) -> Server:
    return start_server()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def client(server: Server, worker: Proc) -> AsyncIterator[httpx.AsyncClient]:
    # Idle connections dropped before uvicorn's keep-alive (5 s) closes them: a request
    # sent on one the server is closing fails with a ReadError.
    limits = httpx.Limits(keepalive_expiry=2)
    async with httpx.AsyncClient(base_url=server.url, timeout=60, limits=limits) as http:
        yield http


@pytest.fixture
def redis_client(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url, decode_responses=True)


@pytest.fixture
def feature(request: pytest.FixtureRequest, backend_name: str) -> Callable[..., Support]:
    """Declare which feature a test proves; the adapter's claim for this backend is
    returned. What lands in the JUnit report, from which tests/matrix.py makes
    docs/features.md, is the level the test exercises: the claim, unless the test
    says otherwise with `via` (a mechanism its worker set-up uses instead). A test of
    a feature claimed "not supported" proves the refusal (422 or 409): the matrix
    shows it refused only when that test passed, and any outcome but passed keeps a
    cell from green."""

    def declare(name: str, via: Support | None = None) -> Support:
        claim = backend_class(backend_name).support().get(name, Support.NONE)
        request.node.user_properties += [("feature", name), ("claim", claim.value),
                                         ("support", (via or claim).value),
                                         ("broker", request.config.getoption("--broker"))]
        return claim

    return declare


@pytest.fixture
def queue_name() -> str:
    """A queue of the test's own, so its workers and tasks meet nobody else's."""
    return f"q-{uuid.uuid4().hex[:10]}"
