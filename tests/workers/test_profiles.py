from __future__ import annotations

from sqlalchemy import select

from marketplace.models import AuditEvent
from tests.helpers import assert_problem
from tests.workforce import activate, invite_and_join, make_crowd, worker_id


def test_worker_edits_own_profile(api):
    worker = api.signup("worker")
    response = api.patch(
        "/api/v1/workers/me",
        worker.token,
        json={
            "display_name": "Ana",
            "country": "ES",
            "timezone": "Europe/Madrid",
            "languages": [
                {"code": "es", "proficiency": "native"},
                {"code": "en", "proficiency": "fluent"},
            ],
            "weekly_availability_hours": 20,
            "availability": {"mon": [["09:00", "13:00"]]},
            "claimed_skills": ["text.sentiment.es"],
            "payout_country": "ES",
        },
    )
    assert response.status_code == 200, response.get_json()
    profile = api.get("/api/v1/workers/me", worker.token).get_json()
    assert profile["country"] == "ES"
    assert profile["languages"][0] == {"code": "es", "proficiency": "native"}
    assert profile["status"] == "applied"
    assert profile["pseudonym"].startswith("w_")


def test_profile_validation_names_the_field(api):
    worker = api.signup("worker")
    for body, field in [
        ({"country": "Spain"}, "country"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"languages": [{"code": "es", "proficiency": "godlike"}]}, "languages"),
        ({"availability": {"mon": [["17:00", "09:00"]]}}, "availability"),
        ({"weekly_availability_hours": 500}, "weekly_availability_hours"),
    ]:
        assert_problem(api.patch("/api/v1/workers/me", worker.token, json=body), 422, field=field)
    assert api.get("/api/v1/workers/me", worker.token).get_json()["country"] is None


def test_funnel_moves_are_audited_and_bounded(api, app, db_session):
    admin = api.admin(app)
    worker = api.signup("worker")
    wid = worker_id(api, worker)
    # applied → active skips screening: refused
    response = api.post(
        f"/api/v1/workers/{wid}/status", admin.token, json={"to": "active", "reason": "x"}
    )
    body = assert_problem(response, 409)
    assert "screening" in body["allowed"]
    activate(api, admin, worker)
    events = db_session.scalars(
        select(AuditEvent).where(AuditEvent.action == "worker.status_changed")
    ).all()
    assert [(e.detail["from"], e.detail["to"]) for e in events] == [
        ("applied", "screening"),
        ("screening", "active"),
    ]
    assert events[0].actor_user_id == admin.user["id"]


def test_worker_cannot_promote_themselves_but_can_offboard(api):
    worker = api.signup("worker")
    wid = worker_id(api, worker)
    response = api.post(
        f"/api/v1/workers/{wid}/status", worker.token, json={"to": "screening", "reason": "me"}
    )
    assert_problem(response, 403)
    response = api.post(
        f"/api/v1/workers/{wid}/status", worker.token, json={"to": "offboarded", "reason": "bye"}
    )
    assert response.status_code == 200
    assert response.get_json()["status"] == "offboarded"


def test_only_platform_admins_ban(api, app):
    admin = api.admin(app)
    vendor = api.signup("vendor")
    worker = api.signup("worker")
    crowd = make_crowd(api, vendor)
    invite_and_join(api, vendor, crowd, worker)
    wid = activate(api, admin, worker)
    # the vendor may suspend a worker of its crowd, but not ban them
    response = api.post(
        f"/api/v1/workers/{wid}/status", vendor.token, json={"to": "suspended", "reason": "qa"}
    )
    assert response.status_code == 200
    response = api.post(
        f"/api/v1/workers/{wid}/status", vendor.token, json={"to": "banned", "reason": "fraud"}
    )
    assert_problem(response, 403)
    response = api.post(
        f"/api/v1/workers/{wid}/status", admin.token, json={"to": "banned", "reason": "fraud"}
    )
    assert response.get_json()["status"] == "banned"


def test_vendor_sees_only_its_crowds_workers(api):
    vendor_a = api.signup("vendor")
    vendor_b = api.signup("vendor")
    mine = api.signup("worker")
    theirs = api.signup("worker")
    invite_and_join(api, vendor_a, make_crowd(api, vendor_a), mine)
    invite_and_join(api, vendor_b, make_crowd(api, vendor_b), theirs)
    listed = api.get("/api/v1/workers", vendor_a.token).get_json()["items"]
    assert [w["id"] for w in listed] == [worker_id(api, mine)]
    assert api.get(f"/api/v1/workers/{worker_id(api, mine)}", vendor_a.token).status_code == 200
    assert_problem(api.get(f"/api/v1/workers/{worker_id(api, theirs)}", vendor_a.token), 404)
    response = api.post(
        f"/api/v1/workers/{worker_id(api, theirs)}/status",
        vendor_a.token,
        json={"to": "screening", "reason": "x"},
    )
    assert_problem(response, 404)
    assert api.get("/api/v1/workers/me", theirs.token).get_json()["status"] == "applied"


def test_client_cannot_list_workers_of_vendors(api):
    client = api.signup("client")
    vendor = api.signup("vendor")
    worker = api.signup("worker")
    invite_and_join(api, vendor, make_crowd(api, vendor), worker)
    assert api.get("/api/v1/workers", client.token).get_json()["items"] == []
    assert_problem(api.get(f"/api/v1/workers/{worker_id(api, worker)}", client.token), 404)


def test_other_workers_profiles_are_invisible(api):
    one = api.signup("worker")
    two = api.signup("worker")
    assert_problem(api.get(f"/api/v1/workers/{worker_id(api, two)}", one.token), 404)
