"""Attacks on the API conventions every route shares (DESIGN.md invariant 5).

Bad input of every kind gets a 4xx `application/problem+json` answer naming the problem,
and the database is exactly as it was before: `unchanged()` compares every row of every table.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from marketplace import clock
from marketplace.accounts.models import Organization, OrgKind, User, UserStatus
from marketplace.database import db
from tests.conftest import build_app
from tests.helpers import PASSWORD, assert_problem

ORGS = "/api/v1/organizations"
MAX_JSON = 1024 * 1024
INT64_MAX = 2**63 - 1


def db_snapshot(session: Session) -> dict[str, list]:
    """Every row of every table, in primary-key order."""
    session.rollback()  # read what is committed now, not what an open transaction saw
    return {
        table.name: [
            tuple(row) for row in session.execute(select(table).order_by(*table.primary_key))
        ]
        for table in db.metadata.sorted_tables
    }


@contextmanager
def unchanged(session: Session) -> Iterator[None]:
    """Assert that whatever runs inside the block leaves the database exactly as it was."""
    before = db_snapshot(session)
    yield
    after = db_snapshot(session)
    changed = [name for name in before if before[name] != after[name]]
    assert not changed, f"tables changed: {changed}"


@pytest.fixture
def owner(api):
    return api.signup("client", organization="Acme Vision")


def _post_org(api, token, **kw):
    return api.post(ORGS, token, **kw)


# --- bodies ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b'{"name": "Acme", "kind": "client"',
        b"{'name': 'Acme', 'kind': 'client'}",
        b'{"name": "Acme", "kind": "client"} trailing',
        b'{"name": "Acme", "kind": "client",}',
        b'{"name": NaN, "kind": "client"}',
        b'{"name": "Acme", "kind": "client", "n": Infinity}',
        b'{"name": "\xff\xfe", "kind": "client"}',
        b"   ",
        b"[" * 100_000,
    ],
    ids=[
        "truncated",
        "single-quotes",
        "trailing-garbage",
        "trailing-comma",
        "nan",
        "infinity",
        "not-utf8",
        "whitespace",
        "nested-too-deep",
    ],
)
def test_malformed_json_is_400_saying_the_json_is_invalid(api, owner, db_session, raw):
    with unchanged(db_session):
        response = _post_org(api, owner.token, data=raw, content_type="application/json")
    body = assert_problem(response, 400)
    assert body["detail"].startswith("The request body is not valid JSON"), body
    assert "browser" not in body["detail"]


@pytest.mark.parametrize(
    "content_type",
    [
        "application/x-www-form-urlencoded",
        "text/plain",
        "application/xml",
        "multipart/form-data; boundary=x",
        None,
    ],
)
def test_wrong_content_type_is_415(api, owner, db_session, content_type):
    raw = json.dumps({"name": "Acme 2", "kind": "client"}).encode()
    with unchanged(db_session):
        response = _post_org(api, owner.token, data=raw, content_type=content_type)
    body = assert_problem(response, 415)
    assert "application/json" in body["detail"]


def test_json_with_a_vendor_suffix_and_charset_is_accepted(api, owner):
    raw = json.dumps({"name": "Acme 2", "kind": "client"}).encode()
    response = _post_org(
        api, owner.token, data=raw, content_type="application/problem+json; charset=utf-8"
    )
    assert response.status_code == 201, response.get_json()


def test_oversized_body_is_413(api, owner, db_session):
    body = {"name": "x" * (MAX_JSON + 1), "kind": "client"}
    with unchanged(db_session):
        response = _post_org(api, owner.token, json=body)
    assert "1048576" in assert_problem(response, 413)["detail"]


def test_oversized_chunked_body_without_content_length_is_413(api, owner, db_session):
    # Chunked transfer carries no Content-Length; werkzeug stops reading at the limit
    # without complaint, which must not turn into a silently truncated (or accepted) body.
    raw = b'{"name": "Acme 2", "kind": "client"}' + b" " * (MAX_JSON + 10)
    with unchanged(db_session):
        response = _post_org(
            api,
            owner.token,
            input_stream=io.BytesIO(raw),
            content_type="application/json",
            headers={"Transfer-Encoding": "chunked"},
            environ_overrides={"wsgi.input_terminated": True},
        )
    assert_problem(response, 413)


def test_small_chunked_body_is_read_normally(api, owner):
    raw = json.dumps({"name": "Chunked Co", "kind": "client"}).encode()
    response = _post_org(
        api,
        owner.token,
        input_stream=io.BytesIO(raw),
        content_type="application/json",
        headers={"Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert response.status_code == 201, response.get_json()


def test_content_length_above_the_limit_is_413_before_reading(api, owner, db_session):
    raw = json.dumps({"name": "Acme 2", "kind": "client"}).encode()
    with unchanged(db_session):
        response = _post_org(
            api,
            owner.token,
            input_stream=io.BytesIO(raw),
            content_type="application/json",
            environ_overrides={"CONTENT_LENGTH": str(MAX_JSON + 1)},
        )
    assert_problem(response, 413)


def test_content_length_that_understates_the_body_does_not_smuggle_the_rest(api, owner, db_session):
    raw = json.dumps({"name": "x" * (2 * MAX_JSON), "kind": "client"}).encode()
    with unchanged(db_session):
        response = _post_org(
            api,
            owner.token,
            input_stream=io.BytesIO(raw),
            content_type="application/json",
            environ_overrides={"CONTENT_LENGTH": "20"},
        )
    assert_problem(response, 400)  # only 20 bytes are read: not a whole JSON document


def test_a_body_just_under_the_limit_reaches_validation(api, owner, db_session):
    body = {"name": "x" * (MAX_JSON - 100), "kind": "client"}
    with unchanged(db_session):
        response = _post_org(api, owner.token, json=body)
    assert_problem(response, 422, field="name")


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"name": "Acme 2", "kind": "client", "color": "red"}, ["color"]),
        ({"name": "Acme 2", "kind": "client", "id": 7}, ["id"]),
        ({}, ["name", "kind"]),
        ({"kind": "client"}, ["name"]),
        ({"name": 123, "kind": ["client"]}, ["name", "kind"]),
        ({"name": None, "kind": "client"}, ["name"]),
        ({"name": {"first": "Acme"}, "kind": True}, ["name", "kind"]),
        ({"name": "", "kind": "client"}, ["name"]),
        ({"name": "x" * 201, "kind": "client"}, ["name"]),
        ({"name": "Acme 2", "kind": "galaxy"}, ["kind"]),
        ({"name": "Acme 2", "kind": "platform"}, ["kind"]),
    ],
    ids=[
        "unknown-field",
        "read-only-field",
        "empty",
        "missing-name",
        "wrong-types",
        "null",
        "object-and-bool",
        "too-short",
        "too-long",
        "bad-enum",
        "forbidden-kind",
    ],
)
def test_invalid_fields_are_422_naming_each_field(api, owner, db_session, body, fields):
    with unchanged(db_session):
        response = _post_org(api, owner.token, json=body)
    problem = assert_problem(response, 422)
    assert problem["type"] == "/problems/validation-error"
    assert sorted(problem["errors"]) == sorted(fields), problem
    for name in fields:
        assert name in problem["detail"]


@pytest.mark.parametrize("raw", ["[]", '[{"name": "Acme 2", "kind": "client"}]', "7", '"Acme"'])
def test_a_body_that_is_not_an_object_is_422(api, owner, db_session, raw):
    with unchanged(db_session):
        response = _post_org(api, owner.token, data=raw, content_type="application/json")
    assert_problem(response, 422, field="_schema")


@pytest.mark.parametrize("raw", ["null", "true"])
def test_null_or_boolean_body_is_4xx_not_500(api, owner, db_session, raw):
    with unchanged(db_session):
        response = _post_org(api, owner.token, data=raw, content_type="application/json")
    assert_problem(response, 422)


def test_signup_with_a_non_object_body_is_422(api, db_session):
    with unchanged(db_session):
        response = api.post("/api/v1/auth/signup", data="[1, 2]", content_type="application/json")
    assert_problem(response, 422)


# --- values no column can store --------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "errors"),
    [
        ('{"name": "Acme\\u0000Vision", "kind": "client"}', {"name"}),
        ('{"name": "Acme", "kind": "client\\u0000"}', {"kind"}),
        ('{"name": "\\ud800 lone surrogate", "kind": "client"}', {"name"}),
        ('{"name": "Acme", "kind": "client", "n": 99999999999999999999}', {"n"}),
        ('{"name": "Acme", "kind": "client", "n": -9223372036854775809}', {"n"}),
        ('{"name": "Acme", "kind": "client", "n": 1e400}', {"n"}),
        ('{"name": "Acme", "kind": "client", "deep": {"a": ["ok", "\\u0000"]}}', {"deep"}),
        ('{"name": "Acme", "kind": "client", "bad\\u0000key": 1}', {"bad\\u0000key"}),
    ],
    ids=[
        "nul",
        "nul-in-enum",
        "surrogate",
        "huge-int",
        "huge-negative",
        "overflowing-float",
        "nested",
        "nul-in-key",
    ],
)
def test_values_no_column_can_store_are_422_naming_the_field(api, owner, db_session, raw, errors):
    with unchanged(db_session):
        response = _post_org(api, owner.token, data=raw, content_type="application/json")
    problem = assert_problem(response, 422)
    assert set(problem["errors"]) == errors, problem


def test_nested_nul_errors_say_where(api, owner):
    raw = json.dumps({"name": "Acme", "kind": "client", "deep": {"a": ["ok", "\x00"]}})
    response = _post_org(api, owner.token, data=raw, content_type="application/json")
    assert assert_problem(response, 422)["errors"] == {
        "deep": {"a": {"1": ["Must not contain NUL (\\u0000) characters."]}}
    }


def test_nul_bytes_in_signup_fields_are_422_and_create_no_user(api, db_session):
    body = {
        "email": "nul\x00@example.org",
        "password": PASSWORD + "\x00",
        "name": "N\x00",
        "account_type": "client",
        "organization": "Org\x00",
    }
    with unchanged(db_session):
        response = api.post("/api/v1/auth/signup", json=body)
    problem = assert_problem(response, 422)
    assert set(problem["errors"]) == {"email", "password", "name", "organization"}


def test_nul_in_a_query_string_is_422(api, owner, db_session):
    org_id = owner.organization["id"]
    with unchanged(db_session):
        response = api.get(f"{ORGS}/{org_id}/audit-events?action=a%00b", owner.token)
    assert_problem(response, 422, field="action")


def test_unicode_round_trips(api, owner):
    name = "Ωmega 🚀 مرحبا 中文 e\u0301 \u200d"
    response = _post_org(api, owner.token, json={"name": name, "kind": "vendor"})
    assert response.status_code == 201, response.get_json()
    org_id = response.get_json()["id"]
    assert api.get(f"{ORGS}/{org_id}", owner.token).get_json()["name"] == name.strip()


@pytest.mark.parametrize(
    "body",
    [
        {"email": "a" * 100_000 + "@example.org", "password": PASSWORD, "name": "Long"},
        {"email": "long@example.org", "password": "p" * 100_000, "name": "Long"},
        {"email": "long@example.org", "password": PASSWORD, "name": "n" * 100_000},
    ],
    ids=["email", "password", "name"],
)
def test_very_long_strings_are_422(api, db_session, body):
    with unchanged(db_session):
        response = api.post("/api/v1/auth/signup", json={**body, "account_type": "worker"})
    assert_problem(response, 422)


def test_very_long_email_when_adding_a_member_is_4xx(api, owner, db_session):
    org_id = owner.organization["id"]
    with unchanged(db_session):
        response = api.post(
            f"{ORGS}/{org_id}/members", owner.token, json={"email": "a" * 300_000 + "@x.org"}
        )
    assert_problem(response, 422, field="email")


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/organizations/99999999999999999999",
        "/api/v1/organizations/9223372036854775808",
        "/api/v1/organizations/99999999999999999999/members",
        "/api/v1/organizations/99999999999999999999/audit-events",
        "/api/v1/organizations/1/members/99999999999999999999",
        "/api/v1/organizations/-1",
        "/api/v1/organizations/1e3",
    ],
)
@pytest.mark.parametrize("method", ["GET", "PATCH", "DELETE"])
def test_out_of_range_ids_in_the_url_are_404(api, app, db_session, path, method):
    admin = api.admin(app)  # a platform admin passes the tenant check and reaches the query
    with unchanged(db_session):
        body = {"name": "x"} if method == "PATCH" else None
        response = api.call(method, path, admin.token, json=body)
    assert response.status_code in (404, 405), response.get_data(as_text=True)
    assert_problem(response, response.status_code)


@pytest.mark.parametrize("method", ["GET", "PATCH"])
def test_the_largest_bigint_id_is_a_plain_404(api, app, method):
    admin = api.admin(app)
    response = api.call(method, f"{ORGS}/{INT64_MAX}", admin.token, json={"name": "x"})
    assert_problem(response, 404)


# --- routes and methods ----------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/api/v1/nope", "/nope", "/api/v2/organizations", "/api/v1/organizations/x"]
)
def test_unknown_routes_are_404_problems(api, owner, path):
    body = assert_problem(api.get(path, owner.token), 404)
    assert "requested URL" not in body["detail"]


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("DELETE", ORGS, {"GET", "POST"}),
        ("PUT", "/api/v1/account", {"GET", "PATCH"}),
        ("GET", "/api/v1/auth/login", {"POST"}),
        ("POST", f"{ORGS}/1", {"GET", "PATCH"}),
    ],
)
def test_wrong_method_is_405_with_allow(api, owner, db_session, method, path, allowed):
    with unchanged(db_session):
        response = api.call(method, path, owner.token, json={})
    assert_problem(response, 405)
    listed = {m.strip() for m in response.headers["Allow"].split(",")}
    assert allowed <= listed
    assert method not in listed


def test_head_behaves_like_get_without_a_body(api, owner):
    response = api.call("HEAD", "/api/v1/account", owner.token)
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.get_data() == b""
    anonymous = api.call("HEAD", "/api/v1/account")
    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"].startswith("Bearer")


def test_options_lists_the_methods_and_needs_no_token(api, db_session):
    with unchanged(db_session):
        response = api.call("OPTIONS", ORGS)
    assert response.status_code == 200
    assert {"GET", "POST", "OPTIONS"} <= {m.strip() for m in response.headers["Allow"].split(",")}
    assert_problem(api.call("OPTIONS", "/api/v1/nope"), 404)


# --- tokens ----------------------------------------------------------------------------


def test_missing_token_is_401_with_a_bare_challenge(api, db_session):
    with unchanged(db_session):
        response = api.post(ORGS, json={"name": "Anon", "kind": "client"})
    assert_problem(response, 401)
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="crowdline"'


@pytest.mark.parametrize(
    "header", ["Token abc", "Bearer", "Bearer    ", "Basic dXNlcjpwYXNz", "bearer\tabc", "abc"]
)
def test_malformed_authorization_header_is_401_invalid_request(api, owner, db_session, header):
    with unchanged(db_session):
        response = api.post(
            ORGS, json={"name": "Bad", "kind": "client"}, headers={"Authorization": header}
        )
    assert_problem(response, 401)
    assert 'error="invalid_request"' in response.headers["WWW-Authenticate"]


@pytest.mark.parametrize("token", ["cla_not-a-real-token", "x" * 5000, "ünïcødé"])
def test_unknown_token_is_401_invalid_token(api, owner, db_session, token):
    with unchanged(db_session):
        response = api.post(
            ORGS,
            json={"name": "Bad", "kind": "client"},
            headers={"Authorization": f"Bearer {token}"},
        )
    assert_problem(response, 401)
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


def test_revoked_token_is_401(api, owner, db_session):
    assert api.post("/api/v1/auth/logout", owner.token).status_code == 204
    with unchanged(db_session):
        response = _post_org(api, owner.token, json={"name": "After logout", "kind": "client"})
        read = api.get(ORGS, owner.token)
    assert "revoked" in assert_problem(response, 401)["detail"]
    assert_problem(read, 401)
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


def test_expired_token_is_401(api, manual_clock, db_session):
    account = api.signup("client")  # the token is issued on the manual clock
    token = api.login(account.email)
    manual_clock.advance(token["expires_in"] - 1)
    assert api.get("/api/v1/account", token["access_token"]).status_code == 200
    manual_clock.advance(2)
    with unchanged(db_session):
        response = _post_org(
            api, token["access_token"], json={"name": "Too late", "kind": "client"}
        )
    assert "expired" in assert_problem(response, 401)["detail"]
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


def test_token_of_a_disabled_user_is_401(api, owner, db_session):
    user = db_session.get(User, owner.user["id"])
    user.status = UserStatus.DISABLED
    db_session.commit()
    with unchanged(db_session):
        response = _post_org(api, owner.token, json={"name": "Disabled", "kind": "client"})
        read = api.get(f"{ORGS}/{owner.organization['id']}", owner.token)
    assert_problem(response, 401)
    assert_problem(read, 401)


def test_a_token_narrowed_to_account_cannot_manage_organizations(api, db_session):
    account = api.signup("client", scope="account")
    assert api.get("/api/v1/account", account.token).status_code == 200
    with unchanged(db_session):
        response = _post_org(api, account.token, json={"name": "Scoped", "kind": "client"})
        listing = api.get(ORGS, account.token)
    body = assert_problem(response, 403)
    assert body["type"] == "/problems/insufficient-scope"
    assert body["required_scopes"] == ["org:write"]
    challenge = response.headers["WWW-Authenticate"]
    assert 'error="insufficient_scope"' in challenge
    assert 'scope="org:write"' in challenge
    assert assert_problem(listing, 403)["required_scopes"] == ["org:read"]


def test_login_cannot_widen_or_invent_scopes(api, db_session):
    worker = api.signup("worker")
    with unchanged(db_session):
        wider = api.post(
            "/api/v1/auth/login",
            json={"email": worker.email, "password": PASSWORD, "scope": "tasks org:write"},
        )
        unknown = api.post(
            "/api/v1/auth/login",
            json={"email": worker.email, "password": PASSWORD, "scope": "root"},
        )
    assert_problem(wider, 403)
    assert_problem(unknown, 422, field="scope")


def test_a_worker_token_cannot_reach_organizations(api, db_session):
    worker = api.signup("worker")
    with unchanged(db_session):
        response = _post_org(api, worker.token, json={"name": "Worker org", "kind": "client"})
    assert assert_problem(response, 403)["type"] == "/problems/insufficient-scope"


# --- tenants and roles -----------------------------------------------------------------


@pytest.fixture
def tenants(api):
    """Two client organizations, A and B, each with its owner; B's owner is the intruder."""
    a = api.signup("client", organization="Tenant A")
    b = api.signup("client", organization="Tenant B")
    return a, b


def _a_paths(a, api):
    org_id = a.organization["id"]
    members = api.get(f"{ORGS}/{org_id}/members", a.token).get_json()["items"]
    return org_id, members[0]["id"]


def test_cross_tenant_reads_are_404(api, tenants, db_session):
    a, b = tenants
    org_id, membership_id = _a_paths(a, api)
    with unchanged(db_session):
        for path in (
            f"{ORGS}/{org_id}",
            f"{ORGS}/{org_id}/members",
            f"{ORGS}/{org_id}/audit-events",
        ):
            assert_problem(api.get(path, b.token), 404)
        listing = api.get(ORGS, b.token).get_json()["items"]
    assert [o["id"] for o in listing] == [b.organization["id"]]


def test_cross_tenant_writes_are_404_and_change_nothing(api, tenants, db_session):
    a, b = tenants
    org_id, membership_id = _a_paths(a, api)
    writes = [
        ("PATCH", f"{ORGS}/{org_id}", {"name": "Pwned"}),
        ("POST", f"{ORGS}/{org_id}/members", {"email": b.email, "role": "owner"}),
        ("PATCH", f"{ORGS}/{org_id}/members/{membership_id}", {"role": "member"}),
        ("DELETE", f"{ORGS}/{org_id}/members/{membership_id}", None),
    ]
    with unchanged(db_session):
        for method, path, body in writes:
            response = api.call(method, path, b.token, json=body)
            assert_problem(response, 404)


def test_a_foreign_organization_looks_exactly_like_a_missing_one(api, tenants):
    a, b = tenants
    foreign = api.get(f"{ORGS}/{a.organization['id']}", b.token).get_json()
    missing = api.get(f"{ORGS}/{a.organization['id'] + 1000}", b.token).get_json()
    for key in ("type", "title", "status"):
        assert foreign[key] == missing[key]
    assert foreign["detail"].replace(str(a.organization["id"]), "N") == missing["detail"].replace(
        str(a.organization["id"] + 1000), "N"
    )


def test_a_membership_of_another_tenant_cannot_be_reached_through_your_own_org(
    api, tenants, db_session
):
    a, b = tenants
    _, b_membership = _a_paths(b, api)
    own = a.organization["id"]
    with unchanged(db_session):
        assert_problem(
            api.patch(f"{ORGS}/{own}/members/{b_membership}", a.token, json={"role": "admin"}),
            404,
        )
        assert_problem(api.delete(f"{ORGS}/{own}/members/{b_membership}", a.token), 404)


def test_a_plain_member_cannot_do_admin_things_in_their_own_org(api, tenants, db_session):
    a, _ = tenants
    colleague = api.signup("client")
    org_id = a.organization["id"]
    added = api.post(f"{ORGS}/{org_id}/members", a.token, json={"email": colleague.email})
    assert added.status_code == 201, added.get_json()
    _, owner_membership = _a_paths(a, api)
    third = api.signup("client")
    with unchanged(db_session):
        assert api.get(f"{ORGS}/{org_id}", colleague.token).status_code == 200
        assert api.get(f"{ORGS}/{org_id}/members", colleague.token).status_code == 200
        attempts = [
            ("PATCH", f"{ORGS}/{org_id}", {"name": "Mine now"}),
            ("POST", f"{ORGS}/{org_id}/members", {"email": third.email}),
            ("PATCH", f"{ORGS}/{org_id}/members/{owner_membership}", {"role": "member"}),
            ("PATCH", f"{ORGS}/{org_id}/members/{added.get_json()['id']}", {"role": "admin"}),
            ("DELETE", f"{ORGS}/{org_id}/members/{owner_membership}", None),
            ("GET", f"{ORGS}/{org_id}/audit-events", None),
            ("GET", "/api/v1/audit-events", None),
        ]
        for method, path, body in attempts:
            response = api.call(method, path, colleague.token, json=body)
            assert_problem(response, 403)


# --- failures on our side --------------------------------------------------------------


def test_an_unexpected_exception_is_a_500_problem_without_a_trace_and_rolls_back(db_session):
    crashing = build_app()

    def explode():
        db.session.add(
            Organization(name="half-written", kind=OrgKind.CLIENT, created_at=clock.now())
        )
        db.session.flush()
        raise RuntimeError("secret internal detail at /srv/crowdline/app.py line 42")

    crashing.add_url_rule("/api/v1/test-explode", "explode", explode, methods=["POST"])
    try:
        with unchanged(db_session):
            response = crashing.test_client().post("/api/v1/test-explode", json={})
        body = assert_problem(response, 500)
        text = response.get_data(as_text=True)
        for leak in ("Traceback", "RuntimeError", "secret", "/srv/", ".py"):
            assert leak not in text
        assert set(body) <= {"type", "title", "status", "detail", "instance"}
    finally:
        with crashing.app_context():
            db.engine.dispose()
