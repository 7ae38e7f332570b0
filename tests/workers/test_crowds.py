from __future__ import annotations

from sqlalchemy import func, select

from tests.helpers import assert_problem
from tests.workforce import invite_and_join, make_crowd, worker_id
from workers.models import CrowdInvitation, CrowdMember


def test_invite_then_join_private_crowd(api):
    vendor = api.signup("vendor")
    worker = api.signup("worker")
    crowd = make_crowd(api, vendor)
    invite_and_join(api, vendor, crowd, worker)
    members = api.get(f"/api/v1/crowds/{crowd['id']}/members", vendor.token).get_json()["items"]
    assert [m["worker"]["id"] for m in members] == [worker_id(api, worker)]
    assert members[0]["source"] == "invitation"
    mine = api.get("/api/v1/workers/me/crowds", worker.token).get_json()["items"]
    assert [c["crowd_id"] for c in mine] == [crowd["id"]]


def test_invitation_codes_are_single_use_and_email_bound(api, db_session):
    vendor = api.signup("vendor")
    invited = api.signup("worker")
    other = api.signup("worker")
    crowd = make_crowd(api, vendor)
    created = api.post(
        f"/api/v1/crowds/{crowd['id']}/invitations", vendor.token, json={"emails": [invited.email]}
    ).get_json()["invitations"]
    code = created[0]["code"]
    assert_problem(api.post("/api/v1/invitations/accept", other.token, json={"code": code}), 403)
    assert (
        api.post("/api/v1/invitations/accept", invited.token, json={"code": code}).status_code
        == 201
    )
    assert_problem(api.post("/api/v1/invitations/accept", invited.token, json={"code": code}), 404)
    # the code itself is never stored
    stored = db_session.scalar(select(CrowdInvitation))
    assert code not in (stored.code_hash,)
    listed = api.get(f"/api/v1/crowds/{crowd['id']}/invitations", vendor.token).get_json()
    assert "code" not in listed["items"][0]


def test_expired_invitation_is_refused(api, manual_clock, db_session):
    vendor = api.signup("vendor")
    worker = api.signup("worker")
    crowd = make_crowd(api, vendor)
    code = api.post(
        f"/api/v1/crowds/{crowd['id']}/invitations",
        vendor.token,
        json={"count": 1, "expires_in_days": 1},
    ).get_json()["invitations"][0]["code"]
    manual_clock.advance(2 * 86400)
    token = api.login(worker.email)["access_token"]
    assert_problem(api.post("/api/v1/invitations/accept", token, json={"code": code}), 409)
    assert db_session.scalar(select(func.count()).select_from(CrowdMember)) == 0


def test_bulk_invite_hundreds_in_one_request(api, db_session):
    vendor = api.signup("vendor")
    crowd = make_crowd(api, vendor)
    emails = [f"recruit{i}@example.org" for i in range(300)]
    response = api.post(
        f"/api/v1/crowds/{crowd['id']}/invitations",
        vendor.token,
        json={"emails": emails, "count": 50},
    )
    assert response.status_code == 201
    invitations = response.get_json()["invitations"]
    assert len(invitations) == 350
    assert len({i["code"] for i in invitations}) == 350
    assert db_session.scalar(select(func.count()).select_from(CrowdInvitation)) == 350


def test_bulk_invite_limits_and_validation(api, db_session):
    vendor = api.signup("vendor")
    crowd = make_crowd(api, vendor)
    too_many = [f"r{i}@example.org" for i in range(1001)]
    assert_problem(
        api.post(
            f"/api/v1/crowds/{crowd['id']}/invitations", vendor.token, json={"emails": too_many}
        ),
        422,
        field="emails",
    )
    assert_problem(
        api.post(
            f"/api/v1/crowds/{crowd['id']}/invitations",
            vendor.token,
            json={"emails": ["ok@example.org", "not-an-email"]},
        ),
        422,
        field="emails",
    )
    assert db_session.scalar(select(func.count()).select_from(CrowdInvitation)) == 0


def test_join_request_approved(api):
    vendor = api.signup("vendor")
    worker = api.signup("worker")
    crowd = make_crowd(api, vendor)
    request = api.post(
        f"/api/v1/crowds/{crowd['id']}/join-requests", worker.token, json={"message": "hi"}
    )
    assert request.status_code == 201
    assert_problem(
        api.post(f"/api/v1/crowds/{crowd['id']}/join-requests", worker.token, json={}), 409
    )
    pending = api.get(
        f"/api/v1/crowds/{crowd['id']}/join-requests?status=pending", vendor.token
    ).get_json()["items"]
    assert len(pending) == 1
    approved = api.post(
        f"/api/v1/crowds/{crowd['id']}/join-requests/{pending[0]['id']}/approve",
        vendor.token,
        json={},
    )
    assert approved.get_json()["status"] == "approved"
    members = api.get(f"/api/v1/crowds/{crowd['id']}/members", vendor.token).get_json()["items"]
    assert members[0]["source"] == "join_request"


def test_worker_may_leave_and_vendor_may_remove(api):
    vendor = api.signup("vendor")
    one = api.signup("worker")
    two = api.signup("worker")
    crowd = make_crowd(api, vendor)
    invite_and_join(api, vendor, crowd, one)
    invite_and_join(api, vendor, crowd, two)
    assert (
        api.delete(
            f"/api/v1/crowds/{crowd['id']}/members/{worker_id(api, one)}", one.token
        ).status_code
        == 204
    )
    # a worker cannot remove someone else
    assert_problem(
        api.delete(f"/api/v1/crowds/{crowd['id']}/members/{worker_id(api, two)}", one.token), 404
    )
    assert (
        api.delete(
            f"/api/v1/crowds/{crowd['id']}/members/{worker_id(api, two)}",
            vendor.token,
            json={"reason": "left the project"},
        ).status_code
        == 204
    )
    assert api.get(f"/api/v1/crowds/{crowd['id']}/members", vendor.token).get_json()["items"] == []


def test_other_vendors_crowds_are_invisible(api):
    vendor_a = api.signup("vendor")
    vendor_b = api.signup("vendor")
    crowd = make_crowd(api, vendor_a)
    for path in (
        f"/api/v1/crowds/{crowd['id']}",
        f"/api/v1/crowds/{crowd['id']}/members",
        f"/api/v1/crowds/{crowd['id']}/invitations",
        f"/api/v1/organizations/{vendor_a.organization['id']}/crowds",
    ):
        assert_problem(api.get(path, vendor_b.token), 404)
    assert_problem(
        api.post(f"/api/v1/crowds/{crowd['id']}/invitations", vendor_b.token, json={"count": 1}),
        404,
    )


def test_worker_accounts_cannot_open_crowds(api):
    worker = api.signup("worker")
    vendor = api.signup("vendor")
    response = api.post(
        f"/api/v1/organizations/{vendor.organization['id']}/crowds",
        worker.token,
        json={"name": "x"},
    )
    assert_problem(response, 404)
