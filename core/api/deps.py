from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from core.backend import TaskBackend


def get_backend(request: Request) -> TaskBackend:
    backend: TaskBackend = request.app.state.backend
    return backend


BackendDep = Annotated[TaskBackend, Depends(get_backend)]
