from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from core.api.deps import BackendDep

router = APIRouter(tags=["health"])


@router.get("/health")
async def health(backend: BackendDep) -> JSONResponse:
    checks = await backend.health()
    down = [name for name in ("redis", "database") if checks.get(name) is False]
    if not checks.get("workers"):
        down.append("workers")
    if down:
        return JSONResponse({**checks, "detail": f"down: {', '.join(down)}"}, status_code=503)
    return JSONResponse(checks)
