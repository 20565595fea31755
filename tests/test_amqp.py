"""RabbitMQ as the broker, where it differs from Redis (core/brokers/amqp.py): arq refuses it in
one line, and a message the broker never took leaves no record PENDING. Neither needs
RabbitMQ to run: they are tested in every backend's run. Celery and Dramatiq taking
turns on one vhost needs RabbitMQ and both backends' environments: it runs once, with
`--broker rabbitmq --backend celery --backend dramatiq` (.ci/run)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import shutil
import subprocess
import sys
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from core.backend import backend_class
from core.brokers import delays
from core.brokers.amqp import scratch_vhost
from core.cli.procs import Proc, Server, free_port, venv_python
from core.errors import Unavailable
from core.settings import Settings
from core.states import TaskState
from core.store.keys import TASK_KEY
from tests.conformance.support import cli
from tests.conftest import (
    _prepare_database,
    amqp_base,
    redis_database,
    selected_backends,
    service_down,
)

TURNS = ("celery", "dramatiq", "taskiq")
TURNS_DB = 15  # flushed by each test that uses it: no session's worker lives there


@pytest.mark.parametrize("command", ["serve", "worker", "scheduler"])
def test_an_amqp_broker_for_a_backend_without_one_is_one_clear_line(
        command: str, backend_name: str, redis_url: str) -> None:
    if "amqp" in backend_class(backend_name).brokers:
        pytest.skip(f"{backend_name} runs on RabbitMQ (tests/conformance/ with "
                    "--broker rabbitmq)")
    done = cli(command, "--backend", backend_name, REDIS_URL=redis_url,
               BROKER_URL="amqp://guest:guest@127.0.0.1:5672/")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "needs Redis as its broker" in lines[0], done.stderr
    assert "BROKER_URL" in lines[0]


def test_an_unreachable_rabbitmq_is_one_clear_line(backend_name: str, redis_url: str) -> None:
    if "amqp" not in backend_class(backend_name).brokers:
        pytest.skip(f"{backend_name} needs Redis (the test above)")
    done = cli("worker", "--backend", backend_name, REDIS_URL=redis_url,
               BROKER_URL=f"amqp://guest:guest@127.0.0.1:{free_port()}/")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "RabbitMQ does not answer" in lines[0], done.stderr


@pytest.mark.parametrize("producer", ["native", "library"])
async def test_a_publish_that_fails_ends_the_record_failure_not_pending(
        backend_name: str, redis_url: str, producer: str) -> None:
    if "amqp" not in backend_class(backend_name).brokers:
        pytest.skip(f"{backend_name} needs Redis (the test above)")
    settings = Settings(redis_url=redis_url, broker_url=f"amqp://127.0.0.1:{free_port()}/",
                        producer=producer, history_enabled=False)
    backend = backend_class(backend_name)(settings)
    try:
        before = set(await backend.redis.keys(TASK_KEY.format("*")))
        with pytest.raises(Exception) as raised:
            await backend.submit("add", [1, 2])
        if producer == "native":
            assert isinstance(raised.value, Unavailable)  # a 503 through the API
        [key] = set(await backend.redis.keys(TASK_KEY.format("*"))) - before
        record = await backend.get(key.decode().rsplit(":", 1)[-1])
        assert record.state is TaskState.FAILURE
        assert record.error is not None and record.error["type"], record.error
    finally:
        await backend.aclose()


async def test_queue_depths_of_a_rabbitmq_away_are_unknown_not_an_error(
        backend_name: str, redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """/metrics and the dashboard read the depths on RabbitMQ: with the broker away they
    are unknown (empty) and logged, and the scrape that asked still answers."""
    if "amqp" not in backend_class(backend_name).brokers:
        pytest.skip(f"{backend_name} needs Redis (the test above)")
    from core.api.metrics import scrape

    settings = Settings(redis_url=redis_url, broker_url=f"amqp://127.0.0.1:{free_port()}/",
                        history_enabled=False)
    backend = backend_class(backend_name)(settings)
    try:
        assert backend.amqp_queues("default")  # the adapter names its queues there
        assert await backend.queue_depths() == {}
        assert b"queuebench_queue_depth" in await scrape(backend)
    finally:
        await backend.aclose()
    assert any("queue depths on" in r.getMessage() for r in caplog.records), caplog.text


def test_a_connect_that_failed_leaves_no_close_for_the_collector() -> None:
    """aio-pika closes a connection from its `__del__` by scheduling close() on the
    loop; collected where no loop runs (another test's set-up, here a thread of its
    own), that coroutine is never awaited and Python warns at a random later moment."""
    pytest.importorskip("aio_pika", reason="the native AMQP producer's client")
    from core.brokers.amqp import Outgoing, Publisher

    loops: list[asyncio.AbstractEventLoop] = []  # open, not running: as a test's set-up

    def publish_to_nobody() -> None:
        loops.append(loop := asyncio.new_event_loop())
        publisher = Publisher(f"amqp://127.0.0.1:{free_port()}/", lambda queue: None)
        with contextlib.suppress(Unavailable):
            loop.run_until_complete(publisher.publish(Outgoing("q", "q", b"")))

    # Unlogged: a captured log record of the failure would keep the connection alive.
    quiet = logging.getLogger("aiormq.connection")
    quiet.disabled = True
    caught: list[str] = []
    hook, sys.unraisablehook = sys.unraisablehook, lambda u: caught.append(str(u.exc_value))
    try:
        with warnings.catch_warnings(record=True) as warned:
            warnings.simplefilter("always")
            thread = threading.Thread(target=lambda: (publish_to_nobody(), gc.collect()))
            thread.start()
            thread.join(30)
            loops[0].close()
        caught += [str(w.message) for w in warned if "never awaited" in str(w.message)]
    finally:
        sys.unraisablehook = hook
        quiet.disabled = False
    assert not caught


def test_a_kombu_url_names_the_same_vhost_to_pika() -> None:
    from core.brokers.amqp import pika_url, shown

    assert pika_url("amqp://u:p@h:5672//") == "amqp://u:p@h:5672/%2F"
    assert pika_url("pyamqp://u:p@h:5672/qb") == "amqp://u:p@h:5672/qb"
    assert pika_url("amqp://u:p@h:5672/") == "amqp://u:p@h:5672/"
    assert shown("amqp://guest:secret@h:5672/qb") == "amqp://guest:***@h:5672/qb"


@pytest.fixture
def turns_env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, str]]:
    """The environment of Celery's and Dramatiq's workers and servers in turn: one
    fresh vhost, one Redis database, one SQLite file."""
    if request.config.getoption("--broker") != "rabbitmq":
        pytest.skip("Celery, Dramatiq and taskiq on one vhost are tested with --broker rabbitmq")
    if not set(TURNS) <= set(selected_backends(request.config)):
        pytest.skip(f"needs --backend {' --backend '.join(TURNS)}")
    for backend in TURNS:
        if not os.path.exists(venv_python(backend)):
            service_down(f"no environment for {backend} at {venv_python(backend)} (./run envs)")
    with contextlib.ExitStack() as stack:
        try:
            amqp_url = stack.enter_context(scratch_vhost(amqp_base(), "qb-turns"))
        except (OSError, subprocess.SubprocessError) as exc:
            service_down(f"rabbitmqctl cannot make a vhost beside {amqp_base()}: {exc}")
        env = {"REDIS_URL": redis_database(TURNS_DB, flush=True), "BROKER_URL": amqp_url,
               "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'turns.db'}",
               "ENVIRONMENT": "testing", "WORKER_HEARTBEAT": "0.5", "PYTHONUNBUFFERED": "1"}
        _prepare_database(env["DATABASE_URL"])
        yield env


@pytest.mark.parametrize("producer", ["native", "library"])
def test_the_libraries_take_turns_on_one_rabbitmq_vhost(
        turns_env: dict[str, str], producer: str) -> None:
    """Switching QUEUE_BACKEND on one broker: Celery, Dramatiq, taskiq, then Celery
    again, each a worker and a server on the same vhost and Redis, every submit a 202
    that ends SUCCESS. The libraries declare their queues with different arguments, so
    a queue name they shared would refuse the next one's declare: Celery's keep their
    names, Dramatiq's are `dramatiq.<queue>`, taskiq's `taskiq.<queue>`."""
    for backend in (*TURNS, TURNS[0]):
        env = {**turns_env, "PRODUCER": producer}
        worker = Proc(["worker", "--backend", backend, "--concurrency", "2"], env,
                      venv_python(backend))
        try:
            server = Server(backend, env, venv_python(backend))
            try:
                with httpx.Client(base_url=server.url, timeout=60) as http:
                    sent = http.post("/tasks/add", json={"args": [1, 2]})
                    assert sent.status_code == 202, (backend, sent.text)
                    task = http.get(f"/tasks/{sent.json()['id']}/wait",
                                    params={"timeout": 30}).json()
            finally:
                server.stop()
            assert (task["backend"], task["state"], task["result"]) == (
                backend, "SUCCESS", 3), (task, worker.output())
        finally:
            worker.stop()
    assert {"default", "dramatiq.default", "dramatiq.default.DQ", "dramatiq.default.XQ",
            "taskiq.default", "taskiq.dead_letter", delays.rung(0)[0][0],
            delays.rung(delays.LEVELS - 1)[-1][0],
            } <= _queues(turns_env["BROKER_URL"])


def _queues(amqp_url: str) -> set[str]:
    """The names of the queues in `amqp_url`'s vhost (rabbitmqctl, as scratch_vhost)."""
    ctl = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
    listed = subprocess.run([ctl, "list_queues", "-p", urlsplit(amqp_url).path[1:],
                             "--quiet", "--no-table-headers", "name"],
                            check=True, capture_output=True, text=True, timeout=60)
    return set(listed.stdout.split())
