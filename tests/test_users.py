"""The users app on every backend and both databases: accounts with argon2 hashes,
409 on a clash, 422 on bad input, and the welcome task that the worker runs with a
session of its own."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest_asyncio
from sqlalchemy import select

from core.db import User, dispose_all, session
from core.db.users import verify_password
from tests.conformance.support import finished
from tests.support_db import Stack

PASSWORD = "correct horse battery"


@pytest_asyncio.fixture(loop_scope="session")
async def http(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.url, timeout=60) as client:
        yield client


def new_user(**changes: str) -> dict[str, str]:
    name = f"user_{uuid.uuid4().hex[:10]}"
    return {"username": name, "email": f"{name}@example.com", "password": PASSWORD, **changes}


async def create(http: httpx.AsyncClient, **changes: str) -> dict[str, Any]:
    response = await http.post("/users", json=new_user(**changes))
    assert response.status_code == 201, response.text
    assert response.headers["location"] == f"/users/{response.json()['id']}"
    return response.json()


async def test_creating_a_user_runs_the_welcome_task_on_the_worker(
        http: httpx.AsyncClient, backend_name: str) -> None:
    user = await create(http)
    task = await finished(http, user["welcome_task_id"])
    assert (task["name"], task["backend"], task["state"]) == ("welcome", backend_name, "SUCCESS")
    [note] = (await http.get(f"/users/{user['id']}/notifications")).json()
    assert note["id"] == task["result"]
    assert (note["user_id"], note["kind"], note["task_id"]) == (user["id"], "welcome", task["id"])
    assert user["username"] in note["message"]


async def test_the_password_is_stored_as_an_argon2_hash_and_never_returned(
        http: httpx.AsyncClient, stack: Stack) -> None:
    user = await create(http)
    shown = [user, (await http.get(f"/users/{user['id']}")).json(),
             *(await http.get("/users", params={"limit": 1000})).json()]
    assert all(set(u) <= {"id", "username", "email", "created_at", "welcome_task_id"}
               for u in shown)
    assert PASSWORD not in str(shown)
    async with session(stack.database_url) as db:
        stored = (await db.scalars(select(User.password_hash).where(User.id == user["id"]))).one()
    await dispose_all()
    assert stored.startswith("$argon2id$") and PASSWORD not in stored
    assert verify_password(stored, PASSWORD) and not verify_password(stored, "wrong")


async def test_read_and_list_users(http: httpx.AsyncClient) -> None:
    users = [await create(http) for _ in range(3)]
    fetched = (await http.get(f"/users/{users[1]['id']}")).json()
    assert fetched == {k: v for k, v in users[1].items() if k != "welcome_task_id"}
    listed = (await http.get("/users", params={"limit": 1000})).json()
    ids = [u["id"] for u in listed]
    assert ids == sorted(ids) and {u["id"] for u in users} <= set(ids)
    page = (await http.get("/users", params={"limit": 2, "offset": ids.index(users[0]["id"])}))
    assert [u["id"] for u in page.json()] == [users[0]["id"], users[1]["id"]]
    assert (await http.get("/users/999999999")).status_code == 404
    assert (await http.get("/users/999999999/notifications")).status_code == 404


async def test_a_taken_username_or_email_is_409_whatever_the_case(
        http: httpx.AsyncClient) -> None:
    user = await create(http)
    same_name = await http.post("/users", json=new_user(username=user["username"].upper()))
    assert same_name.status_code == 409
    assert same_name.json()["detail"] == "username already taken"
    same_email = await http.post("/users", json=new_user(email=user["email"].upper()))
    assert same_email.status_code == 409
    assert same_email.json()["detail"] == "email already taken"


async def test_bad_input_is_422_naming_the_field(http: httpx.AsyncClient) -> None:
    for field, value in [("email", "not-an-email"), ("email", "a@b"),
                         ("username", "no spaces"), ("username", "x"),
                         ("password", "short")]:
        response = await http.post("/users", json=new_user(**{field: value}))
        assert response.status_code == 422, (field, value)
        assert response.json()["detail"][0]["loc"] == ["body", field]
    extra = await http.post("/users", json={**new_user(), "is_admin": True})
    assert extra.status_code == 422
