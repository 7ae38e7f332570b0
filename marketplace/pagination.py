"""Keyset (cursor) pagination: rows come in id order, so inserts never shift a page.

A cursor names the last id a page returned; the next page starts strictly after it.
Rows inserted while a client pages have larger ids and show up on later pages, so every
row is seen exactly once — unlike offset paging, which skips or repeats rows.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any
from urllib.parse import urlencode

from flask import request
from marshmallow import Schema, fields, validate
from sqlalchemy import Select

from marketplace.database import db
from marketplace.errors import ValidationFailed

DEFAULT_LIMIT = 50
MAX_LIMIT = 200
MAX_CURSOR_LENGTH = 200  # ours are ~30 characters; a long one is never ours


class PageArgsSchema(Schema):
    cursor = fields.String(
        validate=validate.Length(max=MAX_CURSOR_LENGTH),
        metadata={"description": "next_cursor from the previous page"},
    )
    limit = fields.Integer(
        load_default=DEFAULT_LIMIT,
        validate=validate.Range(min=1, max=MAX_LIMIT),
        metadata={"description": f"rows per page, 1–{MAX_LIMIT}"},
    )


def page_schema(item_schema: type[Schema] | Schema, name: str) -> type[Schema]:
    """The envelope `{items: [...], next_cursor}` around an item schema, for OpenAPI."""
    return Schema.from_dict(
        {
            "items": fields.List(fields.Nested(item_schema)),
            "next_cursor": fields.String(
                allow_none=True,
                metadata={"description": "pass as ?cursor= to get the next page; null at the end"},
            ),
        },
        name=name,
    )


def encode_cursor(last_id: int) -> str:
    raw = json.dumps({"after": last_id}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        value = json.loads(base64.urlsafe_b64decode(padded.encode()))
        after = value["after"]
        if not isinstance(after, int) or isinstance(after, bool) or not 0 <= after < 2**63:
            raise ValueError  # ids are positive BIGINTs; anything else would fail in the query
        return after
    except (ValueError, KeyError, TypeError, binascii.Error, RecursionError):
        raise ValidationFailed(
            "The cursor is not one this API issued.", errors={"cursor": ["Invalid cursor."]}
        ) from None


def paginate(query: Select, id_column: Any, args: dict[str, Any]) -> dict[str, Any]:
    """Run `query` one page at a time in ascending `id_column` order."""
    limit = args.get("limit") or DEFAULT_LIMIT
    if cursor := args.get("cursor"):
        query = query.where(id_column > decode_cursor(cursor))
    rows = list(db.session.scalars(query.order_by(id_column).limit(limit + 1)))
    has_more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = encode_cursor(_id_of(rows[-1], id_column)) if has_more and rows else None
    return {"items": rows, "next_cursor": next_cursor}


def _id_of(row: Any, id_column: Any) -> int:
    return getattr(row, id_column.key)


def next_link(next_cursor: str | None) -> dict[str, str]:
    """An RFC 8288 Link header for the next page, to add to list responses."""
    if not next_cursor:
        return {}
    args = request.args.to_dict()
    args["cursor"] = next_cursor
    query = urlencode(args)
    return {"Link": f'<{request.base_url}?{query}>; rel="next"'}
