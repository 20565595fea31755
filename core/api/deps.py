from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from core.backend import TaskBackend
from core.db import session


async def get_backend(request: Request) -> TaskBackend:
    # async: FastAPI runs a plain def dependency in its thread pool, a thread hop
    # for every request (7% of a submit's CPU under load, py-spy).
    backend: TaskBackend = request.app.state.backend
    return backend


BackendDep = Annotated[TaskBackend, Depends(get_backend)]


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    async with session(request.app.state.settings.database_url) as made:
        yield made


SessionDep = Annotated[AsyncSession, Depends(get_session)]
