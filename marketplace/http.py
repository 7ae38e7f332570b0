"""Request conventions every route shares: media types, body limits, request ids, and
values the database cannot store refused up front as 4xx instead of failing as 500s."""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Callable
from typing import Any

from flask import Flask, current_app, g, request
from werkzeug.exceptions import BadRequest, NotFound, RequestEntityTooLarge, UnsupportedMediaType

from marketplace.errors import ValidationFailed

JSON_TYPES = ("application/json",)
_BODY_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
# Every integer column is a 64-bit BIGINT (SQLite's INTEGER is 64-bit too).
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# Values cached on `g` for one request; an app context can outlive a request (CLI, tests).
_PER_REQUEST = ("principal", "sandbox_now")
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def accepts(*media_types: str, max_bytes: int | None = None) -> Callable:
    """Declare the request media types (and a larger body limit) a view takes instead of JSON."""

    def decorator(view: Callable) -> Callable:
        view._accepts = media_types
        if max_bytes is not None:
            view._max_bytes = max_bytes
        return view

    return decorator


def _view_for_request() -> Callable | None:
    view = current_app.view_functions.get(request.endpoint or "")
    if view is None:
        return None
    view_class = getattr(view, "view_class", None)
    if view_class is not None:
        return getattr(view_class, request.method.lower(), None)
    return view


def _media_type() -> str:
    return (request.mimetype or "").lower()


def _is_json(mimetype: str) -> bool:
    return mimetype in JSON_TYPES or mimetype.endswith("+json")


def start_request() -> None:
    """Forget per-request state, give the request an id, and vet URL and body."""
    for name in _PER_REQUEST:
        g.pop(name, None)
    g.request_id = _client_request_id() or uuid.uuid4().hex
    check_url_values()
    check_request_body()


def _client_request_id() -> str | None:
    # Echoed back and stored with audit events (64 characters), so only a sane id is kept.
    value = request.headers.get("X-Request-Id", "")
    return value if _REQUEST_ID.fullmatch(value) else None


def check_url_values() -> None:
    """Path values the database cannot hold name no resource (404); bad query values are 422."""
    for value in (request.view_args or {}).values():
        if isinstance(value, int) and not INT64_MIN <= value <= INT64_MAX:
            raise NotFound("No such resource (the id is out of range).")
        if isinstance(value, str) and _text_problem(value):
            raise NotFound("No such resource.")
    errors: dict[str, list[str]] = {}
    for name, value in request.args.items(multi=True):
        if problem := _text_problem(name) or _text_problem(value):
            errors.setdefault(_printable(name), []).append(problem)
    if errors:
        raise ValidationFailed(
            "The query string has invalid values: " + ", ".join(sorted(errors)) + ".",
            errors=errors,
        )


def check_request_body() -> None:
    """Refuse bodies of the wrong media type (415) or size (413), and JSON that is malformed
    (400) or holds values no column can store (422), before any view runs."""
    if request.method not in _BODY_METHODS or request.endpoint is None:
        return
    view = _view_for_request()
    allowed = getattr(view, "_accepts", None) or JSON_TYPES
    settings = current_app.config["CROWDLINE"]
    limit = getattr(view, "_max_bytes", None) or settings.max_json_bytes
    request.max_content_length = limit
    length = request.content_length
    if length is not None and length > limit:
        raise RequestEntityTooLarge(
            f"The request body is {length} bytes; this endpoint accepts at most {limit}."
        )
    has_body = bool(length) or request.headers.get("Transfer-Encoding", "").lower() == "chunked"
    if not has_body:
        return
    mimetype = _media_type()
    if not (mimetype in allowed or (_is_json(mimetype) and allowed == JSON_TYPES)):
        raise UnsupportedMediaType(
            f"Send the body as {' or '.join(allowed)}"
            + (f", not {mimetype}." if mimetype else "; no Content-Type was given.")
        )
    if _is_json(mimetype):
        check_json_body(limit)


def check_json_body(limit: int) -> None:
    data = request.get_data(cache=True)
    if request.content_length is None and len(data) >= limit:
        # werkzeug cuts a chunked body off at the limit without complaint; refuse it instead.
        raise RequestEntityTooLarge(f"The request body exceeds the {limit} bytes it may have.")
    if not data:
        return
    try:
        document = json.loads(data.decode("utf-8"), parse_constant=_refuse_constant)
    except RecursionError:
        raise BadRequest("The request body is not valid JSON: it is nested too deeply.") from None
    except ValueError as error:
        raise BadRequest(f"The request body is not valid JSON: {error}.") from None
    if errors := unstorable_values(document):
        raise ValidationFailed(
            "The request has invalid fields: " + ", ".join(sorted(map(str, errors))) + ".",
            errors=errors,
        )


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _text_problem(text: str) -> str | None:
    # PostgreSQL text cannot hold NUL, and lone surrogates cannot be encoded as UTF-8.
    if "\x00" in text:
        return "Must not contain NUL (\\u0000) characters."
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "Must be valid Unicode (no unpaired surrogates)."
    return None


def _number_problem(number: int | float) -> str | None:
    if isinstance(number, float) and not math.isfinite(number):
        return "Must be a finite number."
    if not INT64_MIN <= number <= INT64_MAX:
        return f"Must be between {INT64_MIN} and {INT64_MAX}."
    return None


def _printable(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\u0000")


def unstorable_values(document: Any) -> dict[Any, Any]:
    """Errors, nested like marshmallow's, for strings and numbers no column can store."""
    errors: dict[Any, Any] = {}
    stack: list[tuple[tuple[Any, ...], Any]] = [((), document)]
    while stack:
        path, value = stack.pop()
        problem = None
        if isinstance(value, str):
            problem = _text_problem(value)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            problem = _number_problem(value)
        elif isinstance(value, dict):
            for key, item in value.items():
                if key_problem := _text_problem(key):
                    _add_error(errors, (*path, _printable(key)), key_problem)
                else:
                    stack.append(((*path, key), item))
        elif isinstance(value, list):
            stack.extend(((*path, index), item) for index, item in enumerate(value))
        if problem:
            _add_error(errors, path, problem)
    return errors


def _add_error(errors: dict[Any, Any], path: tuple[Any, ...], message: str) -> None:
    if not path:
        errors.setdefault("_schema", []).append(message)
        return
    node = errors
    for part in path[:-1]:
        node = node.setdefault(part, {})
    node.setdefault(path[-1], []).append(message)


def add_response_headers(response):
    if "request_id" in g:
        response.headers["X-Request-Id"] = g.request_id
    response.headers.setdefault("Cache-Control", "no-store")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    return response


def register_request_hooks(app: Flask) -> None:
    app.before_request(start_request)
    app.after_request(add_response_headers)
