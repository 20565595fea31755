from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST

from core.api.deps import BackendDep
from core.api.metrics import scrape

router = APIRouter(tags=["metrics"])


@router.get("/metrics", response_class=Response)
async def metrics(backend: BackendDep) -> Response:
    """Prometheus text format: the whole system, read from Redis (core/api/metrics.py)."""
    return Response(await scrape(backend), media_type=CONTENT_TYPE_LATEST)
