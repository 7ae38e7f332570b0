"""OAuth 2 endpoints and client registration (filled in by the OAuth work)."""

from __future__ import annotations

from flask import Blueprint as FlaskBlueprint
from flask_smorest import Blueprint

oauth_bp = FlaskBlueprint("oauth", __name__, url_prefix="/oauth")
api_blp = Blueprint(
    "oauth_clients", __name__, url_prefix="/api/v1", description="OAuth 2 applications"
)
