"""The store's scripts and their caller (core/store/scripts.py) against a real Redis:
each script's header says what its callers pass, a script Redis lost is loaded again,
and a submit's create on direct connections fails as the client's own call would."""

from __future__ import annotations

import ast
import asyncio
import re
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import redis
from redis.asyncio import BlockingConnectionPool, Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

import core as core_package
from core.api.dashboard.data import TaskQuery, task_page
from core.states import TaskState
from core.store.keys import OWNED_KEY
from core.store.records import RecordStore, TaskRecord, connect, new_task_id
from core.store.scripts import LUA, SOURCES, DirectScripts
from core.worker.lane import new_lane
from tests.conftest import redis_database

SCRIPTS_DB = 15  # flushed by each test that uses it
WORKER = "host:1:test"


@pytest.fixture
def url() -> str:
    return redis_database(SCRIPTS_DB, flush=True)


@pytest_asyncio.fixture
async def store(url: str) -> AsyncIterator[RecordStore]:
    client = connect(url)
    made = RecordStore(client, history=False)
    yield made
    await made.aclose()
    await client.aclose()


def _record(*args: Any, **fields: Any) -> TaskRecord:
    return TaskRecord(id=new_task_id(), name="noop", backend="test", args=list(args),
                      submitted_at=time.time(), **fields)


def _direct(store: RecordStore) -> DirectScripts:
    assert store.scripts.direct is not None
    return store.scripts.direct


# -- key names: written in core/store/keys.py only, each script's header ----------------

def header(name: str) -> tuple[int, int | None, int]:
    """The KEYS a script's header lists (the fewest, the most: None for any number from
    a `KEYS[n..]` on) and its ARGV, each numbered 1, 2, ... in order."""
    text = (LUA / f"{name}.lua").read_text()
    keys = re.findall(r"^-- KEYS\[(\d+)(\.\.\]|\]\?|\])", text, re.MULTILINE)
    args = re.findall(r"^-- ARGV\[(\d+)\]", text, re.MULTILINE)
    assert [int(n) for n, _ in keys] == list(range(1, len(keys) + 1)), name
    assert [int(n) for n in args] == list(range(1, len(args) + 1)), name
    fewest = sum(1 for _, end in keys if end != "]?")
    return fewest, None if keys and keys[-1][1] == "..]" else len(keys), len(args)


class Monitor:
    """Redis's MONITOR on a connection of its own: every EVALSHA sent to database `db`
    while it watched, as (sha, number of KEYS, number of ARGV)."""

    END = "qb-test-monitor-end"

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url)
        self.db = self.client.connection_pool.connection_kwargs.get("db", 0)
        self.watch = self.client.monitor()

    def __enter__(self) -> Monitor:
        self.watch.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.watch.__exit__(*exc)
        self.client.close()

    def calls(self) -> Iterator[tuple[str, int, int]]:
        self.client.echo(self.END)
        while True:
            line = self.watch.connection.read_response()
            line = line.decode() if isinstance(line, bytes) else line
            words = re.findall(r'"((?:[^"\\]|\\.)*)"', line)
            if words[:2] == ["ECHO", self.END]:
                return
            if words[0].upper() == "EVALSHA" and f"[{self.db} " in line:
                n = int(words[2])
                yield words[1], n, len(words) - 3 - n


async def _every_call(store: RecordStore) -> None:
    """Each of the store's script calls at least once, as core makes them."""
    plain, fired, once, lost = _record(1), _record(2, schedule="nightly"), _record(3), _record(4)
    await store.create(plain)
    await store.create(fired, idempotency_key="tick-1")
    await store.create_many([(once, None, None, None)])
    await store.start(plain.id, WORKER, "1")
    await store.finish(plain.id, TaskState.SUCCESS, result=1, worker=WORKER)
    lane = new_lane(store)
    try:
        await lane.start(once.id, WORKER, "2")
        assert not await lane.finish(once.id, TaskState.SUCCESS, {"result": 3, "worker": WORKER})
        assert not await lane.drain()  # confirmed: nothing handed back
    finally:
        await lane.close()
    await store.revoke(fired.id)
    await store.expire(plain.id)
    await store.create(lost, idempotency_key="lost")
    await store.not_queued(lost, {"type": "Down", "message": "broker down"}, "lost")
    await store.start(fired.id, WORKER)
    taken = _record(5)
    await store.create(taken)
    await store.start(taken.id, WORKER)
    await store.reclaim(taken.id, WORKER, OWNED_KEY.format(WORKER))
    [read] = [r for r in await store.overdue(time.time() + 60, 100) if r.id == taken.id]
    assert await store.resend(read, time.time() + 60) is not None
    await store.release([plain.id, once.id])
    await task_page(store, TaskQuery(state="SUCCESS"))


async def test_every_scripts_header_lists_what_its_callers_pass(
        url: str, store: RecordStore) -> None:
    names = {getattr(store.scripts, name).sha: name for name in SOURCES}
    seen: dict[str, set[tuple[int, int]]] = {}
    with Monitor(url) as monitor:
        await _every_call(store)
        for sha, keys, args in monitor.calls():
            seen.setdefault(names[sha], set()).add((keys, args))
    assert set(seen) == set(SOURCES)  # every script was called
    for name, calls in seen.items():
        fewest, most, argv = header(name)
        for keys, args in calls:
            assert fewest <= keys <= (keys if most is None else most), (name, keys)
            assert args == argv, (name, args)


def _literals(path: Path) -> Iterator[tuple[int, str]]:
    """The string literals of a Python file (f-strings' parts too), its docstrings
    left out (they may name a key to explain it)."""
    tree = ast.parse(path.read_text())
    docs = {id(node.body[0].value) for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef,
                                 ast.AsyncFunctionDef))
            and node.body and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)}
    for node in ast.walk(tree):
        if (isinstance(node, ast.Constant) and isinstance(node.value, str)
                and id(node) not in docs):
            yield node.lineno, node.value


def test_no_module_but_keys_writes_a_key_name() -> None:
    """core/store/keys.py is where a Redis key name of queuebench's is written."""
    core = Path(core_package.__file__).parent
    found = [f"{path.relative_to(core)}:{line}: {text!r}"
             for path in sorted(core.rglob("*.py")) if path != core / "store" / "keys.py"
             for line, text in _literals(path) if "qb:" in text]
    assert found == []


def test_no_script_writes_a_key_name() -> None:
    """Key names are core/store/keys.py's, passed by the callers: a script names one
    only in its header's comments."""
    for path in LUA.glob("*.lua"):
        code = [line for line in path.read_text().splitlines()
                if not line.lstrip().startswith("--")]
        assert not [line for line in code if "qb:" in line], path.name


# -- a script Redis lost ----------------------------------------------------------------

async def test_a_create_after_redis_lost_its_scripts_loads_them_again(
        store: RecordStore) -> None:
    await store.create(_record(1))
    await store.redis.script_flush()
    record = _record(2)
    assert await store.create(record) == record.id  # NOSCRIPT: the slow way loads it
    assert (await store.get(record.id)).args == [2]  # type: ignore[union-attr]
    assert len(_direct(store).free) == 1  # the connection, in step, is kept
    record = _record(3)
    assert await store.create(record) == record.id  # and the direct way has it again


async def test_every_call_after_redis_lost_its_scripts_loads_them_again(
        url: str, store: RecordStore) -> None:
    with Monitor(url) as monitor:
        await _every_call(store)
        names = {getattr(store.scripts, name).sha: name for name in SOURCES}
        shas = {sha for sha, _, _ in monitor.calls()}
    await store.redis.script_flush()
    await _every_call(store)  # would raise NoScriptError
    assert all(await store.redis.script_exists(*shas)), {names[s] for s in shas}


# -- a submit's create on direct connections -----------------------------------------------

async def test_a_create_takes_a_direct_connection_and_gives_it_back(store: RecordStore) -> None:
    direct = _direct(store)
    record = _record(1)
    assert await store.create(record) == record.id
    assert (direct.made, len(direct.free)) == (1, 1)
    assert (await store.get(record.id)).args == [1]  # type: ignore[union-attr]


def test_a_blocking_client_has_no_direct_connections(url: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        assert RecordStore(client).scripts.direct is None
    finally:
        client.close()


async def test_a_create_whose_connection_was_killed_is_made_the_slow_way(
        store: RecordStore) -> None:
    direct = _direct(store)
    await store.create(_record(1))
    [connection] = direct.free
    await connection.send_command("CLIENT", "ID")
    await store.redis.client_kill_filter(_id=await connection.read_response())
    record = _record(2)
    assert await store.create(record) == record.id
    assert (await store.get(record.id)).args == [2]  # type: ignore[union-attr]
    assert direct.made == 0 and direct.free == []  # the dead one is gone, not reused


async def test_a_create_with_redis_away_is_a_connection_error() -> None:
    """Nothing listens: redis-py's ConnectionError (the API's 503), from the slow way
    after the direct one; no connection is kept."""
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    client = connect(f"redis://127.0.0.1:{port}/0")
    store = RecordStore(client, history=False)
    try:
        with pytest.raises(RedisConnectionError):
            await store.create(_record(1))
        assert _direct(store).made == 0 and _direct(store).free == []
    finally:
        await store.aclose()
        await client.aclose()


async def test_a_create_cancelled_before_its_reply_leaves_no_reply_behind(
        store: RecordStore) -> None:
    """A reply left unread in a connection would answer the next create with another
    task's id: the cancelled call's connection is dropped."""
    direct = _direct(store)
    await store.create(_record(0))  # a connection in the free list: the next send is at once
    await store.redis.client_pause(10_000, all=False)  # Redis holds writes
    try:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(store.create(_record(1)), 0.2)
        assert direct.made == 0 and direct.free == []
    finally:
        await store.redis.client_unpause()
    record = _record(2)
    assert await store.create(record) == record.id


async def test_a_create_redis_does_not_answer_in_time_is_an_error_at_once(url: str) -> None:
    """Redis frozen: the call fails after the pool's socket timeout with redis-py's
    TimeoutError (the API's 503), once: not a second wait the slow way."""
    client = Redis(connection_pool=BlockingConnectionPool.from_url(url, socket_timeout=0.5))
    store = RecordStore(client, history=False)
    try:
        await store.create(_record(1))  # a direct connection, free again
        await client.client_pause(3_000, all=False)  # Redis holds writes
        try:
            started = time.monotonic()
            with pytest.raises(RedisTimeoutError):
                await store.create(_record(2))
            assert time.monotonic() - started < 1.5
        finally:
            await client.client_unpause()
        assert _direct(store).made == 0
    finally:
        await store.aclose()
        await client.aclose()
