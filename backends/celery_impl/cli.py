"""queuebench's Celery app for Celery's own command line, with the settings from the
environment: `celery -A backends.celery_impl.cli flower` (Flower on the shared
tasks), `celery -A backends.celery_impl.cli inspect registered`."""

from __future__ import annotations

from backends.celery_impl.app import celery_app
from core.settings import Settings

app = celery_app(Settings(queue_backend="celery"))
