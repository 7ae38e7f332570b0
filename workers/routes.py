"""Worker profiles, the recruitment funnel and crowds."""

from __future__ import annotations

from flask.views import MethodView
from flask_smorest import Blueprint

from billing import services as billing
from billing.schemas import BalanceSchema, EarningSchema
from marketplace.auth import require
from marketplace.idempotency import idempotent
from marketplace.pagination import PageArgsSchema, next_link, page_schema
from workers import crowds, services
from workers.access import get_visible_worker, my_worker_profile
from workers.schemas import (
    CrowdCreateSchema,
    CrowdMemberSchema,
    CrowdSchema,
    CrowdUpdateSchema,
    InvitationAcceptSchema,
    InvitationCreatedSchema,
    InvitationCreateSchema,
    InvitationListArgsSchema,
    InvitationListItemSchema,
    JoinDecisionSchema,
    JoinRequestArgsSchema,
    JoinRequestCreateSchema,
    JoinRequestSchema,
    MemberRemoveSchema,
    MyCrowdSchema,
    StatusChangeSchema,
    WorkerListArgsSchema,
    WorkerProfileSchema,
    WorkerProfileUpdateSchema,
)

blp = Blueprint(
    "workers", __name__, url_prefix="/api/v1", description="Worker profiles, funnel and crowds"
)

WorkerPage = page_schema(WorkerProfileSchema, "WorkerPage")
CrowdPage = page_schema(CrowdSchema, "CrowdPage")
CrowdMemberPage = page_schema(CrowdMemberSchema, "CrowdMemberPage")
MyCrowdPage = page_schema(MyCrowdSchema, "MyCrowdPage")
InvitationPage = page_schema(InvitationListItemSchema, "InvitationPage")
JoinRequestPage = page_schema(JoinRequestSchema, "JoinRequestPage")
EarningPage = page_schema(EarningSchema, "EarningPage")


def _paged(page):
    return page, next_link(page["next_cursor"])


@blp.route("/workers/me")
class MyProfile(MethodView):
    @require("workforce:read")
    @blp.response(200, WorkerProfileSchema)
    def get(self):
        """Your worker profile"""
        return my_worker_profile()

    @require("workforce:write")
    @blp.arguments(WorkerProfileUpdateSchema)
    @blp.response(200, WorkerProfileSchema)
    def patch(self, changes):
        """Edit your worker profile"""
        return services.update_profile(my_worker_profile(), changes)


@blp.route("/workers/me/crowds")
class MyCrowds(MethodView):
    @require("workforce:read")
    @blp.arguments(PageArgsSchema, location="query")
    @blp.response(200, MyCrowdPage)
    def get(self, args):
        """Crowds you belong to"""
        return _paged(crowds.my_crowds(args))


@blp.route("/workers")
class Workers(MethodView):
    @require("workforce:read")
    @blp.arguments(WorkerListArgsSchema, location="query")
    @blp.response(200, WorkerPage)
    def get(self, args):
        """Workers in your organizations' crowds (every worker, for platform admins)"""
        return _paged(services.list_workers(args))


@blp.route("/workers/<int:worker_id>")
class Worker(MethodView):
    @require("workforce:read")
    @blp.response(200, WorkerProfileSchema)
    def get(self, worker_id):
        """A worker you manage (or yourself)"""
        return get_visible_worker(worker_id)


@blp.route("/workers/<int:worker_id>/status")
class WorkerStatusChange(MethodView):
    @require("workforce:write")
    @blp.arguments(StatusChangeSchema)
    @blp.response(200, WorkerProfileSchema)
    def post(self, data, worker_id):
        """Move a worker through the funnel (applied → screening → active, suspended, banned,
        offboarded), with a reason"""
        return services.change_status(worker_id, data["to"], data["reason"])


@blp.route("/organizations/<int:organization_id>/crowds")
class Crowds(MethodView):
    @require("workforce:read")
    @blp.arguments(PageArgsSchema, location="query")
    @blp.response(200, CrowdPage)
    def get(self, args, organization_id):
        """An organization's private crowds"""
        return _paged(crowds.list_crowds(organization_id, args))

    @require("workforce:write")
    @idempotent
    @blp.arguments(CrowdCreateSchema)
    @blp.response(201, CrowdSchema)
    def post(self, data, organization_id):
        """Open a private crowd (vendor or client organization admins)"""
        return crowds.create_crowd(organization_id, data)


@blp.route("/crowds/<int:crowd_id>")
class CrowdDetail(MethodView):
    @require("workforce:read")
    @blp.response(200, CrowdSchema)
    def get(self, crowd_id):
        """A crowd of one of your organizations"""
        from workers.access import get_crowd

        return get_crowd(crowd_id)

    @require("workforce:write")
    @blp.arguments(CrowdUpdateSchema)
    @blp.response(200, CrowdSchema)
    def patch(self, changes, crowd_id):
        """Rename or describe a crowd"""
        return crowds.update_crowd(crowd_id, changes)


@blp.route("/crowds/<int:crowd_id>/members")
class CrowdMembers(MethodView):
    @require("workforce:read")
    @blp.arguments(PageArgsSchema, location="query")
    @blp.response(200, CrowdMemberPage)
    def get(self, args, crowd_id):
        """Workers in a crowd"""
        return _paged(crowds.list_members(crowd_id, args))


@blp.route("/crowds/<int:crowd_id>/members/<int:worker_id>")
class CrowdMemberDetail(MethodView):
    @require("workforce:write")
    @blp.arguments(MemberRemoveSchema)
    @blp.response(204)
    def delete(self, data, crowd_id, worker_id):
        """Remove a worker from a crowd (crowd admins), or leave it (the worker)"""
        crowds.remove_member(crowd_id, worker_id, data.get("reason"))


@blp.route("/crowds/<int:crowd_id>/invitations")
class Invitations(MethodView):
    @require("workforce:read")
    @blp.arguments(InvitationListArgsSchema, location="query")
    @blp.response(200, InvitationPage)
    def get(self, args, crowd_id):
        """Invitations of a crowd (codes are never shown again)"""
        return _paged(crowds.list_invitations(crowd_id, args))

    @require("workforce:write")
    @idempotent
    @blp.arguments(InvitationCreateSchema)
    @blp.response(201, InvitationCreatedSchema)
    def post(self, data, crowd_id):
        """Invite up to 1,000 workers at once: one single-use code per e-mail, plus `count`
        open codes; the codes appear only in this response"""
        return {"invitations": crowds.create_invitations(crowd_id, data)}


@blp.route("/crowds/<int:crowd_id>/invitations/<int:invitation_id>/revoke")
class InvitationRevoke(MethodView):
    @require("workforce:write")
    @blp.response(200, InvitationListItemSchema)
    def post(self, crowd_id, invitation_id):
        """Withdraw an open invitation"""
        return crowds.revoke_invitation(crowd_id, invitation_id)


@blp.route("/invitations/accept")
class InvitationAccept(MethodView):
    @require("workforce:write")
    @blp.arguments(InvitationAcceptSchema)
    @blp.response(201, MyCrowdSchema)
    def post(self, data):
        """Redeem an invitation code and join its crowd (workers)"""
        return crowds.accept_invitation(data["code"])


@blp.route("/crowds/<int:crowd_id>/join-requests")
class JoinRequests(MethodView):
    @require("workforce:read")
    @blp.arguments(JoinRequestArgsSchema, location="query")
    @blp.response(200, JoinRequestPage)
    def get(self, args, crowd_id):
        """Requests to join a crowd (crowd admins)"""
        return _paged(crowds.list_join_requests(crowd_id, args))

    @require("workforce:write")
    @blp.arguments(JoinRequestCreateSchema)
    @blp.response(201, JoinRequestSchema)
    def post(self, data, crowd_id):
        """Ask to join a crowd (workers)"""
        return crowds.request_to_join(crowd_id, data["message"])


@blp.route("/crowds/<int:crowd_id>/join-requests/<int:request_id>/approve")
class JoinApprove(MethodView):
    @require("workforce:write")
    @blp.arguments(JoinDecisionSchema)
    @blp.response(200, JoinRequestSchema)
    def post(self, data, crowd_id, request_id):
        """Approve a join request; the worker joins the crowd"""
        return crowds.decide_join_request(crowd_id, request_id, True, data.get("reason"))


@blp.route("/crowds/<int:crowd_id>/join-requests/<int:request_id>/reject")
class JoinReject(MethodView):
    @require("workforce:write")
    @blp.arguments(JoinDecisionSchema)
    @blp.response(200, JoinRequestSchema)
    def post(self, data, crowd_id, request_id):
        """Reject a join request"""
        return crowds.decide_join_request(crowd_id, request_id, False, data.get("reason"))


@blp.route("/workers/me/balance")
class MyBalance(MethodView):
    @require("billing:read")
    @blp.response(200, BalanceSchema)
    def get(self):
        """Your earnings: pending (inside the QA window), available, in payout, paid"""
        return billing.worker_balances(my_worker_profile().id)


@blp.route("/workers/me/earnings")
class MyEarnings(MethodView):
    @require("billing:read")
    @blp.arguments(PageArgsSchema, location="query")
    @blp.response(200, EarningPage)
    def get(self, args):
        """Every judgment and bonus you were paid for, with when it becomes available"""
        return _paged(billing.list_earnings(my_worker_profile().id, args))
