"""Request conventions every route shares: media types, body limits, request ids."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from flask import Flask, current_app, g, request
from werkzeug.exceptions import RequestEntityTooLarge, UnsupportedMediaType

JSON_TYPES = ("application/json",)
_BODY_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


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


def check_request_body() -> None:
    """Refuse bodies of the wrong media type (415) or size (413) before any view runs."""
    g.request_id = request.headers.get("X-Request-Id") or uuid.uuid4().hex
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
    is_json = mimetype in JSON_TYPES or mimetype.endswith("+json")
    if not (mimetype in allowed or (is_json and allowed == JSON_TYPES)):
        raise UnsupportedMediaType(
            f"Send the body as {' or '.join(allowed)}"
            + (f", not {mimetype}." if mimetype else "; no Content-Type was given.")
        )


def add_response_headers(response):
    if "request_id" in g:
        response.headers["X-Request-Id"] = g.request_id
    response.headers.setdefault("Cache-Control", "no-store")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    return response


def register_request_hooks(app: Flask) -> None:
    app.before_request(check_request_body)
    app.after_request(add_response_headers)
