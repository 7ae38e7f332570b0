"""The audit log: every privileged change says who did what to which object, when, where."""

from __future__ import annotations

import re

import pytest

from tests.helpers import PASSWORD, assert_problem
from tests.marketplace.test_conventions import unchanged

ORGS = "/api/v1/organizations"


def _trail(api, account, org_id, **params) -> list[dict]:
    query = "&".join(f"{k}={v}" for k, v in {"limit": 200, **params}.items())
    response = api.get(f"{ORGS}/{org_id}/audit-events?{query}", account.token)
    assert response.status_code == 200, response.get_json()
    return response.get_json()["items"]


def test_each_change_to_an_organization_is_in_its_trail(api, manual_clock):
    owner = api.signup("client", organization="Audited")
    colleague = api.signup("client")
    org_id = owner.organization["id"]
    at = manual_clock.now().isoformat()

    renamed = api.patch(f"{ORGS}/{org_id}", owner.token, json={"name": "Audited Inc"})
    manual_clock.advance(60)
    added = api.post(
        f"{ORGS}/{org_id}/members", owner.token, json={"email": colleague.email, "role": "admin"}
    )
    membership_id = added.get_json()["id"]
    manual_clock.advance(60)
    changed = api.patch(
        f"{ORGS}/{org_id}/members/{membership_id}", owner.token, json={"role": "member"}
    )
    manual_clock.advance(60)
    removed = api.delete(f"{ORGS}/{org_id}/members/{membership_id}", owner.token)
    assert [r.status_code for r in (renamed, added, changed, removed)] == [200, 201, 200, 204]

    trail = _trail(api, owner, org_id)
    assert [e["action"] for e in trail] == [
        "user.signed_up",
        "organization.renamed",
        "membership.added",
        "membership.role_changed",
        "membership.removed",
    ]
    signed_up, *changes = trail
    assert signed_up["actor_user_id"] == owner.user["id"]
    assert (signed_up["object_type"], signed_up["object_id"]) == ("user", str(owner.user["id"]))
    for event, response in zip(changes, (renamed, added, changed, removed), strict=True):
        assert event["actor_user_id"] == owner.user["id"]
        assert event["actor_client_id"] == "crowdline"  # the first-party sign-in client
        assert event["organization_id"] == org_id
        assert event["request_id"] == response.headers["X-Request-Id"]
    assert (changes[0]["object_type"], changes[0]["object_id"]) == ("organization", str(org_id))
    for event in changes[1:]:
        assert (event["object_type"], event["object_id"]) == ("membership", str(membership_id))
    assert changes[0]["detail"] == {"from": "Audited", "to": "Audited Inc"}
    assert changes[1]["detail"] == {"user_id": colleague.user["id"], "role": "admin"}
    assert changes[2]["detail"] == {
        "user_id": colleague.user["id"],
        "from": "admin",
        "to": "member",
    }
    assert changes[3]["detail"] == {"user_id": colleague.user["id"], "role": "member"}
    # times come from the one clock
    assert [e["occurred_at"][:19] for e in changes] == [
        at[:19],
        at[:14] + "01:00",
        at[:14] + "02:00",
        at[:14] + "03:00",
    ]


def test_the_trail_is_for_admins_and_owners_of_the_org(api, app):
    owner = api.signup("client")
    admin = api.signup("client")
    member = api.signup("client")
    outsider = api.signup("client")
    org_id = owner.organization["id"]
    for person, role in ((admin, "admin"), (member, "member")):
        api.post(
            f"{ORGS}/{org_id}/members", owner.token, json={"email": person.email, "role": role}
        )
    path = f"{ORGS}/{org_id}/audit-events"
    assert api.get(path, owner.token).status_code == 200
    assert api.get(path, admin.token).status_code == 200
    assert api.get(path, api.admin(app).token).status_code == 200
    assert_problem(api.get(path, member.token), 403)
    assert_problem(api.get(path, outsider.token), 404)
    narrowed = api.login(owner.email, scope="account")["access_token"]
    assert_problem(api.get(path, narrowed), 403)


def test_the_whole_log_is_for_platform_admins(api, app):
    owner = api.signup("client")
    other = api.signup("vendor")
    api.post(
        "/api/v1/account/password",
        owner.token,
        json={"current_password": PASSWORD, "new_password": "another long passphrase"},
    )
    assert assert_problem(api.get("/api/v1/audit-events", owner.token), 403)["required_scopes"] == [
        "admin"
    ]
    admin = api.admin(app)
    events = api.get("/api/v1/audit-events?limit=200", admin.token).get_json()["items"]
    orgs = {e["organization_id"] for e in events}
    assert {owner.organization["id"], other.organization["id"], None} <= orgs
    changed = [e for e in events if e["action"] == "user.password_changed"]
    assert [(e["actor_user_id"], e["object_id"]) for e in changed] == [
        (owner.user["id"], str(owner.user["id"]))
    ]


def test_the_trail_filters_by_action(api):
    owner = api.signup("client")
    org_id = owner.organization["id"]
    for n in range(3):
        api.patch(f"{ORGS}/{org_id}", owner.token, json={"name": f"Name {n}"})
    renamed = _trail(api, owner, org_id, action="organization.renamed")
    assert [e["detail"]["to"] for e in renamed] == ["Name 0", "Name 1", "Name 2"]
    assert _trail(api, owner, org_id, action="no.such.action") == []


def test_refused_changes_leave_no_trace(api, db_session):
    owner = api.signup("client")
    org_id = owner.organization["id"]
    own_membership = api.get(f"{ORGS}/{org_id}/members", owner.token).get_json()["items"][0]["id"]
    with unchanged(db_session):  # audit_events included
        assert_problem(
            api.patch(
                f"{ORGS}/{org_id}/members/{own_membership}", owner.token, json={"role": "member"}
            ),
            409,
        )
        assert_problem(api.delete(f"{ORGS}/{org_id}/members/{own_membership}", owner.token), 409)
        assert_problem(
            api.post(f"{ORGS}/{org_id}/members", owner.token, json={"email": "ghost@example.org"}),
            422,
        )
        assert_problem(api.patch(f"{ORGS}/{org_id}", owner.token, json={"name": ""}), 422)


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ("req-7f3a.9:retry_2", True),
        ("r" * 64, True),
        ("r" * 65, False),
        ("has spaces in it", False),
        ("x" * 5000, False),
        ("ünïcødé", False),
    ],
)
def test_the_request_id_is_echoed_and_stored_only_when_sane(api, sent, kept):
    owner = api.signup("client")
    org_id = owner.organization["id"]
    response = api.patch(
        f"{ORGS}/{org_id}",
        owner.token,
        json={"name": "Traced"},
        headers={"X-Request-Id": sent.encode("utf-8").decode("latin-1")},
    )
    assert response.status_code == 200, response.get_json()
    echoed = response.headers["X-Request-Id"]
    if kept:
        assert echoed == sent
    else:
        assert re.fullmatch(r"[0-9a-f]{32}", echoed)
    event = _trail(api, owner, org_id, action="organization.renamed")[-1]
    assert event["request_id"] == echoed
