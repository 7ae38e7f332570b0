"""Organizations and their members: who may do what, and the owner an organization keeps."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import func, select

from marketplace.accounts.models import Membership, Organization, Role, User
from marketplace.models import AuditEvent
from tests.helpers import assert_problem
from tests.marketplace.test_conventions import unchanged

ORGS = "/api/v1/organizations"


def _members(api, account, org_id) -> dict[int, dict]:
    """user id → member entry."""
    items = api.get(f"{ORGS}/{org_id}/members?limit=200", account.token).get_json()["items"]
    return {m["user_id"]: m for m in items}


def _last_event(session, action: str) -> AuditEvent:
    session.rollback()
    return session.scalars(
        select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id.desc())
    ).first()


@pytest.fixture
def org(api):
    """A client organization with an owner, an admin and a plain member."""
    owner = api.signup("client", organization="Acme Vision")
    admin = api.signup("client")
    member = api.signup("client")
    org_id = owner.organization["id"]
    for person, role in ((admin, "admin"), (member, "member")):
        response = api.post(
            f"{ORGS}/{org_id}/members", owner.token, json={"email": person.email, "role": role}
        )
        assert response.status_code == 201, response.get_json()
    ids = {m["user_id"]: m["id"] for m in _members(api, owner, org_id).values()}
    return {
        "id": org_id,
        "owner": owner,
        "admin": admin,
        "member": member,
        "membership": {
            name: ids[acct.user["id"]]
            for name, acct in (("owner", owner), ("admin", admin), ("member", member))
        },
    }


def test_creating_an_organization_makes_the_caller_its_owner(api, db_session):
    founder = api.signup("vendor")
    response = api.post(ORGS, founder.token, json={"name": "  Second Crowd  ", "kind": "vendor"})
    assert response.status_code == 201
    created = response.get_json()
    assert created["name"] == "Second Crowd"
    assert created["kind"] == "vendor"
    members = _members(api, founder, created["id"])
    assert members[founder.user["id"]]["role"] == "owner"
    mine = api.get(ORGS, founder.token).get_json()["items"]
    assert {o["id"] for o in mine} == {founder.organization["id"], created["id"]}
    event = _last_event(db_session, "organization.created")
    assert (event.actor_user_id, event.organization_id, event.object_type, event.object_id) == (
        founder.user["id"],
        created["id"],
        "organization",
        str(created["id"]),
    )


def test_admins_and_owners_rename_members_cannot(api, org, db_session):
    for who, name in (("owner", "Acme Labs"), ("admin", "Acme Data")):
        response = api.patch(f"{ORGS}/{org['id']}", org[who].token, json={"name": name})
        assert response.status_code == 200
        assert response.get_json()["name"] == name
        event = _last_event(db_session, "organization.renamed")
        assert event.actor_user_id == org[who].user["id"]
        assert event.organization_id == org["id"]
        assert event.detail["to"] == name
    assert event.detail["from"] == "Acme Labs"
    with unchanged(db_session):
        refused = api.patch(f"{ORGS}/{org['id']}", org["member"].token, json={"name": "Nope"})
    assert_problem(refused, 403)


def test_adding_a_member_by_email_ignores_case(api, org, db_session):
    newcomer = api.signup("client", email="Dana.Smith@Example.org")
    response = api.post(
        f"{ORGS}/{org['id']}/members",
        org["admin"].token,
        json={"email": "dana.smith@EXAMPLE.org"},
    )
    assert response.status_code == 201, response.get_json()
    added = response.get_json()
    assert (added["user_id"], added["role"], added["email"]) == (
        newcomer.user["id"],
        "member",
        "Dana.Smith@Example.org",
    )
    event = _last_event(db_session, "membership.added")
    assert event.actor_user_id == org["admin"].user["id"]
    assert (event.object_type, event.object_id) == ("membership", str(added["id"]))
    assert event.organization_id == org["id"]
    assert event.detail == {"user_id": newcomer.user["id"], "role": "member"}
    # the new member sees the organization with their existing token
    assert api.get(f"{ORGS}/{org['id']}", newcomer.token).status_code == 200


def test_adding_someone_twice_is_409(api, org, db_session):
    with unchanged(db_session):
        response = api.post(
            f"{ORGS}/{org['id']}/members", org["owner"].token, json={"email": org["member"].email}
        )
    assert_problem(response, 409, field="email")


@pytest.mark.parametrize(
    ("email", "account_type"),
    [("nobody@example.org", None), (None, "worker")],
    ids=["unknown", "worker"],
)
def test_only_existing_client_or_vendor_accounts_can_be_added(
    api, org, db_session, email, account_type
):
    if account_type:
        email = api.signup(account_type).email
    with unchanged(db_session):
        response = api.post(
            f"{ORGS}/{org['id']}/members", org["owner"].token, json={"email": email}
        )
    assert_problem(response, 422, field="email")


def test_only_owners_make_owners(api, org, db_session):
    newcomer = api.signup("client")
    with unchanged(db_session):
        by_admin = api.post(
            f"{ORGS}/{org['id']}/members",
            org["admin"].token,
            json={"email": newcomer.email, "role": "owner"},
        )
        promote = api.patch(
            f"{ORGS}/{org['id']}/members/{org['membership']['member']}",
            org["admin"].token,
            json={"role": "owner"},
        )
        self_promote = api.patch(
            f"{ORGS}/{org['id']}/members/{org['membership']['admin']}",
            org["admin"].token,
            json={"role": "owner"},
        )
    for response in (by_admin, promote, self_promote):
        assert_problem(response, 403)
    by_owner = api.post(
        f"{ORGS}/{org['id']}/members",
        org["owner"].token,
        json={"email": newcomer.email, "role": "owner"},
    )
    assert by_owner.status_code == 201
    assert by_owner.get_json()["role"] == "owner"


def test_changing_a_role_is_audited_and_takes_effect(api, org, db_session):
    url = f"{ORGS}/{org['id']}/members/{org['membership']['member']}"
    response = api.patch(url, org["admin"].token, json={"role": "admin"})
    assert response.status_code == 200
    assert response.get_json()["role"] == "admin"
    event = _last_event(db_session, "membership.role_changed")
    assert event.actor_user_id == org["admin"].user["id"]
    assert (event.object_type, event.object_id) == ("membership", str(org["membership"]["member"]))
    assert event.organization_id == org["id"]
    assert event.detail == {"user_id": org["member"].user["id"], "from": "member", "to": "admin"}
    # the promoted member may now read the audit trail with the token they already had
    assert api.get(f"{ORGS}/{org['id']}/audit-events", org["member"].token).status_code == 200


def test_removing_a_member_is_audited_and_ends_their_access(api, org, db_session):
    url = f"{ORGS}/{org['id']}/members/{org['membership']['member']}"
    assert api.get(f"{ORGS}/{org['id']}", org["member"].token).status_code == 200
    response = api.delete(url, org["admin"].token)
    assert response.status_code == 204
    assert response.get_data() == b""
    event = _last_event(db_session, "membership.removed")
    assert event.actor_user_id == org["admin"].user["id"]
    assert (event.object_type, event.object_id) == ("membership", str(org["membership"]["member"]))
    assert event.organization_id == org["id"]
    assert event.detail == {"user_id": org["member"].user["id"], "role": "member"}
    assert_problem(api.get(f"{ORGS}/{org['id']}", org["member"].token), 404)
    assert_problem(api.delete(url, org["admin"].token), 404)  # already gone


def test_members_may_leave_only_through_an_admin(api, org, db_session):
    url = f"{ORGS}/{org['id']}/members/{org['membership']['member']}"
    with unchanged(db_session):
        assert_problem(api.delete(url, org["member"].token), 403)


def test_admins_cannot_demote_or_remove_owners(api, org, db_session):
    url = f"{ORGS}/{org['id']}/members/{org['membership']['owner']}"
    with unchanged(db_session):
        assert_problem(api.patch(url, org["admin"].token, json={"role": "member"}), 403)
        assert_problem(api.delete(url, org["admin"].token), 403)


def test_the_last_owner_can_be_neither_demoted_nor_removed(api, org, db_session):
    url = f"{ORGS}/{org['id']}/members/{org['membership']['owner']}"
    with unchanged(db_session):
        for role in ("admin", "member"):
            assert_problem(api.patch(url, org["owner"].token, json={"role": role}), 409)
        assert_problem(api.delete(url, org["owner"].token), 409)


def test_not_even_a_platform_admin_removes_the_last_owner(api, app, org, db_session):
    admin = api.admin(app)
    url = f"{ORGS}/{org['id']}/members/{org['membership']['owner']}"
    with unchanged(db_session):
        assert_problem(api.patch(url, admin.token, json={"role": "member"}), 409)
        assert_problem(api.delete(url, admin.token), 409)


def test_with_two_owners_one_may_step_down(api, org, db_session):
    promote = api.patch(
        f"{ORGS}/{org['id']}/members/{org['membership']['admin']}",
        org["owner"].token,
        json={"role": "owner"},
    )
    assert promote.status_code == 200
    step_down = api.patch(
        f"{ORGS}/{org['id']}/members/{org['membership']['owner']}",
        org["owner"].token,
        json={"role": "admin"},
    )
    assert step_down.status_code == 200
    roles = {m["user_id"]: m["role"] for m in _members(api, org["admin"], org["id"]).values()}
    assert roles[org["admin"].user["id"]] == "owner"
    assert roles[org["owner"].user["id"]] == "admin"
    # and the new sole owner is protected in turn
    assert_problem(
        api.delete(f"{ORGS}/{org['id']}/members/{org['membership']['admin']}", org["admin"].token),
        409,
    )


def _race(app, calls):
    """Run (method, path, token, body) calls at the same instant; returns their statuses."""
    barrier = threading.Barrier(len(calls))
    statuses: list[int | None] = [None] * len(calls)
    failures: list[BaseException] = []

    def run(index, method, path, token, body):
        try:
            client = app.test_client()
            barrier.wait(timeout=10)
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            response = client.open(path, method=method, json=body, headers=headers)
            statuses[index] = response.status_code
        except BaseException as error:
            failures.append(error)

    threads = [threading.Thread(target=run, args=(i, *call)) for i, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not failures, failures
    return statuses


@pytest.mark.parametrize("how", ["demote", "remove"])
def test_two_owners_ousting_each_other_at_once_leave_one_owner(api, app, org, db_session, how):
    first, second = org["owner"], org["admin"]
    members = org["membership"]
    for _round in range(3):
        # make `second` an owner again (a removed one is added back first)
        mine = _members(api, first, org["id"])
        if second.user["id"] not in mine:
            added = api.post(
                f"{ORGS}/{org['id']}/members",
                first.token,
                json={"email": second.email, "role": "owner"},
            )
            assert added.status_code == 201, added.get_json()
            members = {**members, "admin": added.get_json()["id"]}
        else:
            api.patch(
                f"{ORGS}/{org['id']}/members/{members['admin']}",
                first.token,
                json={"role": "owner"},
            )
        if how == "demote":
            calls = [
                (
                    "PATCH",
                    f"{ORGS}/{org['id']}/members/{members['admin']}",
                    first.token,
                    {"role": "member"},
                ),
                (
                    "PATCH",
                    f"{ORGS}/{org['id']}/members/{members['owner']}",
                    second.token,
                    {"role": "member"},
                ),
            ]
        else:
            calls = [
                ("DELETE", f"{ORGS}/{org['id']}/members/{members['admin']}", first.token, None),
                ("DELETE", f"{ORGS}/{org['id']}/members/{members['owner']}", second.token, None),
            ]
        statuses = _race(app, calls)
        # the loser is refused as the last owner (409), or, when it came in after the winner
        # had finished, as someone who no longer has the standing to ask (403/404)
        assert sorted(statuses) in ([200, 409], [200, 403], [204, 409], [204, 404]), statuses
        db_session.rollback()
        owners = db_session.scalars(
            select(Membership.user_id).where(
                Membership.organization_id == org["id"], Membership.role == Role.OWNER
            )
        ).all()
        assert len(owners) == 1, (statuses, owners)
        if owners[0] != first.user["id"]:  # `second` won: swap roles for the next round
            first, second = second, first
            members = {"owner": members["admin"], "admin": members["owner"]}


def test_concurrent_adds_of_one_person_make_one_membership(api, app, org, db_session):
    newcomer = api.signup("client")
    body = {"email": newcomer.email}
    path = f"{ORGS}/{org['id']}/members"
    statuses = _race(
        app,
        [("POST", path, org["owner"].token, body), ("POST", path, org["admin"].token, body)] * 3,
    )
    assert sorted(statuses) == [201, 409, 409, 409, 409, 409], statuses
    db_session.rollback()
    joined = db_session.scalars(
        select(Membership).where(
            Membership.organization_id == org["id"], Membership.user_id == newcomer.user["id"]
        )
    ).all()
    assert len(joined) == 1
    events = db_session.scalars(
        select(AuditEvent).where(
            AuditEvent.action == "membership.added", AuditEvent.object_id == str(joined[0].id)
        )
    ).all()
    assert len(events) == 1  # the refused attempts left no audit trail


def test_platform_admins_see_every_organization(api, app, org):
    other = api.signup("vendor")
    admin = api.admin(app)
    listed = api.get(f"{ORGS}?limit=200", admin.token).get_json()["items"]
    assert {org["id"], other.organization["id"]} <= {o["id"] for o in listed}
    assert api.get(f"{ORGS}/{org['id']}", admin.token).status_code == 200


def test_concurrent_sign_ups_with_one_email_make_one_account_and_one_organization(
    api, app, db_session
):
    bodies = [
        {
            "email": f"Race.Winner@{domain}",
            "password": "correct horse battery",
            "name": f"Racer {n}",
            "account_type": "client",
            "organization": f"Race org {n}",
        }
        for n, domain in enumerate(["example.org", "EXAMPLE.org", "Example.Org"] * 2)
    ]
    statuses = _race(app, [("POST", "/api/v1/auth/signup", None, body) for body in bodies])
    assert sorted(statuses) == [201, 409, 409, 409, 409, 409], statuses
    db_session.rollback()
    assert db_session.scalar(select(func.count()).select_from(User)) == 1
    assert db_session.scalar(select(func.count()).select_from(Organization)) == 1
    assert db_session.scalar(select(func.count()).select_from(Membership)) == 1
