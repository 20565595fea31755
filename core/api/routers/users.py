"""The users app: accounts, and the notifications that background tasks write.

Creating a user submits the shared task `welcome`, which runs on whichever queue
serves this API and writes the user's first notification from the worker.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator

from core.api.deps import BackendDep, SessionDep
from core.api.openapi import answers
from core.db import User
from core.db.users import UserExists, create_user, list_users, notifications_of
from core.tasks.options import MAX_ID

router = APIRouter(prefix="/users", tags=["users"])
# A database integer: a larger id is a 422, not the driver's overflow.
UserId = Annotated[int, Path(ge=1, le=MAX_ID)]


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: str = Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{2,31}$",
                          description="3 to 32 letters, digits, `_`, `.`, `-`; kept lower-case")
    # A pattern, in the schema too, rather than email-validator's rules, which also
    # refuse addresses the schema's `format: email` admits (special-use domains).
    email: str = Field(max_length=254,
                       pattern=r"^[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}$")
    # The upper bound keeps one request from buying minutes of hashing.
    password: str = Field(min_length=8, max_length=1024)

    # Unique means unique whatever the case: Alice and alice are one user.
    @field_validator("username", "email", mode="after")
    @classmethod
    def lower(cls, value: str) -> str:
        return value.lower()


class UserPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    username: str
    email: str
    created_at: datetime


class UserCreated(UserPublic):
    welcome_task_id: str


class NotificationPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    user_id: int
    kind: str
    message: str
    task_id: str | None
    created_at: datetime


async def _user(db: SessionDep, user_id: int) -> User:
    user = await db.get(User, user_id)
    if user is None:
        raise HTTPException(404, f"no user {user_id}")
    return user


@router.post("", status_code=201, response_model=UserCreated, responses=answers(409))
async def create(body: UserCreate, db: SessionDep, backend: BackendDep,
                 response: Response) -> dict[str, Any]:
    try:
        user = await create_user(db, body.username, body.email, body.password)
    except UserExists as exc:
        raise HTTPException(409, str(exc)) from None
    # Submitted after the commit, so the worker always finds the user.
    welcome = await backend.submit("welcome", [user.id])
    response.headers["Location"] = f"/users/{user.id}"
    return {**UserPublic.model_validate(user).model_dump(), "welcome_task_id": welcome.id}


@router.get("", response_model=list[UserPublic])
async def list_(db: SessionDep, limit: Annotated[int, Query(ge=1, le=1000)] = 50,
                offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0) -> list[User]:
    return list(await list_users(db, limit, offset))


@router.get("/{user_id}", response_model=UserPublic, responses=answers(404))
async def read(user_id: UserId, db: SessionDep) -> User:
    return await _user(db, user_id)


@router.get("/{user_id}/notifications", response_model=list[NotificationPublic],
            responses=answers(404))
async def notifications(user_id: UserId, db: SessionDep) -> list[Any]:
    await _user(db, user_id)
    return list(await notifications_of(db, user_id))
