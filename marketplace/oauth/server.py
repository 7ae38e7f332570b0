"""The Authlib authorization server (filled in by the OAuth work)."""

from __future__ import annotations

from flask import Flask


def init_authorization_server(app: Flask) -> None:
    return None
