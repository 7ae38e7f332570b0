"""`Idempotency-Key` support: the first response for a key is stored and replayed.

The same key with the same request replays the stored response (marked with
`Idempotent-Replayed: true`); the same key with a different request is a 422; a retry that
arrives while the first attempt is still running gets a 409. Keys are scoped to the caller
and forgotten after `idempotency_seconds`. 5xx outcomes are not stored, so they may be retried.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from flask import current_app, make_response, request
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from marketplace import clock
from marketplace.auth import principal
from marketplace.database import db
from marketplace.errors import Conflict, CrowdlineError, ValidationFailed
from marketplace.models import IdempotencyRecord

HEADER = "Idempotency-Key"
_REPLAYED_HEADERS = ("Content-Type", "Location", "Link")
# Printable ASCII, so any key fits the column and can be echoed back safely (a UUID is ideal).
_KEY = re.compile(r"[\x20-\x7e]{1,255}")


def _request_fingerprint() -> str:
    body = request.get_data(cache=True)
    try:
        canonical = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":")).encode()
    except (ValueError, UnicodeDecodeError):
        canonical = body
    h = hashlib.sha256()
    for part in (request.method.encode(), request.path.encode(), canonical):
        h.update(part)
        h.update(b"\0")
    return h.hexdigest()


def _cipher():
    """Stored responses can hold secrets shown once (client secrets, invitation codes), so
    they are encrypted at rest with a key derived from SECRET_KEY."""
    from cryptography.fernet import Fernet

    key = hashlib.sha256(b"crowdline-idempotency:" + current_app.secret_key.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(key))


def _seal(body: str) -> str:
    return _cipher().encrypt(body.encode()).decode()


def _open(sealed: str | None) -> str:
    from cryptography.fernet import InvalidToken

    if not sealed:
        return ""
    try:
        return _cipher().decrypt(sealed.encode()).decode()
    except InvalidToken:
        # SECRET_KEY changed since it was stored: the response cannot be replayed.
        raise Conflict(
            "This Idempotency-Key's stored response can no longer be read; use a new key."
        ) from None


def _replay(record: IdempotencyRecord):
    response = current_app.response_class(
        _open(record.response_body), status=record.status_code or 200
    )
    for name, value in (record.response_headers or {}).items():
        response.headers[name] = value
    response.headers["Idempotent-Replayed"] = "true"
    return response


def _claim(owner: str, key: str, fingerprint: str):
    """Insert the in-progress record, or return the existing one for this key."""
    ttl = timedelta(seconds=current_app.config["CROWDLINE"].idempotency_seconds)
    now = clock.now()
    existing = db.session.scalar(
        select(IdempotencyRecord).where(
            IdempotencyRecord.owner == owner, IdempotencyRecord.key == key
        )
    )
    if existing is not None and existing.created_at + ttl < now:
        db.session.delete(existing)
        db.session.commit()
        existing = None
    if existing is not None:
        return existing
    record = IdempotencyRecord(
        owner=owner,
        key=key,
        method=request.method,
        path=request.path,
        request_hash=fingerprint,
        state="in_progress",
        created_at=now,
    )
    db.session.add(record)
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()  # a concurrent request claimed it first
        return db.session.scalar(
            select(IdempotencyRecord).where(
                IdempotencyRecord.owner == owner, IdempotencyRecord.key == key
            )
        )
    return record.id


def idempotent(view: Callable) -> Callable:
    """Make a create-style view safe to retry with an Idempotency-Key header."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any):
        key = request.headers.get(HEADER)
        if key is None:
            return view(*args, **kwargs)
        key = key.strip()
        if not _KEY.fullmatch(key):
            raise ValidationFailed(
                "Idempotency-Key must be 1 to 255 printable ASCII characters.",
                errors={HEADER: ["Must be 1 to 255 printable ASCII characters."]},
            )
        owner = principal().idempotency_owner
        fingerprint = _request_fingerprint()
        claimed = _claim(owner, key, fingerprint)
        if isinstance(claimed, IdempotencyRecord):
            if claimed.request_hash != fingerprint:
                raise ValidationFailed(
                    "This Idempotency-Key was already used with a different request.",
                    errors={HEADER: ["Already used with a different request body or path."]},
                )
            if claimed.state != "done":
                raise Conflict(
                    "A request with this Idempotency-Key is still being processed; retry shortly."
                )
            return _replay(claimed)
        record_id = claimed
        try:
            response = make_response(view(*args, **kwargs))
        except CrowdlineError as error:
            from marketplace.errors import handle_crowdline_error

            response = handle_crowdline_error(error)
        except Exception:
            _forget(record_id)
            raise
        if response.status_code >= 500:
            _forget(record_id)
            return response
        record = db.session.get(IdempotencyRecord, record_id)
        record.state = "done"
        record.status_code = response.status_code
        record.response_body = _seal(response.get_data(as_text=True))
        record.response_headers = {
            h: response.headers[h] for h in _REPLAYED_HEADERS if h in response.headers
        }
        db.session.commit()
        return response

    return wrapper


def _forget(record_id: int) -> None:
    db.session.rollback()
    db.session.execute(delete(IdempotencyRecord).where(IdempotencyRecord.id == record_id))
    db.session.commit()


def purge_expired_records() -> int:
    """Delete idempotency records older than their retention; returns how many."""
    ttl = timedelta(seconds=current_app.config["CROWDLINE"].idempotency_seconds)
    result = db.session.execute(
        delete(IdempotencyRecord).where(IdempotencyRecord.created_at < clock.now() - ttl)
    )
    db.session.commit()
    return result.rowcount or 0
