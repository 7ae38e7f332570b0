"""Bulk task import (JSON Lines or CSV, streamed)."""

from __future__ import annotations

from flask_smorest import Blueprint

imports_blp = Blueprint(
    "task_imports", __name__, url_prefix="/api/v1", description="Bulk task import (clients)"
)
