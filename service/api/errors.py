"""Domain errors to HTTP answers, each in one place. Every 422 has FastAPI's own
validation shape: ``{"detail": [{"type", "loc", "msg"}]}``, ``loc`` naming the field.

A check across fields (a model validator) fails at the model's own ``loc``; its message
begins with the field it refuses (``"early_stopping: needs a validation split"``), and
that field is moved into ``loc``, so that a form shows the message next to it."""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI, Request, status
from fastapi.exception_handlers import (
    http_exception_handler,
    request_validation_exception_handler,
)
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from common.errors import FieldError
from service.errors import NotFoundError, QuotaExceededError, StateConflictError, UserQuotaError
from service.event_hub import TooManyStreamsError

#: "Value error, model.layers[1].dropout: ..." -> the field path it names.
NAMED_FIELD = re.compile(r"Value error, ([a-z_0-9]+(?:\.[a-z_0-9]+|\[\d+\])*): ")


def locate_named_field(error: dict[str, Any]) -> dict[str, Any]:
    """``error`` with the field its message names appended to its ``loc``."""
    match = NAMED_FIELD.match(str(error.get("msg", "")))
    if error.get("type") != "value_error" or match is None:
        return error
    path = [int(part) if part.isdigit() else part
            for part in re.findall(r"[a-z_0-9]+", match.group(1))]
    return {**error, "loc": [*error["loc"], *path]}


def field_error_body(error: FieldError) -> dict[str, object]:
    """The 422 body naming ``error.field`` under its location (``body``, ``query``)."""
    return {"detail": [{"type": "value_error", "loc": [error.location, *error.field.split(".")],
                        "msg": str(error)}]}


def install(app: FastAPI) -> None:
    """Register the handlers on ``app``."""

    @app.exception_handler(NotFoundError)
    async def not_found(request: Request, exc: NotFoundError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status.HTTP_404_NOT_FOUND)

    @app.exception_handler(StateConflictError)
    async def conflict(request: Request, exc: StateConflictError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status.HTTP_409_CONFLICT)

    @app.exception_handler(QuotaExceededError)
    async def over_quota(request: Request, exc: QuotaExceededError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status.HTTP_413_CONTENT_TOO_LARGE)

    @app.exception_handler(UserQuotaError)
    async def over_user_quota(request: Request, exc: UserQuotaError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status.HTTP_429_TOO_MANY_REQUESTS)

    @app.exception_handler(TooManyStreamsError)
    async def too_many_streams(request: Request, exc: TooManyStreamsError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status.HTTP_503_SERVICE_UNAVAILABLE,
                            headers={"Retry-After": "5"})

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        allowed = documented_methods(request.app, request.scope["path"])
        if exc.status_code == status.HTTP_405_METHOD_NOT_ALLOWED and allowed:
            # Starlette's Allow names only the first route on the path; a path such as
            # /datasets/{id} has a route per method. The document lists them all.
            exc.headers = {**(exc.headers or {}), "Allow": ", ".join(allowed)}
        return await http_exception_handler(request, exc)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        located = RequestValidationError([locate_named_field(e) for e in exc.errors()],
                                         body=exc.body)
        return await request_validation_exception_handler(request, located)

    @app.exception_handler(FieldError)
    async def refused_field(request: Request, exc: FieldError) -> JSONResponse:
        return JSONResponse(field_error_body(exc), status.HTTP_422_UNPROCESSABLE_CONTENT)


def documented_methods(app: FastAPI, path: str) -> list[str] | None:
    """The methods the OpenAPI document lists for the path template ``path`` falls under,
    the most specific one (``/jobs/defaults`` before ``/jobs/{job_id}``); None if none."""
    found: tuple[int, list[str]] | None = None
    for template, operations in app.openapi()["paths"].items():
        pattern = "[^/]+".join(map(re.escape, re.split(r"\{[^}]+\}", template)))
        params = template.count("{")
        if re.fullmatch(pattern, path) and (found is None or params < found[0]):
            found = (params, sorted(method.upper() for method in operations))
    return found[1] if found else None
