from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from core.api import dashboard
from core.api.guard import Guard
from core.api.openapi import document, method_not_allowed
from core.api.routers import health, metrics, schedules, tasks, users
from core.backend import backend_class
from core.db import dispose_all
from core.errors import QueuebenchError
from core.history.writer import writing
from core.schedule.entries import schedule_for
from core.settings import Settings
from core.store.records import finite
from core.tasks.features import supported_options

log = logging.getLogger("queuebench.api")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        backend = backend_class(settings.queue_backend)(settings)
        app.state.backend = backend
        try:
            async with writing(settings, backend.redis):  # the history writer
                yield
        finally:
            await dashboard.aclose(app)
            await backend.aclose()
            await dispose_all()

    app = FastAPI(title="queuebench", version="0.1.0", lifespan=lifespan,
                  description="One task API; the queue behind it is a setting.")
    app.state.settings = settings
    adapter = backend_class(settings.queue_backend)
    app.state.schedule = schedule_for(settings.schedule_file, adapter.support(),
                                      settings.queue_backend)
    app.include_router(tasks.router)
    app.include_router(schedules.router)
    app.include_router(health.router)
    app.include_router(users.router)
    app.include_router(metrics.router)
    dashboard.mount(app)
    document(app, settings, supported_options(adapter.support()))
    app.add_middleware(Guard, api_key=settings.api_key, max_body_bytes=settings.max_body_bytes)
    if settings.cors_origins:  # off unless asked for: no Access-Control-* headers. Outside
        # the guard: a browser's preflight carries no API key.
        app.add_middleware(CORSMiddleware, allow_methods=["*"], allow_headers=["*"],
                           allow_origins=[o.strip() for o in settings.cors_origins.split(",")])
    app.add_exception_handler(405, method_not_allowed)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        private = request.url.path.startswith(users.router.prefix)
        return Response(_errors(exc, private), status_code=422, media_type="application/json")

    @app.exception_handler(QueuebenchError)
    async def known_error(request: Request, exc: QueuebenchError) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status)

    @app.exception_handler(RedisError)
    async def redis_down(request: Request, exc: RedisError) -> JSONResponse:
        log.warning("redis error on %s: %s", request.url.path, exc)
        return JSONResponse({"detail": f"redis unavailable: {exc}"}, status_code=503)

    @app.exception_handler(SQLAlchemyError)
    async def database_down(request: Request, exc: SQLAlchemyError) -> JSONResponse:
        log.warning("database error on %s: %s", request.url.path, exc)
        return JSONResponse({"detail": f"database unavailable: {type(exc).__name__}"},
                            status_code=503)

    return app


def _errors(exc: RequestValidationError, private: bool) -> str:
    """FastAPI's 422 body, but JSON even when the input it echoes holds NaN, without
    that echo when it is too deep to encode (a body nested too deeply), and without it
    at all for a `private` route, whose input may hold a password (POST /users)."""
    errors = exc.errors()
    if private:
        errors = [{k: v for k, v in e.items() if k != "input"} for e in errors]
    try:
        return json.dumps({"detail": finite(jsonable_encoder(errors))}, allow_nan=False)
    except (RecursionError, ValueError):
        return json.dumps({"detail": [{k: v for k, v in e.items() if k in ("type", "loc", "msg")}
                                      for e in errors]})
