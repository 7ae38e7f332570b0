"""Where attestation documents live: a pluggable store (local disk by default).

Uploads are checked for emptiness, size and type — by their first bytes, not the name
or the Content-Type the browser claims.
"""

from __future__ import annotations

import hashlib
import secrets
from pathlib import Path
from typing import IO, Protocol

from flask import current_app

from marketplace.errors import CrowdlineError, ValidationFailed

MAX_DOCUMENT_BYTES = 10 * 1024 * 1024

# magic bytes → media type
_SIGNATURES: list[tuple[bytes, str]] = [
    (b"%PDF-", "application/pdf"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
]


class PayloadTooLarge(CrowdlineError):
    status, slug, title = 413, "payload-too-large", "Payload too large"


class EvidenceStore(Protocol):
    def put(self, data: bytes, content_type: str) -> str: ...

    def get(self, key: str) -> bytes: ...

    def delete(self, key: str) -> None: ...


class LocalDiskStore:
    """Files under a folder, named by random keys (never by what the uploader called them)."""

    def __init__(self, root: Path):
        self.root = root

    def _path(self, key: str) -> Path:
        if not key.isalnum():
            raise ValueError("bad evidence key")
        return self.root / key[:2] / key

    def put(self, data: bytes, content_type: str) -> str:
        key = secrets.token_hex(20)
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return key

    def get(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)


def store() -> EvidenceStore:
    app = current_app
    if "crowdline.evidence" not in app.extensions:
        root = Path(app.config.get("EVIDENCE_ROOT") or Path(app.instance_path) / "evidence")
        app.extensions["crowdline.evidence"] = LocalDiskStore(root)
    return app.extensions["crowdline.evidence"]


def read_checked_document(stream: IO[bytes]) -> tuple[bytes, str, str]:
    """Read an upload within the size limit; return (bytes, media type, sha256)."""
    data = stream.read(MAX_DOCUMENT_BYTES + 1)
    if not data:
        raise ValidationFailed("The document is empty.", errors={"document": ["Empty file."]})
    if len(data) > MAX_DOCUMENT_BYTES:
        raise PayloadTooLarge(
            f"Documents may be at most {MAX_DOCUMENT_BYTES // (1024 * 1024)} MiB.",
            errors={"document": ["Too large."]},
        )
    for signature, media_type in _SIGNATURES:
        if data.startswith(signature):
            return data, media_type, hashlib.sha256(data).hexdigest()
    raise ValidationFailed(
        "Documents must be PDF, PNG or JPEG.",
        errors={"document": ["Unsupported file type (PDF, PNG or JPEG)."]},
    )
