"""Bulk task import (JSON Lines or CSV, streamed)."""

from __future__ import annotations

import io
from typing import IO

from flask import current_app, request
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields
from werkzeug.exceptions import RequestEntityTooLarge, UnsupportedMediaType

from jobs import imports
from jobs.import_rows import CSV, NDJSON
from marketplace.auth import require
from marketplace.http import accepts

imports_blp = Blueprint(
    "task_imports", __name__, url_prefix="/api/v1", description="Bulk task import (clients)"
)

# The real limit is the app's `max_upload_bytes`, checked in the view (the `accepts` limit is
# fixed at import time, before any settings exist).
_NO_STATIC_LIMIT = 2**62
_READ_SIZE = 256 * 1024


class ImportArgsSchema(Schema):
    partial = fields.Boolean(
        load_default=False,
        metadata={"description": "keep the valid rows when some rows have errors"},
    )


class RowErrorSchema(Schema):
    row = fields.Integer(metadata={"description": "1-based data row (JSON Lines: line number)"})
    external_id = fields.String()
    errors = fields.Dict(metadata={"description": "messages by field, as in other 422s"})


class TaskImportSchema(Schema):
    created = fields.Integer()
    unchanged = fields.Integer(
        metadata={"description": "rows whose external_id the job already holds, same content"}
    )
    error_count = fields.Integer()
    errors = fields.List(
        fields.Nested(RowErrorSchema),
        metadata={"description": f"the first {imports.MAX_REPORTED_ERRORS} row errors"},
    )


class _LimitedBody(io.RawIOBase):
    """The request body, refused with 413 as soon as it passes `limit` bytes (werkzeug would
    silently cut a chunked body off at the limit instead)."""

    def __init__(self, stream: IO[bytes], limit: int):
        self._stream = stream
        self._limit = limit
        self._read = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        count = self._stream.readinto(buffer) or 0
        self._read += count
        if self._read > self._limit:
            raise RequestEntityTooLarge(
                f"The request body exceeds the {self._limit} bytes an import may have; "
                "split the file."
            )
        return count


def _request_body() -> IO[bytes]:
    limit = current_app.config["CROWDLINE"].max_upload_bytes
    if request.content_length is not None and request.content_length > limit:
        raise RequestEntityTooLarge(
            f"The request body is {request.content_length} bytes; an import may have at most "
            f"{limit}. Split the file."
        )
    # One byte of slack, so that a body of exactly `limit` bytes is not mistaken for more.
    request.max_content_length = limit + 1
    return io.BufferedReader(_LimitedBody(request.stream, limit), _READ_SIZE)


def _media_type() -> str:
    media_type = (request.mimetype or "").lower()
    if media_type not in (NDJSON, CSV):
        raise UnsupportedMediaType(f"Send the tasks as {NDJSON} or {CSV}.")
    charset = request.mimetype_params.get("charset", "utf-8").lower()
    if charset not in ("utf-8", "utf8"):
        raise UnsupportedMediaType(f"Send the tasks as UTF-8, not {charset}.")
    return media_type


_BODY_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            NDJSON: {
                "schema": {"type": "string"},
                "example": '{"external_id": "a1", "payload": {"image_url": "https://…"}, '
                '"gold_answer": "cat", "prelabel": {"answer": "cat", "confidence": 0.8}, '
                '"priority": 0}\n',
            },
            CSV: {
                "schema": {"type": "string"},
                "example": "external_id,image_url,gold_answer,prelabel_answer,"
                "prelabel_confidence,priority\na1,https://…,cat,,,0\n",
            },
        },
    }
}


@imports_blp.route("/jobs/<int:job_id>/tasks")
class TaskImport(MethodView):
    @require("jobs:write")
    @accepts(NDJSON, CSV, max_bytes=_NO_STATIC_LIMIT)
    @imports_blp.arguments(ImportArgsSchema, location="query")
    @imports_blp.response(200, TaskImportSchema)
    @imports_blp.alt_response(422, description="Row errors; nothing was imported")
    @imports_blp.doc(**_BODY_DOC)
    def post(self, args, job_id):
        """Import tasks, streamed: one JSON object a line (`{external_id?, payload,
        gold_answer?, prelabel?: {answer, confidence}, priority?}`) or CSV (columns
        external_id, payload as JSON or else data columns, gold_answer, prelabel_answer,
        prelabel_confidence, priority). Re-importing rows with the same external_id and
        content leaves them unchanged. All or nothing unless `partial=true`."""
        media_type = _media_type()
        return imports.import_tasks(job_id, _request_body(), media_type, partial=args["partial"])
