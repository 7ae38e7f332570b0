"""Health checks, the sandbox clock and user administration."""

from __future__ import annotations

from flask import Blueprint as FlaskBlueprint
from flask import jsonify
from flask.views import MethodView
from flask_smorest import Blueprint

from marketplace.auth import require
from marketplace.errors import problem
from marketplace.ops import services
from marketplace.ops.schemas import (
    ClockChangeSchema,
    ClockSchema,
    UserAdminSchema,
    UserListArgsSchema,
    UserStatusChangeSchema,
)
from marketplace.pagination import next_link, page_schema

health_bp = FlaskBlueprint("health", __name__)


@health_bp.get("/healthz")
def healthz():
    """The process is up (no dependencies checked)."""
    return jsonify(status="ok")


@health_bp.get("/readyz")
def readyz():
    """The process can serve: the database answers, and Redis when it is configured."""
    checks = services.readiness()
    if all(v == "ok" or v.startswith("not configured") for v in checks.values()):
        return jsonify(status="ok", checks=checks)
    return problem(
        503,
        "Service unavailable",
        "A dependency is unreachable.",
        checks=checks,
        slug="not-ready",
    )


blp = Blueprint(
    "ops", __name__, url_prefix="/api/v1", description="Sandbox clock and platform administration"
)

UserPageSchema = page_schema(UserAdminSchema, "UserPage")


@blp.route("/sandbox/clock")
class SandboxClock(MethodView):
    @require("admin")
    @blp.response(200, ClockSchema)
    def get(self):
        """The sandbox clock (CROWDLINE_SANDBOX=1 only; platform admins)"""
        return services.read_sandbox_clock()

    @require("admin")
    @blp.arguments(ClockChangeSchema)
    @blp.response(200, ClockSchema)
    def post(self, change):
        """Move the sandbox clock: `{"advance_seconds": s}` or `{"set": "<time>"}`"""
        return services.move_sandbox_clock(change)


@blp.route("/admin/users")
class AdminUsers(MethodView):
    @require("admin")
    @blp.arguments(UserListArgsSchema, location="query")
    @blp.response(200, UserPageSchema)
    def get(self, args):
        """Every account (platform admins)"""
        _platform_admin_only()
        page = services.list_users(args)
        return page, next_link(page["next_cursor"])


@blp.route("/admin/users/<int:user_id>/status")
class AdminUserStatus(MethodView):
    @require("admin")
    @blp.arguments(UserStatusChangeSchema)
    @blp.response(200, UserAdminSchema)
    def post(self, data, user_id):
        """Disable or re-enable an account, with a reason (audited)"""
        _platform_admin_only()
        return services.set_user_status(user_id, data["status"], data["reason"])


def _platform_admin_only() -> None:
    from marketplace.auth import principal
    from marketplace.errors import NotFound

    if not principal().is_platform_admin:
        raise NotFound("not found")
