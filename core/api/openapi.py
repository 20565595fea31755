"""The OpenAPI document says what the app answers: the 4xx and 503 that any route
may give, the API key when one is set, and only the options this backend honours.
Checked by schemathesis (tests/test_fuzz.py)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.routing import Route

from core.api.guard import KEY_HEADER, OPEN_PATHS
from core.settings import Settings

PROBLEM = {"$ref": "#/components/schemas/Problem"}
WHY = {
    400: "the body is not UTF-8 text",
    401: "missing or wrong X-API-Key header",
    404: "not found",
    409: "conflict",
    413: "request body over MAX_BODY_BYTES",
    503: "Redis or the database is unavailable",
}
SCHEME = "APIKey"


def answers(*codes: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` of a route: these statuses, each a `{"detail": "..."}` body."""
    from core.api.schemas import Problem

    return {code: {"model": Problem, "description": WHY[code]} for code in codes}


def _answer(code: int) -> dict[str, Any]:
    return {"description": WHY[code], "content": {"application/json": {"schema": PROBLEM}}}


def document(app: FastAPI, settings: Settings, options: frozenset[str]) -> None:
    """Replace `app.openapi` with the generated document, completed once."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version,
                             description=app.description, routes=app.routes)
        components = schema.setdefault("components", {})
        schemas = components.setdefault("schemas", {})
        _complete(schemas, options)
        if settings.api_key:
            components["securitySchemes"] = {SCHEME: {
                "type": "apiKey", "in": "header", "name": KEY_HEADER.decode()}}
        for path, operations in schema["paths"].items():
            for operation in operations.values():
                extra = [503]
                if "requestBody" in operation:
                    extra += [400, 413]
                if settings.api_key and path not in OPEN_PATHS:
                    extra.append(401)
                    operation["security"] = [{SCHEME: []}]
                for code in extra:
                    operation["responses"].setdefault(str(code), _answer(code))
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _complete(schemas: dict[str, Any], options: frozenset[str]) -> None:
    schemas.setdefault("Problem", {"type": "object", "required": ["detail"],
                                   "properties": {"detail": {"type": "string"}}})
    # core's own 422s (an option the backend cannot honour) have a sentence as detail.
    if "HTTPValidationError" in schemas:
        items = schemas["HTTPValidationError"]["properties"]["detail"]
        schemas["HTTPValidationError"]["properties"]["detail"] = {
            "anyOf": [{"type": "string"}, {k: v for k, v in items.items() if k != "title"}]}
        schemas["HTTPValidationError"]["required"] = ["detail"]
    task_options = schemas.get("TaskOptions")
    if task_options:  # what this backend cannot honour is not offered (a 422 if sent)
        task_options["properties"] = {name: prop for name, prop in
                                      task_options["properties"].items() if name in options}


async def method_not_allowed(request: Request, exc: Exception) -> JSONResponse:
    """405 whose Allow names the documented methods of the path (Starlette names
    those of the first route whose path matched, `/tasks/{name}` for `/tasks/{id}`)."""
    allowed = sorted({method for route in request.app.router.routes
                      if isinstance(route, Route) and route.include_in_schema
                      and route.methods and route.path_regex.match(request.url.path)
                      for method in route.methods})
    detail = exc.detail if isinstance(exc, HTTPException) else "Method Not Allowed"
    return JSONResponse({"detail": detail}, status_code=405,
                        headers={"Allow": ", ".join(allowed)})
