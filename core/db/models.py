"""The tables: durable task history, users and their notifications.

Times are timezone-aware UTC in Python; `UtcDateTime` stores them so on PostgreSQL
(timestamptz) and SQLite (text, which has no zone) alike, and compares correctly.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, ForeignKey, Index, Integer, MetaData, String, Text
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator, TypeEngine

# Named constraints, so migrations can drop them by name on every database.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UtcDateTime(TypeDecorator[datetime]):
    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: times are stored as UTC")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class JsonText(TypeDecorator[Any]):
    """JSON kept as TEXT. SQLite gives a column declared JSON numeric affinity, which
    turns the JSON `1.0` into the integer 1; a task's result must come back as it went in."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        return None if value is None else json.dumps(value, separators=(",", ":"))

    def process_result_value(self, value: str | None, dialect: Dialect) -> Any:
        return None if value is None else json.loads(value)


#: JSON on PostgreSQL, exact JSON text on SQLite.
Json: TypeEngine[Any] = JSON().with_variant(JsonText(), "sqlite")


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class TaskHistory(Base):
    """A task's final body (docs/api.md, "The task body"), kept after Redis has let it go."""

    __tablename__ = "task_history"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    backend: Mapped[str] = mapped_column(String(20))
    state: Mapped[str] = mapped_column(String(16))
    args: Mapped[Any] = mapped_column(Json)
    kwargs: Mapped[Any] = mapped_column(Json)
    result: Mapped[Any] = mapped_column(Json, nullable=True)
    error: Mapped[Any] = mapped_column(Json, nullable=True)
    retries: Mapped[int] = mapped_column(Integer, default=0)
    submitted_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    queue: Mapped[str | None] = mapped_column(String(200))
    worker: Mapped[str | None] = mapped_column(String(300))

    # Every listing is newest first, filtered by at most a few of these.
    __table_args__ = (
        Index("ix_task_history_submitted_at", "submitted_at"),
        Index("ix_task_history_state_submitted_at", "state", "submitted_at"),
        Index("ix_task_history_name_submitted_at", "name", "submitted_at"),
        Index("ix_task_history_backend_submitted_at", "backend", "submitted_at"),
    )


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(32), unique=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class Notification(Base):
    __tablename__ = "notifications"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(50))
    message: Mapped[str] = mapped_column(Text)
    # The task that wrote it: unique, so a redelivered task does not write it twice.
    task_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
