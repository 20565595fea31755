"""The web dashboard (`/dashboard`) of every backend; see router.py and live.py."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles


def mount(app: FastAPI) -> None:
    from core.api.dashboard.router import STATIC, router

    app.include_router(router)
    app.mount("/dashboard/static", StaticFiles(directory=STATIC), name="dashboard-static")


async def aclose(app: FastAPI) -> None:
    hub = getattr(app.state, "dashboard_hub", None)
    if hub is not None:
        await hub.aclose()


__all__ = ["aclose", "mount"]
