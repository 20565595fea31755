"""The store's Lua scripts, and the one caller of them.

The scripts are the files of core/store/lua/, one per record transition, each opening
with a header that lists its KEYS and ARGV by position; `_lib.lua`, the helpers they
share, is prepended to each. They are read once, at import. No key name is written in
a script: a key that depends on the call is one of its KEYS, a fixed one is a `$NAME`
of core/store/keys.py, filled in here. (So the scripts are not Redis Cluster-correct,
and could not be by KEYS alone: a create runs the library's own commands for its
message, and a trim deletes records whose ids it reads from the index.)

`Scripts` registers them on one client. Each is called as an EVALSHA that loads the
script again when Redis lost it (NOSCRIPT after a restart or SCRIPT FLUSH): redis-py's
script object. Two calls are sent another way, for CPU:
- a worker's start and finish, on its lane (core/worker/lane.py), which loads the
  scripts on its connection and sends their EVALSHA itself;
- a submit's create, on an asyncio client, on direct connections (`DirectScripts`):
  a redis-py command call costs its caller more CPU than packing the call and its
  socket I/O together (a connection checked out of the pool: a lock, an event, a
  deprecation wrapper; a retry policy, timeouts and metrics around each call), and
  the direct way about half as much.

So the API keeps a few connections of redis-py's own class, made with the pool's
settings, for the create alone: one is taken from the free list, the EVALSHA is packed
and sent, its reply read, and the connection goes back. What the fast way does not do
is left to the slow one, the client's own call:
- all MOST connections are busy: the call waits in the pool like any other;
- Redis lost the script (NOSCRIPT): the client's script object loads it again;
- the connection fails (Redis restarted, or closed it): it is dropped, and the call is
  made the slow way, which tries again as the client's retry policy says. A create
  that Redis did run and is run again queues its message twice; the second delivery
  finds the record started or ended and does not run it (core/worker/runner.py).
Redis not answering within the pool's socket timeout is an error at once (the API's
503), not a second wait the slow way.
A call cancelled while its reply is unread (the client went away) drops its
connection: a reply left in it would answer the next call.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from redis import Redis as SyncRedis
from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from core.store import keys

LUA = Path(__file__).with_name("lua")
# Index entries a create trims at most (beyond RECORDS_KEPT, after the setting was
# lowered): a few each, so no script call holds Redis for long.
TRIM_STEP = 100


def _lua(value: object) -> str:
    """A constant as Lua source: a string quoted, a tuple as a table's items."""
    if isinstance(value, tuple):
        return ", ".join(map(repr, value))
    return json.dumps(value)


# What a script's `$NAME` stands for: core/store/keys.py's names (not the templates with
# `{}`, which a caller fills and passes as KEYS) and the scripts' constants.
FILLED = {name: _lua(value) for name, value in vars(keys).items()
          if name.isupper() and "{}" not in str(value)} | {"TRIM_STEP": _lua(TRIM_STEP)}


def _sources() -> dict[str, str]:
    """Each script's text by name (its file's), the shared helpers before it, its
    `$NAME`s filled in (an unknown one is a KeyError at import)."""
    lib = (LUA / "_lib.lua").read_text()
    return {path.stem: re.sub(r"\$([A-Z_]+)", lambda m: FILLED[m[1]], lib + path.read_text())
            for path in sorted(LUA.glob("*.lua")) if not path.stem.startswith("_")}


SOURCES = _sources()


class Scripts:
    """The scripts registered on one client, asyncio or blocking: each called with
    `keys=` and `args=` (an awaitable on an asyncio client), or in a pipeline with
    `client=`. `create_call` is how a submit's create is sent, chosen here once."""

    def __init__(self, redis: Redis | SyncRedis) -> None:
        self.create = redis.register_script(SOURCES["create"])
        self.start = redis.register_script(SOURCES["start"])
        self.finish = redis.register_script(SOURCES["finish"])
        self.revoke = redis.register_script(SOURCES["revoke"])
        self.expire = redis.register_script(SOURCES["expire"])
        self.reclaim = redis.register_script(SOURCES["reclaim"])
        self.resend = redis.register_script(SOURCES["resend"])
        self.release = redis.register_script(SOURCES["release"])
        self.unbind = redis.register_script(SOURCES["unbind"])
        self.scan = redis.register_script(SOURCES["scan"])
        # Direct connections on an asyncio client; a blocking one has no pool
        # machinery worth going around.
        self.direct = DirectScripts(redis) if isinstance(redis, Redis) else None

    def create_call(self, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """The create script's reply (an awaitable on an asyncio client)."""
        if self.direct is not None:
            return self.direct.call(self.create, keys, args)
        return self.create(keys=keys, args=args)

    async def aclose(self) -> None:
        """Close what these calls opened themselves (not the client)."""
        if self.direct is not None:
            await self.direct.aclose()


# Connections kept for direct calls; beyond that many at once, calls take the slow way.
MOST = 32


class DirectScripts:
    """Script calls on connections of their own (see the module's docstring)."""

    def __init__(self, redis: Redis, most: int = MOST) -> None:
        pool = redis.connection_pool
        # The connections have no socket timeout of their own: redis-py would put each
        # send in a task of its own (asyncio.wait_for), a fifth of the call's CPU. One
        # timeout of the pool's socket timeout covers a call whole instead: connect,
        # send and read (a read given redis-py's `timeout` answers None when it runs
        # out, as for a pub/sub poll, where a call needs an error).
        self.kwargs = {**pool.connection_kwargs, "socket_timeout": None}
        self.connection_class = pool.connection_class
        self.timeout = pool.connection_kwargs.get("socket_timeout")
        self.most = most
        self.free: list[Any] = []
        self.made = 0

    async def call(self, script: AsyncScript, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        if self.free:
            connection = self.free.pop()
        elif self.made < self.most:
            self.made += 1
            connection = self.connection_class(**self.kwargs)
        else:
            return await script(keys=keys, args=args)
        try:  # (packing too: a connection taken is given back or dropped, whatever fails)
            packed = connection.pack_command("EVALSHA", script.sha, len(keys), *keys, *args)
            async with asyncio.timeout(self.timeout):
                await connection.send_packed_command(packed, check_health=False)
                reply = await connection.read_response()
        except NoScriptError:  # an error reply, read: the connection is in step
            self.free.append(connection)
            return await script(keys=keys, args=args)
        except ResponseError:  # the same
            self.free.append(connection)
            raise
        except RedisConnectionError:  # Redis restarted, or closed the connection
            await self._drop(connection)
            return await script(keys=keys, args=args)
        except TimeoutError:  # asyncio's: Redis did not answer in time. Not tried
            # again: a second wait would double what a client waits for its 503.
            await self._drop(connection)
            raise RedisTimeoutError(f"Redis did not answer within {self.timeout} s") from None
        except BaseException:  # cancelled, or worse: its reply may be unread
            await self._drop(connection)
            raise
        self.free.append(connection)
        return reply

    async def _drop(self, connection: Any) -> None:
        self.made -= 1
        await connection.disconnect(nowait=True)

    async def aclose(self) -> None:
        free, self.free = self.free, []
        for connection in free:
            await self._drop(connection)
