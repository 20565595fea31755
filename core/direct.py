"""The submit's script call without redis-py's command machinery (issue 9).

A submit is one script call: the record and the library's message (core/records.py,
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
- the connection fails (Redis restarted, a timeout): it is dropped, and the call is
  made the slow way, which tries again as the client's retry policy says. A create
  that Redis did run and is run again queues its message twice; the second delivery
  finds the record started or ended and does not run it (core/runner.py).
A call cancelled while its reply is unread (the client went away) drops its
connection: a reply left in it would answer the next call.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError, NoScriptError, ResponseError, TimeoutError

# Connections kept for direct calls; beyond that many at once, calls take the slow way.
MOST = 32


class DirectScripts:
    def __init__(self, redis: Redis, most: int = MOST) -> None:
        pool = redis.connection_pool
        # No socket timeout on the send: redis-py would put each send in a task of its
        # own (asyncio.wait_for), a fifth of the call's CPU. A send of one command on a
        # connection with no other command in flight goes to the kernel's buffer at
        # once; the read has the timeout, and a Redis that stopped answering is seen
        # there.
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
        try:
            await connection.send_packed_command(
                connection.pack_command("EVALSHA", script.sha, len(keys), *keys, *args),
                check_health=False)
            reply = await connection.read_response(timeout=self.timeout)
        except NoScriptError:  # an error reply, read: the connection is in step
            self.free.append(connection)
            return await script(keys=keys, args=args)
        except (ConnectionError, TimeoutError):
            await self._drop(connection)
            return await script(keys=keys, args=args)
        except ResponseError:  # an error reply, read: the connection is in step
            self.free.append(connection)
            raise
        except BaseException:  # cancelled, or worse: its reply may be unread
            await self._drop(connection)
            raise
        self.free.append(connection)
        return reply

    async def _drop(self, connection: Any) -> None:
        self.made -= 1
        await connection.disconnect()

    async def aclose(self) -> None:
        free, self.free = self.free, []
        for connection in free:
            await self._drop(connection)

