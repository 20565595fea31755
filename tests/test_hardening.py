"""Bad input and access, on every backend, through a real server and worker: bodies
over MAX_BODY_BYTES (declared or streamed), deep nesting, invalid UTF-8, lone UTF-16
surrogates, ids that are not UUIDs, out-of-range timeouts and options, NaN and
Infinity, arguments that would hold a worker for ever, DEFAULT_TIME_LIMIT, API_KEY,
CORS, and no password ever in a response. The fuzzer (tests/test_fuzz.py) covers the
schema as a whole."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import httpx
import pytest
import redis

from core.api.guard import DRAIN_SECONDS
from core.cli.procs import Proc, Server
from core.settings import Settings
from core.store.keys import TASK_KEY
from core.tasks.options import MAX_SECONDS
from core.tasks.shared import MAX_CPU_ROUNDS, MAX_SLEEP
from tests.conformance.support import finished, submit

LIMIT = Settings.model_fields["max_body_bytes"].default


def strict_json(text: str) -> Any:
    """JSON as the RFC has it: the bare words NaN and Infinity are an error."""
    def refuse(word: str) -> None:
        raise ValueError(f"not JSON: {word}")

    return json.loads(text, parse_constant=refuse)


async def raw_exchange(server: Server, head: bytes, chunks: list[bytes],
                       timeout: float = 10) -> bytes:
    """Send a request's head and these body bytes, never the body's end; the answer.
    The server answers before the body is over, or the read times out."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(head)
        for chunk in chunks:
            writer.write(chunk)
            try:
                await writer.drain()
            except ConnectionError:  # the server answered and closed: read its answer
                break
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        return head + await asyncio.wait_for(reader.readexactly(length), timeout)
    finally:
        writer.close()


# -- body size ---------------------------------------------------------------------------
def test_the_default_limit_is_one_mebibyte() -> None:
    assert LIMIT == 1_048_576


async def test_a_body_over_max_body_bytes_is_413(client: httpx.AsyncClient) -> None:
    body = json.dumps({"args": ["x" * LIMIT]})
    for path in ("/tasks/noop", "/tasks/noop/batch", "/users"):
        response = await client.post(path, content=body,
                                     headers={"content-type": "application/json"})
        assert response.status_code == 413, (path, response.text)
        assert "MAX_BODY_BYTES" in response.json()["detail"]


async def test_a_body_just_under_the_limit_is_taken(client: httpx.AsyncClient) -> None:
    payload = "y" * (LIMIT - 100)
    task = await submit(client, "noop", payload)
    assert (await finished(client, task["id"]))["result"] == payload


async def test_a_declared_length_over_the_limit_is_refused_before_the_body(
        server: Server) -> None:
    head = (b"POST /tasks/noop HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b"content-length: 1000000000\r\n\r\n")
    began = time.monotonic()
    answer = await raw_exchange(server, head, [b'{"args": ["'])  # 11 of 10^9 bytes sent
    assert answer.startswith(b"HTTP/1.1 413"), answer
    assert time.monotonic() - began < DRAIN_SECONDS  # far past what is drained: at once


async def test_a_body_over_the_limit_awaiting_100_continue_is_refused_unsent(
        server: Server) -> None:
    """The client sends the body only once told to continue: the 413 comes instead."""
    head = (b"POST /tasks/noop HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b"expect: 100-continue\r\ncontent-length: 3000000\r\n\r\n")
    began = time.monotonic()
    answer = await raw_exchange(server, head, [])
    assert answer.startswith(b"HTTP/1.1 413"), answer
    assert time.monotonic() - began < DRAIN_SECONDS


def urllib_post(url: str, data: bytes | Iterable[bytes]) -> str:
    """What the standard library's client makes of a POST: its status and detail, or
    the error it raised. It asks for `Connection: close` and writes the whole body
    before it reads (chunked when `data` is an iterable), so it is reset, not
    answered, by a server that closes with part of the body unread."""
    request = urllib.request.Request(url, data=data,
                                     headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return f"{answer.status} {json.loads(answer.read())}"
    except urllib.error.HTTPError as refused:
        return f"{refused.code} {json.loads(refused.read())['detail']}"
    except OSError as failed:  # a URLError, or raised while reading the answer
        return repr(getattr(failed, "reason", failed))


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_a_body_over_the_limit_is_a_413_to_urllib_which_sends_it_all_first(
        server: Server, framing: str) -> None:
    body = json.dumps({"args": ["x" * 3_000_000]}).encode()
    pieces = [body[i:i + 65_536] for i in range(0, len(body), 65_536)]
    answers = Counter([await asyncio.to_thread(
        urllib_post, f"{server.url}/tasks/noop",
        body if framing == "content-length" else iter(pieces)) for _ in range(20)])
    assert answers == {f"413 request body over MAX_BODY_BYTES ({LIMIT} bytes)": 20}, answers


async def send_all_then_read(server: Server, request: bytes) -> bytes:
    """Write the whole request, then read the answer to its end (the server closes:
    Connection: close), as a client does that reads only once all is sent; or the
    error it gets instead."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(request)
        await writer.drain()
        await asyncio.sleep(0.2)  # the server answers meanwhile
        return await asyncio.wait_for(reader.read(), 10)
    except ConnectionError as failed:
        return repr(failed).encode()
    finally:
        writer.close()


@pytest.mark.parametrize("path, status", [("/tasks/nosuchtask", 404), ("/health", 405)])
async def test_an_answer_given_without_reading_the_body_reaches_a_client_sending_it_all(
        server: Server, path: str, status: int) -> None:
    """The app answers without reading the body: the server reads and drops it before
    the answer ends, or closing with it unread resets the connection, answer and all."""
    size = LIMIT - 1
    head = (f"POST {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n"
            f"content-type: application/json\r\ncontent-length: {size}\r\n\r\n").encode()
    for _ in range(5):
        answer = await send_all_then_read(server, head + b" " * size)
        assert answer.startswith(f"HTTP/1.1 {status} ".encode()), answer[:200]


async def test_a_streamed_body_is_refused_once_it_passes_the_limit(server: Server) -> None:
    """Chunked: no length to check first. The body never ends here, so a server that
    read it whole would never answer: the 413 comes once the count passes the limit and
    the rest has been drained for DRAIN_SECONDS."""
    head = (b"POST /tasks/noop HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b"transfer-encoding: chunked\r\n\r\n")
    piece = b"z" * 65_536
    chunk = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    answer = await raw_exchange(server, head, [chunk] * (LIMIT // len(piece) + 2))
    assert answer.startswith(b"HTTP/1.1 413"), answer
    assert b"MAX_BODY_BYTES" in answer


async def test_a_smaller_max_body_bytes_is_applied(start_server: Callable[..., Server]) -> None:
    server = start_server(MAX_BODY_BYTES="64")
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        small = await http.post("/tasks/noop", json={"args": ["a"]})
        large = await http.post("/tasks/noop", json={"args": ["a" * 64]})
    server.stop()
    assert (small.status_code, large.status_code) == (202, 413)


# -- malformed bodies ---------------------------------------------------------------------
def nested(depth: int) -> str:
    return '{"args": [' + "[" * depth + "]" * depth + "]}"


async def test_deeply_nested_json_is_a_4xx_never_a_500(client: httpx.AsyncClient) -> None:
    headers = {"content-type": "application/json"}
    ok = await client.post("/tasks/noop", content=nested(60), headers=headers)
    assert ok.status_code == 202, ok.text
    assert (await finished(client, ok.json()["id"]))["state"] == "SUCCESS"
    for depth in (100, 500):  # past MAX_DEPTH: refused before validation recurses
        response = await client.post("/tasks/noop", content=nested(depth), headers=headers)
        assert response.status_code == 422, (depth, response.text[:300])
        assert "nested deeper than 64 levels" in response.text
        strict_json(response.text)
    too_deep = await client.post("/tasks/noop", content=nested(100_000), headers=headers)
    assert too_deep.status_code == 400, too_deep.text[:300]  # the JSON parser's own limit
    user = await client.post("/users", content='{"username": ' + "[" * 500 + "]" * 500 + "}",
                             headers=headers)
    assert user.status_code == 422
    strict_json(user.text)


async def test_invalid_utf8_is_a_documented_400(client: httpx.AsyncClient) -> None:
    for path in ("/tasks/noop", "/tasks/noop/batch", "/users"):
        response = await client.post(path, content=b'{"args": ["\xff\xfe"]}',
                                     headers={"content-type": "application/json"})
        assert response.status_code == 400, (path, response.text)
        assert response.json()["detail"]
    schema = (await client.get("/openapi.json")).json()
    assert "400" in schema["paths"]["/tasks/noop"]["post"]["responses"]


LONE_SURROGATES = [  # (path, JSON text with a \uD800-\uDFFF escape left unpaired, loc)
    ("/tasks/noop", b'{"args": ["\\ud800"]}', ["body", "args", 0]),
    ("/tasks/noop", b'{"args": ["ok \\udc00 \\ud83d\\ude00"]}', ["body", "args", 0]),
    ("/tasks/noop", b'{"args": [{"k": ["a", "\\udfff"]}]}', ["body", "args", 0, "k", 1]),
    ("/tasks/noop", b'{"args": [{"\\ud800": 1}]}', ["body", "args", 0]),
    ("/tasks/noop", b'{"kwargs": {"payload": "\\ud800"}}', ["body", "kwargs", "payload"]),
    ("/tasks/noop", b'{"kwargs": {"\\ud800": 1}}', ["body", "kwargs"]),
    ("/tasks/noop", b'{"args": [1], "options": {"idempotency_key": "\\ud800"}}',
     ["body", "options", "idempotency_key"]),
    ("/tasks/noop", b'{"args": [1], "options": {"queue": "\\ud800"}}',
     ["body", "options", "queue"]),
    ("/tasks/noop/batch", b'{"items": [{}, {"args": ["\\ud800"]}]}',
     ["body", "items", 1, "args", 0]),
    ("/tasks/noop/batch", b'{"items": [{"kwargs": {"\\ud800": 1}}]}',
     ["body", "items", 0, "kwargs"]),
    ("/tasks/noop/batch", b'{"items": [{}], "options": {"idempotency_key": "\\ud800"}}',
     ["body", "options", "idempotency_key"]),
]


@pytest.mark.parametrize("path, content, loc", LONE_SURROGATES)
async def test_a_lone_surrogate_in_a_body_is_a_422_naming_where_and_stores_nothing(
        client: httpx.AsyncClient, redis_client: redis.Redis, path: str, content: bytes,
        loc: list[Any]) -> None:
    """Valid JSON, but not Unicode text: no record could encode it (UTF-8, msgpack,
    Redis). Both ways into a submit (the fast JSON path and FastAPI's own handler, which
    takes `+json` types) give the same answer."""
    before = set(redis_client.scan_iter(TASK_KEY.format("*"), count=1000))
    for content_type in ("application/json", "application/vnd.api+json"):
        response = await client.post(path, content=content,
                                     headers={"content-type": content_type})
        assert response.status_code == 422, (content_type, response.text)
        assert response.json()["detail"][0]["loc"] == loc, response.text
        assert response.json()["detail"][0]["type"] == "string_unicode", response.text
    assert set(redis_client.scan_iter(TASK_KEY.format("*"), count=1000)) == before


async def test_a_lone_surrogate_in_a_query_or_path_is_never_a_500(
        client: httpx.AsyncClient) -> None:
    """%ED%A0%80 is U+D800 encoded as UTF-8: the server decodes it as replacement
    characters, so it is text like any other that matches nothing."""
    for name in ("name", "schedule", "backend"):
        response = await client.get(f"/tasks?{name}=%ED%A0%80")
        assert (response.status_code, response.json()) == (200, []), (name, response.text)
    assert (await client.get("/tasks?state=%ED%A0%80")).status_code == 422
    assert (await client.get("/tasks/%ED%A0%80")).status_code == 404
    assert (await client.post("/tasks/%ED%A0%80", json={})).status_code == 404


async def test_a_task_id_that_is_not_a_uuid_is_a_documented_404(
        client: httpx.AsyncClient) -> None:
    for task_id in ("not-a-uuid", "1", "%20", "%00", "x" * 300, "..%2F..%2Fetc"):
        for method, path in (("GET", ""), ("GET", "/wait?timeout=0"), ("DELETE", "")):
            response = await client.request(method, f"/tasks/{task_id}{path}")
            assert response.status_code == 404, (method, task_id, response.text)
            # (the last is no route at all once decoded: the router's own 404)
            assert "no task" in response.json()["detail"] or task_id.startswith("..")
    schema = (await client.get("/openapi.json")).json()["paths"]["/tasks/{task_id}"]
    assert {"404"} <= set(schema["get"]["responses"]) and "404" in schema["delete"]["responses"]


# -- timeouts and options -----------------------------------------------------------------
async def test_negative_or_huge_wait_timeouts_are_422(client: httpx.AsyncClient) -> None:
    task = await submit(client, "noop", 1)
    for timeout in ("-1", "301", "1e308", "nan", "inf", "-inf", "soon"):
        response = await client.get(f"/tasks/{task['id']}/wait", params={"timeout": timeout})
        assert response.status_code == 422, (timeout, response.text)
        assert response.json()["detail"][0]["loc"] == ["query", "timeout"]


@pytest.mark.parametrize("option, value", [
    ("time_limit", 0), ("time_limit", -1), ("time_limit", 1e308), ("time_limit", "5"),
    ("countdown", -1), ("countdown", MAX_SECONDS + 1), ("countdown", 1e308),
    ("countdown", True), ("expires", -1), ("expires", 1e308), ("expires", 5e9),
    ("retry_backoff", -1), ("retry_backoff", 1e308), ("max_retries", 101),
    ("max_retries", -1), ("max_retries", True), ("eta", 1700000000),
])
async def test_out_of_range_options_are_422_naming_the_option(
        client: httpx.AsyncClient, option: str, value: Any) -> None:
    for path, body in (("/tasks/noop", {"args": [1]}), ("/tasks/noop/batch", {"items": [{}]})):
        response = await client.post(path, json={**body, "options": {option: value}})
        assert response.status_code == 422, (path, option, value, response.text)
        assert option in json.dumps(response.json()["detail"])


async def test_an_eta_long_past_runs_now_on_every_backend(client: httpx.AsyncClient) -> None:
    """A library computes its message's expiry from the eta (arq: a negative PSETEX,
    which was a 503): a past eta is no delay at all."""
    for eta in ("1688-11-14T09:29:40Z", "2000-01-01T00:00:00+05:00"):
        task = await submit(client, "add", 1, 2, options={"eta": eta})
        assert (await finished(client, task["id"]))["result"] == 3


async def test_nan_and_infinity_in_arguments_answer_valid_json(
        client: httpx.AsyncClient) -> None:
    headers = {"content-type": "application/json"}
    response = await client.post("/tasks/noop", headers=headers,
                                 content='{"args": [[NaN, Infinity, -Infinity, {"a": NaN}]]}')
    assert response.status_code == 202, response.text
    task = strict_json(response.text)
    assert task["args"] == [["NaN", "Infinity", "-Infinity", {"a": "NaN"}]]
    done = await client.get(f"/tasks/{task['id']}/wait", params={"timeout": 30})
    assert strict_json(done.text)["result"] == ["NaN", "Infinity", "-Infinity", {"a": "NaN"}]
    for content in ('{"args": [NaN, 1]}', '{"kwargs": {"x": Infinity, "y": 1}}',
                    '{"args": [1, 2], "options": {"countdown": NaN}}'):
        refused = await client.post("/tasks/add", headers=headers, content=content)
        assert refused.status_code == 422, (content, refused.text)
        strict_json(refused.text)
    overflow = await submit(client, "add", 1e308, 1e308)  # finite in, infinite out
    body = strict_json((await client.get(f"/tasks/{overflow['id']}/wait",
                                         params={"timeout": 30})).text)
    assert (body["state"], body["result"]) == ("SUCCESS", "Infinity")


# -- arguments that would hold a worker for ever --------------------------------------------
@pytest.mark.parametrize("name, args", [
    ("sleep", "[1.8e308]"), ("sleep", [MAX_SLEEP + 1]), ("sleep", [-1]), ("sleep", ["1"]),
    ("cpu", [MAX_CPU_ROUNDS + 1]), ("cpu", [10**30]), ("cpu", [-1]), ("cpu", [True]),
    ("flaky", [10**9, "k"]), ("welcome", [0]), ("welcome", [2**64]),
])
async def test_arguments_past_the_tasks_bounds_are_422(
        client: httpx.AsyncClient, name: str, args: list[Any] | str) -> None:
    """1.8e308 is JSON text (a number past float's range: Python reads it as inf)."""
    text = args if isinstance(args, str) else json.dumps(args)
    headers = {"content-type": "application/json"}
    single = await client.post(f"/tasks/{name}", content=f'{{"args": {text}}}',
                               headers=headers)
    assert single.status_code == 422, single.text
    assert single.json()["detail"][0]["loc"][:2] == ["body", "kwargs"]
    batch = await client.post(f"/tasks/{name}/batch", content=f'{{"items": [{{"args": {text}}}]}}',
                              headers=headers)
    assert batch.status_code == 422, batch.text
    assert batch.json()["detail"][0]["loc"][:3] == ["body", "items", 0]


async def test_the_bounds_are_in_the_openapi(client: httpx.AsyncClient) -> None:
    schemas = (await client.get("/openapi.json")).json()["components"]["schemas"]
    assert schemas["SleepArgsKwargs"]["properties"]["seconds"]["maximum"] == MAX_SLEEP
    assert schemas["CpuArgsKwargs"]["properties"]["n"]["maximum"] == MAX_CPU_ROUNDS
    by_name = schemas["SleepSubmit"]["properties"]["kwargs"]
    assert by_name == {"$ref": "#/components/schemas/SleepArgsKwargs"}


def record_options(redis_url: str, task_id: str) -> dict[str, Any]:
    raw = redis.Redis.from_url(redis_url, decode_responses=True).hget(TASK_KEY.format(task_id),
                                                                       "options")
    return json.loads(raw or "{}")


async def test_a_task_without_time_limit_gets_default_time_limit(
        client: httpx.AsyncClient, redis_url: str) -> None:
    """With the settings a user gets: 3600 s, carried in the task's record and
    message; a time_limit given in the submission stands."""
    assert Settings.model_fields["default_time_limit"].default == 3600
    task = await submit(client, "noop", 1)
    assert record_options(redis_url, task["id"])["time_limit"] == 3600
    given = await submit(client, "noop", 1, options={"time_limit": 5})
    assert record_options(redis_url, given["id"])["time_limit"] == 5


async def test_default_time_limit_stops_a_task_submitted_without_one(
        start_server: Callable[..., Server], worker: Proc) -> None:
    server = start_server(DEFAULT_TIME_LIMIT="1")
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
        slow = await submit(http, "sleep", 20)
        heavy = await submit(http, "cpu", MAX_CPU_ROUNDS)  # seconds of sha256 rounds
        free = await submit(http, "sleep", 1.5, options={"time_limit": 10})
        ends = [await finished(http, t["id"], timeout=40) for t in (slow, heavy, free)]
    server.stop()
    for body in ends[:2]:
        assert body["state"] == "FAILURE", body
        assert body["error"]["type"] == "TimeLimitExceeded", body
    assert (ends[2]["state"], ends[2]["result"]) == ("SUCCESS", 1.5)


# -- access ---------------------------------------------------------------------------------
async def test_api_key_guards_every_endpoint_but_health_and_metrics(
        start_server: Callable[..., Server], worker: Proc) -> None:
    key = f"k-{uuid.uuid4().hex}"
    server = start_server(API_KEY=key)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        guarded = [("GET", "/tasks"), ("POST", "/tasks/noop"), ("POST", "/tasks/noop/batch"),
                   ("GET", f"/tasks/{uuid.uuid4()}"), ("DELETE", f"/tasks/{uuid.uuid4()}"),
                   ("GET", "/schedules"), ("GET", "/users"), ("POST", "/users"),
                   ("GET", "/openapi.json"), ("GET", "/docs"), ("GET", "/dashboard")]
        for method, path in guarded:
            for headers in ({}, {"X-API-Key": "wrong"}, {"X-API-Key": key + "x"},
                            {"X-API-Key": key[:-1]}, {"Authorization": key}):
                response = await http.request(method, path, headers=headers, json={})
                assert response.status_code == 401, (method, path, headers, response.text)
                assert response.json() == {"detail": "missing or wrong X-API-Key header"}
        for path in ("/health", "/metrics"):
            assert (await http.get(path)).status_code == 200, path
        keyed = {"X-API-Key": key}
        task = await http.post("/tasks/noop", json={"args": [7]}, headers=keyed)
        assert task.status_code == 202
        assert (await http.get(f"/tasks/{task.json()['id']}", headers=keyed)).status_code == 200
        schema = (await http.get("/openapi.json", headers=keyed)).json()
    server.stop()
    assert schema["components"]["securitySchemes"]["APIKey"] == {
        "type": "apiKey", "in": "header", "name": "x-api-key"}
    assert schema["paths"]["/tasks"]["get"]["security"] == [{"APIKey": []}]
    assert "401" in schema["paths"]["/tasks/noop"]["post"]["responses"]
    assert "security" not in schema["paths"]["/health"]["get"]


async def test_without_api_key_nothing_asks_for_one(client: httpx.AsyncClient) -> None:
    assert (await client.get("/tasks")).status_code == 200
    schema = (await client.get("/openapi.json")).json()
    assert "securitySchemes" not in schema.get("components", {})


async def test_cors_is_off_by_default(client: httpx.AsyncClient) -> None:
    origin = {"Origin": "https://elsewhere.example"}
    simple = await client.get("/tasks", headers=origin)
    preflight = await client.options("/tasks/noop", headers={
        **origin, "Access-Control-Request-Method": "POST"})
    for response in (simple, preflight):
        assert not any(h.startswith("access-control-") for h in response.headers), \
            response.headers


async def test_cors_origins_allows_those_origins_only(
        start_server: Callable[..., Server]) -> None:
    server = start_server(CORS_ORIGINS="https://app.example, https://other.example",
                          API_KEY="cors-key")
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        preflight = await http.options("/tasks/noop", headers={
            "Origin": "https://app.example", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "x-api-key"})
        allowed = await http.get("/tasks", headers={"Origin": "https://other.example",
                                                    "X-API-Key": "cors-key"})
        foreign = await http.get("/tasks", headers={"Origin": "https://evil.example",
                                                    "X-API-Key": "cors-key"})
    server.stop()
    assert preflight.status_code == 200  # no key on a preflight: CORS answers first
    assert preflight.headers["access-control-allow-origin"] == "https://app.example"
    assert allowed.headers["access-control-allow-origin"] == "https://other.example"
    assert "access-control-allow-origin" not in foreign.headers


# -- passwords --------------------------------------------------------------------------------
async def test_no_response_ever_holds_a_password_or_its_hash(
        client: httpx.AsyncClient) -> None:
    """Every endpoint a user's data reaches, errors included (a 422 echoes its input)."""
    password = f"pw-{uuid.uuid4().hex}"
    name = f"u_{uuid.uuid4().hex[:10]}"
    body = {"username": name, "email": f"{name}@example.com", "password": password}
    seen: list[httpx.Response] = []

    async def call(method: str, path: str, **kw: Any) -> httpx.Response:
        response = await client.request(method, path, **kw)
        seen.append(response)
        return response

    created = await call("POST", "/users", json=body)
    assert created.status_code == 201, created.text
    user = created.json()
    await call("POST", "/users", json=body)  # 409
    await call("POST", "/users", json={**body, "username": "no spaces"})  # 422, body echoed
    await call("POST", "/users", json={"password": password})  # 422: missing fields
    await call("POST", "/users", json={**body, "password": password[:5]})  # 422: too short
    await call("POST", "/users", json={**body, "password": [password]})
    await call("POST", "/users", json={**body, "extra": password})
    await call("POST", "/users", content=json.dumps(body)[:-3],
               headers={"content-type": "application/json"})  # not JSON: 422
    await call("POST", "/users", content=json.dumps({**body, "pad": "p" * LIMIT}),
               headers={"content-type": "application/json"})  # 413
    await call("GET", f"/users/{user['id']}")
    await call("GET", "/users", params={"limit": 1000})
    await call("GET", f"/users/{user['id']}/notifications")
    await call("GET", f"/tasks/{user['welcome_task_id']}/wait", params={"timeout": 30})
    await call("GET", "/tasks", params={"name": "welcome", "limit": 1000})
    await call("GET", "/tasks", params={"limit": 1000})
    for path in ("/health", "/metrics", "/openapi.json", "/dashboard", "/schedules"):
        await call("GET", path)
    statuses = sorted({r.status_code for r in seen})
    assert {201, 409, 413, 422, 200} <= set(statuses), statuses
    for response in seen:
        for secret in (password, password[:5], "$argon2", "password_hash"):
            assert secret not in response.text, (response.request.url, response.status_code,
                                                 secret)
