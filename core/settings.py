"""One settings object, read from the environment and `.env` (docs/configuration.md)."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

BACKENDS = ("celery", "arq", "dramatiq", "taskiq")
BackendName = Literal["celery", "arq", "dramatiq", "taskiq"]


class Environment(StrEnum):
    development = "development"
    testing = "testing"
    production = "production"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    queue_backend: BackendName = "arq"
    redis_url: str = "redis://localhost:6379/0"
    database_url: str = "sqlite+aiosqlite:///./queuebench.db"
    broker_url: str | None = None
    # native: queuebench writes each library's message itself (one round trip with the
    # record); library: the library's own producer, off the event loop.
    producer: Literal["native", "library"] = "native"
    environment: Environment = Environment.development
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="log level of queuebench's processes and the libraries' "
        "workers it starts (Celery logs two lines a task at INFO, arq two a job)")

    record_ttl: int = Field(86_400, description="seconds a task record is kept in Redis")
    records_kept: int = Field(100_000, description="newest task ids kept in the listing index")
    redis_max_connections: int = Field(
        200, ge=1, description="connections a process opens to REDIS_URL at most; "
        "more concurrent calls wait for one")
    worker_heartbeat: float = Field(2.0, description="seconds between worker heartbeats")
    # Redelivery of a task whose worker died (core/worker/reaper.py): seconds after the
    # worker's last heartbeat.
    redelivery_after: float = Field(30.0, ge=1, le=86_400, description="seconds after a "
                                    "worker's last heartbeat before its running tasks run "
                                    "again elsewhere")
    # The library's own redelivery, behind the reaper: how long a started task may go
    # unacknowledged before the broker hands it out again.
    visibility_timeout: int = Field(3_600, ge=1,
                                    description="seconds before an unacked task is redelivered")
    retry_backoff_max: float = Field(600.0, description="cap of a retry's backoff, seconds")
    shutdown_timeout: float = Field(60.0,
                                    description="seconds a stopping worker waits for its tasks")
    # Dramatiq looks for a dead worker's messages on this many commands in a million.
    dramatiq_maintenance_chance: int = Field(1_000, ge=1, le=1_000_000)
    # Durable task history (core/history/store.py): finished tasks are streamed to the database.
    history_enabled: bool = Field(True, description="keep finished tasks in the database")
    history_batch: int = Field(2_000, ge=1, le=10_000,
                               description="task ids the history writer reads at once")
    history_interval: float = Field(
        1.0, ge=0, le=60, description="seconds the history writer lets finished tasks "
        "gather once it has caught up (fewer, larger database transactions)")

    # Bad input and access (README, "Limits and access").
    default_time_limit: float = Field(
        3600.0, ge=0, le=7 * 86_400, description="seconds a task submitted without a "
        "time_limit may run (0: no limit)")
    api_key: str | None = Field(None, min_length=1, description="when set, every endpoint "
                                "but /health and /metrics needs header X-API-Key")
    max_body_bytes: int = Field(1_048_576, ge=1, description="a larger request body is a 413")
    cors_origins: str = Field("", description="comma-separated origins allowed by CORS "
                              "(`*`: any); empty: no CORS headers")

    # The periodic schedule (core/schedule/entries.py): a TOML file, else the one declared in core.
    schedule_file: str | None = Field(None, description="TOML file of periodic entries")

    @property
    def broker(self) -> str:
        return self.broker_url or self.redis_url
