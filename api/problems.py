"""Map domain errors and FastAPI's own errors to RFC 9457 problem+json responses.

Problem `type`s are `tag:` URIs (RFC 4151): stable identifiers that RFC 9457 allows to
be non-dereferenceable. Errors that mean no more than their HTTP status use
`about:blank`, whose title is the status phrase.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from core.errors import (
    AuthError,
    ConflictError,
    DomainError,
    ForbiddenError,
    NotFoundError,
    StoreUnavailableError,
    ValidationError,
)

log = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_TYPE_PREFIX = "tag:pmkeeper,2026:problem:"
DEFAULT_CHALLENGE = 'Bearer realm="pmkeeper"'
RETRY_AFTER_S = 5

# Checked along the error's class hierarchy, so subclasses (InvalidTransitionError(ConflictError),
# ...) map without being listed. Routers of later features may register their own errors here.
STATUS_BY_ERROR: dict[type[DomainError], int] = {
    NotFoundError: 404,
    ConflictError: 409,
    ValidationError: 422,
    StoreUnavailableError: 503,
    AuthError: 401,
    ForbiddenError: 403,
}
_TITLES = {
    "not_found": "Resource not found",
    "conflict": "Conflict with the current state",
    "invalid": "Invalid request",
    "store_unavailable": "Store unavailable",
    "unauthorized": "Authentication required",
    "forbidden": "Not allowed for this role",
}
_RESERVED_MEMBERS = frozenset({"type", "title", "status", "detail", "instance", "code", "errors"})


class ProblemResponse(JSONResponse):
    """A JSON response served as application/problem+json."""

    media_type = PROBLEM_MEDIA_TYPE


def problem(
    status: int,
    detail: str,
    *,
    code: str | None = None,
    title: str | None = None,
    instance: str | None = None,
    errors: Sequence[Mapping[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
    extensions: Mapping[str, Any] | None = None,
) -> ProblemResponse:
    """Build a problem+json response; `code` names a pmkeeper problem type."""
    body: dict[str, Any] = {
        "type": f"{PROBLEM_TYPE_PREFIX}{code}" if code else "about:blank",
        "title": title or (_TITLES.get(code or "") or HTTPStatus(status).phrase),
        "status": status,
        "detail": detail,
    }
    if instance is not None:
        body["instance"] = instance
    if code is not None:
        body["code"] = code
    if errors is not None:
        body["errors"] = [dict(error) for error in errors]
    for key, value in (extensions or {}).items():
        if key not in _RESERVED_MEMBERS:
            body[key] = value
    return ProblemResponse(jsonable_encoder(body), status_code=status, headers=dict(headers or {}))


def status_for(error: DomainError) -> int:
    """Return the HTTP status of a domain error, looked up along its class hierarchy."""
    for cls in type(error).__mro__:
        status = STATUS_BY_ERROR.get(cls)
        if status is not None:
            return status
    return 400


def validation_errors(
    errors: Sequence[Any], prefix: Sequence[str | int] = ()
) -> list[dict[str, Any]]:
    """Turn pydantic-style error dicts into problem `errors` items, dropping the input echo."""
    items = []
    for error in errors:
        location = [*prefix, *error.get("loc", ())]
        items.append(
            {
                "location": location,
                "field": ".".join(str(part) for part in location),
                "message": str(error.get("msg", "invalid value")),
                "type": str(error.get("type", "value_error")),
            }
        )
    return items


def _summary(items: Sequence[Mapping[str, Any]]) -> str:
    shown = "; ".join(f"{item['field']}: {item['message']}" for item in items[:3])
    more = f" (and {len(items) - 3} more)" if len(items) > 3 else ""
    return f"{shown}{more}" if shown else "the request is invalid"


async def _domain_error(request: Request, exc: DomainError) -> ProblemResponse:
    status = status_for(exc)
    headers: dict[str, str] = {}
    if status == 401:
        headers["WWW-Authenticate"] = str(getattr(exc, "challenge", DEFAULT_CHALLENGE))
    if status == 503:
        headers["Retry-After"] = str(RETRY_AFTER_S)
        log.warning("%s %s: %s", request.method, request.url.path, exc.detail)
    extra = dict(exc.extra)
    raw_errors = extra.pop("errors", None)
    errors = validation_errors(raw_errors, ("body",)) if isinstance(raw_errors, list) else None
    return problem(
        status,
        exc.detail,
        code=exc.code,
        instance=request.url.path,
        errors=errors,
        headers=headers,
        extensions=extra,
    )


async def _request_validation_error(
    request: Request, exc: RequestValidationError
) -> ProblemResponse:
    items = validation_errors(exc.errors())
    return problem(
        422,
        _summary(items),
        code=ValidationError.code,
        instance=request.url.path,
        errors=items,
    )


async def _http_error(request: Request, exc: StarletteHTTPException) -> ProblemResponse:
    detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
    return problem(exc.status_code, detail, instance=request.url.path, headers=exc.headers or None)


async def _unhandled_error(request: Request, exc: Exception) -> ProblemResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem(500, "an internal error occurred; it has been logged", instance=request.url.path)


def install_problem_handlers(app: FastAPI) -> None:
    """Make every error the app answers an RFC 9457 problem+json document."""
    app.exception_handler(DomainError)(_domain_error)
    app.exception_handler(RequestValidationError)(_request_validation_error)
    app.exception_handler(StarletteHTTPException)(_http_error)
    app.exception_handler(Exception)(_unhandled_error)


class ProblemErrorRead(BaseModel):
    """One problem found in a request: where it is and what is wrong."""

    location: list[str | int]
    field: str
    message: str
    type: str


class ProblemRead(BaseModel):
    """An RFC 9457 problem document, as every error of the API is answered."""

    type: str = Field(examples=["tag:pmkeeper,2026:problem:not_found"])
    title: str
    status: int
    detail: str
    instance: str | None = None
    code: str | None = Field(default=None, description="Stable machine-readable error code")
    errors: list[ProblemErrorRead] | None = Field(
        default=None, description="Each invalid part of the request (validation errors only)"
    )


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """Return OpenAPI `responses` entries documenting the problem+json errors of a route."""
    return {
        status: {"model": ProblemRead, "description": HTTPStatus(status).phrase}
        for status in statuses
    }


def document_problem_media_type(openapi: dict[str, Any]) -> dict[str, Any]:
    """Serve documented ProblemRead responses as application/problem+json in the OpenAPI schema.

    FastAPI files every documented response under the route's own media type.
    """
    for path_item in openapi.get("paths", {}).values():
        for operation in path_item.values():
            if not isinstance(operation, dict):
                continue
            for response in operation.get("responses", {}).values():
                content = response.get("content", {})
                schema = content.get("application/json", {}).get("schema", {})
                if str(schema.get("$ref", "")).endswith("/ProblemRead"):
                    content[PROBLEM_MEDIA_TYPE] = content.pop("application/json")
    return openapi
