"""The users app's data: accounts with argon2 password hashes, and notifications.

A password is hashed with argon2id (argon2-cffi: salted, memory-hard, parameters
stored in the hash) on a thread, since a hash takes tens of milliseconds by design.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from argon2 import PasswordHasher
from argon2.exceptions import VerificationError
from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from core.db.models import Notification, User

_hasher = PasswordHasher()


class UserExists(Exception):
    """The username or the email is taken."""


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(_hasher.hash, password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except VerificationError:
        return False


async def create_user(db: AsyncSession, username: str, email: str, password: str) -> User:
    """Add and commit a user; UserExists names what is taken."""
    taken = (await db.scalars(select(User).where(
        or_(User.username == username, User.email == email)))).first()
    if taken is not None:
        raise UserExists(_clash(taken, username))
    user = User(username=username, email=email, password_hash=await hash_password(password))
    db.add(user)
    try:
        await db.commit()
    except IntegrityError:  # another request took it since the check above
        await db.rollback()
        raise UserExists("username or email already taken") from None
    return user


def _clash(taken: User, username: str) -> str:
    field = "username" if taken.username == username else "email"
    return f"{field} already taken"


async def list_users(db: AsyncSession, limit: int, offset: int) -> Sequence[User]:
    query = select(User).order_by(User.id).offset(offset).limit(limit)
    return (await db.scalars(query)).all()


async def notifications_of(db: AsyncSession, user_id: int) -> Sequence[Notification]:
    query = select(Notification).where(Notification.user_id == user_id)
    return (await db.scalars(query.order_by(Notification.id))).all()


async def add_welcome(db: AsyncSession, user_id: int, task_id: str | None) -> int:
    """Write the welcome notification of a user, once per task: a redelivered task
    finds the row of its earlier run. The notification's id."""
    if task_id is not None:
        done = await db.scalar(select(Notification.id).where(Notification.task_id == task_id))
        if done is not None:
            return done
    user = await db.get(User, user_id)
    if user is None:
        raise LookupError(f"no user {user_id}")
    note = Notification(user_id=user.id, kind="welcome", task_id=task_id,
                        message=f"Welcome to queuebench, {user.username}!")
    db.add(note)
    await db.commit()
    return note.id
