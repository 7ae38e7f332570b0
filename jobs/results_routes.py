"""Job progress, streamed results and client webhooks."""

from __future__ import annotations

from flask_smorest import Blueprint

results_blp = Blueprint(
    "job_results", __name__, url_prefix="/api/v1", description="Progress, results and webhooks"
)
