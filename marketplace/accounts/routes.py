"""Sign-up, sign-in, the caller's own account, organizations and members."""

from __future__ import annotations

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import fields

from marketplace.accounts import services
from marketplace.accounts.schemas import (
    AccountUpdateSchema,
    AuditEventSchema,
    LoginSchema,
    MemberAddSchema,
    MemberSchema,
    MemberUpdateSchema,
    OrganizationCreateSchema,
    OrganizationSchema,
    OrganizationUpdateSchema,
    PasswordChangeSchema,
    SignupResultSchema,
    SignupSchema,
    TokenSchema,
    UserSchema,
)
from marketplace.auth import principal, require, require_user
from marketplace.idempotency import idempotent
from marketplace.pagination import PageArgsSchema, next_link, page_schema

blp = Blueprint(
    "accounts",
    __name__,
    url_prefix="/api/v1",
    description="Sign-up, sign-in, your account, organizations and their members",
)

OrganizationPageSchema = page_schema(OrganizationSchema, "OrganizationPage")
MemberPageSchema = page_schema(MemberSchema, "MemberPage")
AuditEventPageSchema = page_schema(AuditEventSchema, "AuditEventPage")


class AuditArgsSchema(PageArgsSchema):
    action = fields.String(metadata={"description": "only events of this action"})


@blp.route("/auth/signup")
class Signup(MethodView):
    @blp.arguments(SignupSchema)
    @blp.response(201, SignupResultSchema)
    def post(self, data):
        """Create a worker, client or vendor account"""
        user, organization = services.sign_up(data)
        return {"user": user, "organization": organization}


@blp.route("/auth/login")
class Login(MethodView):
    @blp.arguments(LoginSchema)
    @blp.response(200, TokenSchema)
    def post(self, data):
        """Sign in with e-mail and password; returns a bearer token and a refresh token

        Refresh at `/oauth/token` with `grant_type=refresh_token&client_id=crowdline`.
        """
        return services.log_in(data["email"], data["password"], data.get("scope"))


@blp.route("/auth/logout")
class Logout(MethodView):
    @require()
    @blp.response(204)
    def post(self):
        """Revoke the token used for this call (and its refresh token)"""
        services.log_out(principal())


@blp.route("/account")
class Account(MethodView):
    @require("account")
    @blp.response(200, UserSchema)
    def get(self):
        """Your own account, with your organizations and roles"""
        return require_user()

    @require("account")
    @blp.arguments(AccountUpdateSchema)
    @blp.response(200, UserSchema)
    def patch(self, changes):
        """Change your display name"""
        return services.update_account(require_user(), changes)


@blp.route("/account/password")
class Password(MethodView):
    @require("account")
    @blp.arguments(PasswordChangeSchema)
    @blp.response(204)
    def post(self, data):
        """Change your password; every other session of yours is signed out"""
        services.change_password(require_user(), data["current_password"], data["new_password"])


@blp.route("/organizations")
class Organizations(MethodView):
    @require("org:read")
    @blp.arguments(PageArgsSchema, location="query")
    @blp.response(200, OrganizationPageSchema)
    def get(self, args):
        """Organizations you belong to (every one, for platform admins)"""
        page = services.list_my_organizations(args)
        return page, next_link(page["next_cursor"])

    @require("org:write")
    @idempotent
    @blp.arguments(OrganizationCreateSchema)
    @blp.response(201, OrganizationSchema)
    def post(self, data):
        """Open another client or vendor organization, owned by you"""
        return services.create_organization(data)


@blp.route("/organizations/<int:organization_id>")
class OrganizationDetail(MethodView):
    @require("org:read")
    @blp.response(200, OrganizationSchema)
    def get(self, organization_id):
        """One of your organizations"""
        return services.get_organization(organization_id)

    @require("org:write")
    @blp.arguments(OrganizationUpdateSchema)
    @blp.response(200, OrganizationSchema)
    def patch(self, data, organization_id):
        """Rename an organization (admins and owners)"""
        return services.rename_organization(organization_id, data["name"])


@blp.route("/organizations/<int:organization_id>/members")
class Members(MethodView):
    @require("org:read")
    @blp.arguments(PageArgsSchema, location="query")
    @blp.response(200, MemberPageSchema)
    def get(self, args, organization_id):
        """Members of an organization and their roles"""
        page = services.list_members(organization_id, args)
        return page, next_link(page["next_cursor"])

    @require("org:write")
    @idempotent
    @blp.arguments(MemberAddSchema)
    @blp.response(201, MemberSchema)
    def post(self, data, organization_id):
        """Add an existing account as a member (admins and owners)"""
        return services.add_member(organization_id, data["email"], data["role"])


@blp.route("/organizations/<int:organization_id>/members/<int:membership_id>")
class Member(MethodView):
    @require("org:write")
    @blp.arguments(MemberUpdateSchema)
    @blp.response(200, MemberSchema)
    def patch(self, data, organization_id, membership_id):
        """Change a member's role"""
        return services.change_member_role(organization_id, membership_id, data["role"])

    @require("org:write")
    @blp.response(204)
    def delete(self, organization_id, membership_id):
        """Remove a member (an organization keeps at least one owner)"""
        services.remove_member(organization_id, membership_id)


@blp.route("/organizations/<int:organization_id>/audit-events")
class OrganizationAudit(MethodView):
    @require("org:read")
    @blp.arguments(AuditArgsSchema, location="query")
    @blp.response(200, AuditEventPageSchema)
    def get(self, args, organization_id):
        """The organization's audit trail, oldest first (admins and owners)"""
        page = services.list_audit_events(organization_id, args)
        return page, next_link(page["next_cursor"])


@blp.route("/audit-events")
class PlatformAudit(MethodView):
    @require("admin")
    @blp.arguments(AuditArgsSchema, location="query")
    @blp.response(200, AuditEventPageSchema)
    def get(self, args):
        """The whole audit log, oldest first (platform admins)"""
        page = services.list_audit_events(None, args)
        return page, next_link(page["next_cursor"])
