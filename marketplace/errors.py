"""Domain errors and their one rendering: RFC 9457 `application/problem+json`."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from flask import Flask, Response, current_app, json, request
from werkzeug.exceptions import HTTPException

from marketplace.database import db

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"


class CrowdlineError(Exception):
    """A failure the caller can fix or must know about; rendered as problem+json."""

    status = 400
    slug = "bad-request"
    title = "Bad request"

    def __init__(
        self,
        detail: str | None = None,
        *,
        errors: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ):
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.errors = errors
        self.headers = headers or {}
        self.extra = extra


class BadRequest(CrowdlineError):
    status, slug, title = 400, "bad-request", "Bad request"


class Unauthorized(CrowdlineError):
    status, slug, title = 401, "unauthorized", "Authentication required"

    def __init__(self, detail: str | None = None, *, error: str = "invalid_token", **kw: Any):
        # RFC 6750 §3: a request that sent no credentials gets a challenge without an error code.
        challenge = 'Bearer realm="crowdline"' + (f', error="{error}"' if error else "")
        super().__init__(detail, headers={"WWW-Authenticate": challenge}, **kw)


class Forbidden(CrowdlineError):
    status, slug, title = 403, "forbidden", "Forbidden"


class InsufficientScope(Forbidden):
    slug, title = "insufficient-scope", "Insufficient scope"

    def __init__(self, required: list[str]):
        super().__init__(
            f"this call needs the scope {' or '.join(required)}",
            headers={
                "WWW-Authenticate": 'Bearer realm="crowdline", error="insufficient_scope", '
                f'scope="{" ".join(required)}"'
            },
            required_scopes=required,
        )


class NotEligible(Forbidden):
    slug, title = "not-eligible", "Not eligible"


class NotFound(CrowdlineError):
    status, slug, title = 404, "not-found", "Not found"


class Conflict(CrowdlineError):
    status, slug, title = 409, "conflict", "Conflict"


class InsufficientFunds(Conflict):
    slug, title = "insufficient-funds", "Insufficient funds"


class ValidationFailed(CrowdlineError):
    status, slug, title = 422, "validation-error", "Validation failed"


class RateLimited(CrowdlineError):
    status, slug, title = 429, "rate-limited", "Too many requests"

    def __init__(self, detail: str, retry_after: int):
        super().__init__(detail, headers={"Retry-After": str(max(1, retry_after))})


class ServiceUnavailable(CrowdlineError):
    status, slug, title = 503, "service-unavailable", "Service unavailable"


def problem(
    status: int,
    title: str,
    detail: str,
    *,
    slug: str | None = None,
    errors: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Response:
    """Build a problem+json response; the only way errors leave the server."""
    body: dict[str, Any] = {
        "type": f"/problems/{slug or _slug(title)}",
        "title": title,
        "status": status,
        "detail": detail,
    }
    if errors:
        body["errors"] = errors
    body.update({k: v for k, v in extra.items() if v is not None})
    with contextlib.suppress(RuntimeError):
        body["instance"] = request.path
    response = current_app.response_class(json.dumps(body), status=status, mimetype=PROBLEM_JSON)
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _slug(title: str) -> str:
    return "-".join(title.lower().replace("'", "").split())


_PLAIN_LOCATIONS = ("json", "form", "files", "query", "querystring")


def flatten_webargs_messages(messages: Any) -> dict[str, Any]:
    """webargs nests messages under their location (json, query…); callers want field names."""
    if not isinstance(messages, dict):
        return {"_schema": messages}
    flat: dict[str, Any] = {}
    for location, fields in messages.items():
        if isinstance(fields, dict):
            for name, msgs in fields.items():
                # Body and query fields go by their own names, as domain errors name them.
                key = name if location in _PLAIN_LOCATIONS else f"{location}.{name}"
                flat[key] = msgs
        else:
            flat[location] = fields
    return flat


def _rollback() -> None:
    try:
        db.session.rollback()
    except Exception:  # pragma: no cover - the connection itself may be gone
        log.exception("rollback failed while rendering an error")


def handle_crowdline_error(error: CrowdlineError) -> Response:
    _rollback()
    return problem(
        error.status,
        error.title,
        error.detail,
        slug=error.slug,
        errors=error.errors,
        headers=error.headers,
        **error.extra,
    )


_HTTP_DETAILS = {
    400: "The request could not be understood (is the body well-formed JSON?).",
    404: "No such resource: check the URL against /api/v1/openapi.json.",
    405: "The method is not allowed for this resource; the Allow header lists those that are.",
    413: "The request body is larger than this endpoint accepts.",
    415: "The request body's media type is not accepted by this endpoint.",
}


def handle_http_exception(error: HTTPException) -> Response:
    _rollback()
    status = error.code or 500
    data = getattr(error, "data", None) or {}
    errors = None
    detail = error.description
    if not detail or detail == type(error).description:  # werkzeug's generic browser text
        detail = _HTTP_DETAILS.get(status, error.name)
    cause = getattr(error, "exc", None)  # webargs attaches the parse error here
    if status == 422 and "messages" in data:
        errors = flatten_webargs_messages(data["messages"])
        detail = "The request has invalid fields: " + ", ".join(sorted(errors)) + "."
    elif status == 400 and isinstance(cause, ValueError):
        detail = f"The request body is not valid JSON: {cause}."
    headers = dict(data.get("headers") or {})
    valid_methods = getattr(error, "valid_methods", None)
    if status == 405 and valid_methods:
        headers["Allow"] = ", ".join(valid_methods)
    title = error.name if status != 422 else "Validation failed"
    slug = "validation-error" if status == 422 else None
    return problem(status, title, detail, slug=slug, errors=errors, headers=headers)


def handle_unexpected_error(error: Exception) -> Response:
    _rollback()
    from marketplace.database import is_retryable

    if is_retryable(error):
        log.warning("transaction aborted by the database on %s %s: %s", request.method,
                    request.path, getattr(error, "orig", error))  # fmt: skip
        return problem(
            503,
            "Service unavailable",
            "This request collided with another one changing the same data, and was undone; "
            "send it again.",
            slug="service-unavailable",
            headers={"Retry-After": "1"},
        )
    log.exception("unhandled error on %s %s", request.method, request.path)
    return problem(
        500,
        "Internal server error",
        "Something went wrong on our side; it has been logged.",
    )


def register_error_handlers(app: Flask) -> None:
    app.register_error_handler(CrowdlineError, handle_crowdline_error)
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(Exception, handle_unexpected_error)
