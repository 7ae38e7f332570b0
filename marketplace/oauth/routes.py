"""OAuth 2 endpoints (/oauth/…) and the registry of an organization's OAuth clients."""

from __future__ import annotations

from flask import Blueprint as FlaskBlueprint
from flask.views import MethodView
from flask_smorest import Blueprint

from marketplace.auth import require
from marketplace.http import accepts
from marketplace.idempotency import idempotent
from marketplace.oauth import services
from marketplace.oauth.schemas import (
    ConsentSchema,
    OAuthClientCreateSchema,
    OAuthClientCredentialsSchema,
    OAuthClientSchema,
)
from marketplace.pagination import PageArgsSchema, next_link, page_schema

FORM = "application/x-www-form-urlencoded"
JSON = "application/json"

oauth_bp = FlaskBlueprint("oauth", __name__, url_prefix="/oauth")
api_blp = Blueprint(
    "oauth_clients", __name__, url_prefix="/api/v1", description="OAuth 2 applications"
)

OAuthClientPageSchema = page_schema(OAuthClientSchema, "OAuthClientPage")


@oauth_bp.get("/authorize")
def consent():
    """What the signed-in user is asked to approve (JSON), after validating the request."""
    return ConsentSchema().dump(services.describe_consent())


@oauth_bp.post("/authorize")
@accepts(FORM, JSON)
def decide():
    """confirm=yes issues a code, confirm=no denies; both redirect to the client."""
    return services.decide_authorization()


@oauth_bp.post("/token")
@accepts(FORM)
def token():
    return services.issue_token()


@oauth_bp.post("/revoke")
@accepts(FORM)
def revoke():
    return services.revoke_token()


@oauth_bp.post("/introspect")
@accepts(FORM)
def introspect():
    return services.introspect_token()


@api_blp.route("/organizations/<int:organization_id>/oauth-clients")
class OAuthClients(MethodView):
    @require("org:read")
    @api_blp.arguments(PageArgsSchema, location="query")
    @api_blp.response(200, OAuthClientPageSchema)
    def get(self, args, organization_id):
        """The organization's OAuth clients (labeling tools and service accounts)"""
        page = services.list_clients(organization_id, args)
        return page, next_link(page["next_cursor"])

    @require("org:write")
    @idempotent
    @api_blp.arguments(OAuthClientCreateSchema)
    @api_blp.response(201, OAuthClientCredentialsSchema)
    def post(self, data, organization_id):
        """Register an OAuth client (admins and owners); the secret is shown only here"""
        return services.register_client(organization_id, data)


@api_blp.route("/organizations/<int:organization_id>/oauth-clients/<string:client_id>")
class OAuthClientDetail(MethodView):
    @require("org:read")
    @api_blp.response(200, OAuthClientSchema)
    def get(self, organization_id, client_id):
        """One of the organization's OAuth clients"""
        return services.get_client(organization_id, client_id)

    @require("org:write")
    @api_blp.response(204)
    def delete(self, organization_id, client_id):
        """Revoke the client and every token issued to it (admins and owners)"""
        services.revoke_client(organization_id, client_id)


@api_blp.route(
    "/organizations/<int:organization_id>/oauth-clients/<string:client_id>/rotate-secret"
)
class OAuthClientSecret(MethodView):
    @require("org:write")
    @api_blp.response(200, OAuthClientCredentialsSchema)
    def post(self, organization_id, client_id):
        """Replace a confidential client's secret; the old one stops working at once"""
        return services.rotate_client_secret(organization_id, client_id)
