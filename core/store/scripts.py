"""The submit's script call without redis-py's command machinery (issue 9).

A submit is one script call: the record and the library's message (core/store/records.py,
_CREATE). On the asyncio client, a command call costs more CPU than the script's own
packing and its socket I/O: a connection checked out of the pool (a lock, an event, a
deprecation wrapper), a retry policy, timeouts and metrics around each call. Measured
on this machine, 32 calls at a time: 79 µs of the caller's CPU a call that way, 44 µs
sent and read on a connection of its own.

So the API keeps a few connections of redis-py's own class, made with the pool's
settings, for this call alone: one is taken from the free list, the EVALSHA is packed
and sent, its reply read, and the connection goes back. What the fast way does not do
is left to the slow one, the client's own call:
- all MOST connections are busy: the call waits in the pool like any other;
- Redis lost the script (NOSCRIPT after a restart or SCRIPT FLUSH): the client's
  script object loads it again;
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
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

# Connections kept for direct calls; beyond that many at once, calls take the slow way.
MOST = 32


class DirectScripts:
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
