"""The benchmark's work, identical to the shared tasks `noop`, `sleep` and `cpu` of
core/tasks/shared.py (the raw mode may not import queuebench code, so it imports these)."""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import Any

WORKLOADS = ("noop", "sleep", "cpu")


def noop(payload: Any = None) -> Any:
    return payload


def cpu(n: int) -> str:
    digest = b"queuebench"
    for _ in range(n):
        digest = hashlib.sha256(digest).digest()
    return digest.hex()


def sleep_sync(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


async def sleep_async(seconds: float) -> float:
    await asyncio.sleep(seconds)
    return seconds
