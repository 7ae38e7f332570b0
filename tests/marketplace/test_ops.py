"""Operations: health checks, the sandbox clock, and platform administration of users."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from marketplace.accounts.models import User, UserStatus
from marketplace.database import db
from marketplace.models import AuditEvent, ClockState
from marketplace.oauth.models import OAuthToken
from tests.conftest import build_app
from tests.helpers import PASSWORD, Api, assert_problem

CLOCK = "/api/v1/sandbox/clock"


def _parse(instant: str) -> datetime:
    return datetime.fromisoformat(instant)


def _audit(db_session, action: str) -> list[AuditEvent]:
    return list(db_session.scalars(select(AuditEvent).where(AuditEvent.action == action)))


# --- health ---------------------------------------------------------------------------------


def test_healthz_answers_without_touching_dependencies(api):
    response = api.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_readyz_reports_each_dependency(app, api):
    response = api.get("/readyz")
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["status"] == "ok"
    assert body["checks"]["database"] == "ok"
    if app.config["CROWDLINE"].redis_url:
        assert body["checks"]["redis"] == "ok"
    else:
        assert body["checks"]["redis"].startswith("not configured")


@pytest.mark.parametrize(
    "database_url",
    [
        f"sqlite:////nonexistent-{uuid.uuid4().hex}/crowdline.db",
        "postgresql+psycopg://postgres@127.0.0.1:1/crowdline?connect_timeout=3",
    ],
    ids=["sqlite-unopenable-file", "postgresql-closed-port"],
)
def test_readyz_is_a_503_problem_when_the_database_is_unreachable(app, database_url):
    broken = build_app(database_url=database_url)
    client = broken.test_client()

    response = client.get("/readyz")
    body = assert_problem(response, 503)
    assert body["checks"]["database"].startswith("unreachable"), body
    assert client.get("/healthz").status_code == 200  # alive, just not ready
    with broken.app_context():
        db.engine.dispose()


def test_readyz_is_a_503_problem_when_redis_is_unreachable(app):
    broken = build_app(redis_url="redis://127.0.0.1:1/0")
    body = assert_problem(broken.test_client().get("/readyz"), 503)
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["redis"].startswith("unreachable"), body
    with broken.app_context():
        db.engine.dispose()


# --- sandbox clock --------------------------------------------------------------------------


@pytest.fixture
def sandbox_app(app):
    """A second app on the same database, started with CROWDLINE_SANDBOX=1."""
    sandbox = build_app(sandbox=True)
    yield sandbox
    with sandbox.app_context():
        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def sandbox_api(sandbox_app) -> Api:
    return Api(sandbox_app.test_client())


def test_the_sandbox_clock_is_refused_when_the_server_is_not_a_sandbox(app, api, db_session):
    admin = api.admin(app)
    for response in (
        api.get(CLOCK, admin.token),
        api.post(CLOCK, admin.token, json={"advance_seconds": 60}),
    ):
        body = assert_problem(response, 403)
        assert "CROWDLINE_SANDBOX" in body["detail"]
    assert db_session.get(ClockState, 1) is None
    assert _audit(db_session, "sandbox.clock_moved") == []


def test_a_platform_admin_reads_the_sandbox_clock(sandbox_app, sandbox_api):
    admin = sandbox_api.admin(sandbox_app)
    response = sandbox_api.get(CLOCK, admin.token)
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["sandbox"] is True
    assert body["frozen"] is False
    assert body["offset_seconds"] == 0
    assert abs(_parse(body["now"]) - datetime.now(UTC)) < timedelta(seconds=5)


def test_advancing_the_sandbox_clock_moves_it_forward_and_is_audited(
    sandbox_app, sandbox_api, db_session
):
    admin = sandbox_api.admin(sandbox_app)
    first = sandbox_api.post(CLOCK, admin.token, json={"advance_seconds": 90})
    assert first.status_code == 200, first.get_json()
    assert first.get_json()["offset_seconds"] == pytest.approx(90, abs=5)
    assert _parse(first.get_json()["now"]) - datetime.now(UTC) > timedelta(seconds=85)

    second = sandbox_api.post(CLOCK, admin.token, json={"advance_seconds": 30.5})
    assert second.get_json()["offset_seconds"] == pytest.approx(120.5, abs=5)
    read = sandbox_api.get(CLOCK, admin.token).get_json()
    assert read["offset_seconds"] == pytest.approx(120.5, abs=5)

    events = _audit(db_session, "sandbox.clock_moved")
    assert len(events) == 2
    assert events[0].actor_user_id == admin.user["id"]
    assert set(events[0].detail) == {"from", "to", "frozen"}


def test_setting_and_freezing_the_clock_is_the_time_the_whole_server_reads(
    sandbox_app, sandbox_api
):
    admin = sandbox_api.admin(sandbox_app)
    target = "2031-01-01T00:00:00+00:00"
    response = sandbox_api.post(CLOCK, admin.token, json={"set": target, "frozen": True})
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["frozen"] is True
    assert _parse(response.get_json()["now"]) == _parse(target)

    # Tokens are dated by the clock too, so sign in again at the new time.
    token = sandbox_api.login(admin.email)["access_token"]
    time.sleep(0.05)
    assert _parse(sandbox_api.get(CLOCK, token).get_json()["now"]) == _parse(target)

    # Every rule reads this clock: a sign-up now is stamped with the simulated instant.
    worker = sandbox_api.signup("worker")
    assert _parse(worker.user["created_at"]) == _parse(target)

    moved = sandbox_api.post(CLOCK, token, json={"advance_seconds": 8}).get_json()
    assert moved["frozen"] is True  # moving a frozen clock keeps it frozen
    assert _parse(moved["now"]) == _parse(target) + timedelta(seconds=8)

    thawed = sandbox_api.post(CLOCK, token, json={"frozen": False}).get_json()
    assert thawed["frozen"] is False
    assert _parse(thawed["now"]) - _parse(target) == pytest.approx(
        timedelta(seconds=8), abs=timedelta(seconds=5)
    )


def test_only_a_platform_admin_may_touch_the_sandbox_clock(sandbox_api, db_session):
    for account_type in ("client", "vendor", "worker"):
        account = sandbox_api.signup(account_type)
        assert_problem(sandbox_api.get(CLOCK, account.token), 403)
        assert_problem(sandbox_api.post(CLOCK, account.token, json={"advance_seconds": 5}), 403)
    assert_problem(sandbox_api.get(CLOCK), 401)
    assert db_session.get(ClockState, 1) is None


BAD_CLOCK_MOVES = [
    ({"advance_seconds": -5}, "advance_seconds"),
    ({"advance_seconds": "soon"}, "advance_seconds"),
    ({"advance_seconds": 10 * 365 * 24 * 3600 + 1}, "advance_seconds"),
    ({"set": "yesterday"}, "set"),
    ({"set": "2031-01-01T00:00:00"}, "set"),  # no offset: ambiguous
    ({"frozen": "maybe"}, "frozen"),
    ({"advance_seconds": 5, "set": "2031-01-01T00:00:00Z"}, "_schema"),
    ({}, "_schema"),
    ({"advance": 5}, "advance"),
]


def test_bad_clock_moves_are_422_naming_the_field_and_change_nothing(
    sandbox_app, sandbox_api, db_session
):
    admin = sandbox_api.admin(sandbox_app)
    for body, field in BAD_CLOCK_MOVES:
        response = sandbox_api.post(CLOCK, admin.token, json=body)
        assert response.status_code == 422, (body, response.get_json())
        assert_problem(response, 422, field=field)
    assert db_session.get(ClockState, 1) is None
    assert _audit(db_session, "sandbox.clock_moved") == []


# --- user administration --------------------------------------------------------------------


def test_a_platform_admin_pages_through_every_account(app, api):
    admin = api.admin(app)
    emails = {api.signup(kind).email for kind in ("client", "vendor", "worker", "worker")}
    emails.add(admin.email)

    seen, cursor, pages = [], None, 0
    while True:
        query = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        response = api.get("/api/v1/admin/users", admin.token, query_string=query)
        assert response.status_code == 200, response.get_json()
        page = response.get_json()
        seen += [user["email"] for user in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            assert "Link" not in response.headers
            break
        assert 'rel="next"' in response.headers["Link"]
        assert f"cursor={cursor}" in response.headers["Link"]
    assert sorted(seen) == sorted(emails)
    assert pages == 3

    found = api.get("/api/v1/admin/users", admin.token, query_string={"email": admin.email.upper()})
    assert [u["email"] for u in found.get_json()["items"]] == [admin.email]


def test_user_administration_is_for_platform_admins_only(api):
    client = api.signup("client")
    other = api.signup("worker")
    assert_problem(api.get("/api/v1/admin/users", client.token), 403)
    response = api.post(
        f"/api/v1/admin/users/{other.user['id']}/status",
        client.token,
        json={"status": "disabled", "reason": "because"},
    )
    assert_problem(response, 403)
    assert api.get("/api/v1/account", other.token).status_code == 200


def test_disabling_an_account_signs_it_out_everywhere_and_is_audited(app, api, db_session):
    admin = api.admin(app)
    worker = api.signup("worker")
    second_session = api.login(worker.email)

    response = api.post(
        f"/api/v1/admin/users/{worker.user['id']}/status",
        admin.token,
        json={"status": "disabled", "reason": "shared account"},
    )
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["status"] == "disabled"

    assert_problem(api.get("/api/v1/account", worker.token), 401)
    assert_problem(api.get("/api/v1/account", second_session["access_token"]), 401)
    tokens = list(
        db_session.scalars(select(OAuthToken).where(OAuthToken.user_id == worker.user["id"]))
    )
    assert len(tokens) == 2
    assert all(t.access_revoked_at and t.refresh_revoked_at for t in tokens)
    login = api.post("/api/v1/auth/login", json={"email": worker.email, "password": PASSWORD})
    assert_problem(login, 403)

    (event,) = _audit(db_session, "user.status_changed")
    assert event.actor_user_id == admin.user["id"]
    assert event.object_type == "user"
    assert event.object_id == str(worker.user["id"])
    assert event.detail == {"from": "active", "to": "disabled", "reason": "shared account"}

    enabled = api.post(
        f"/api/v1/admin/users/{worker.user['id']}/status",
        admin.token,
        json={"status": "active", "reason": "cleared"},
    )
    assert enabled.get_json()["status"] == "active"
    assert_problem(api.get("/api/v1/account", worker.token), 401)  # old tokens stay revoked
    fresh = api.login(worker.email)["access_token"]
    assert api.get("/api/v1/account", fresh).status_code == 200
    assert len(_audit(db_session, "user.status_changed")) == 2


def test_an_admin_cannot_disable_themself(app, api, db_session):
    admin = api.admin(app)
    response = api.post(
        f"/api/v1/admin/users/{admin.user['id']}/status",
        admin.token,
        json={"status": "disabled", "reason": "oops"},
    )
    assert_problem(response, 403)
    assert db_session.get(User, admin.user["id"]).status == UserStatus.ACTIVE
    assert api.get("/api/v1/account", admin.token).status_code == 200


BAD_STATUS_CHANGES = [
    ({"status": "banned", "reason": "x"}, "status"),
    ({"reason": "x"}, "status"),
    ({"status": "disabled"}, "reason"),
    ({"status": "disabled", "reason": ""}, "reason"),
    ({"status": "disabled", "reason": "x" * 501}, "reason"),
    ({"status": "disabled", "reason": "x", "until": "never"}, "until"),
]


def test_bad_status_changes_are_422_naming_the_field(app, api, db_session):
    admin = api.admin(app)
    worker = api.signup("worker")
    for body, field in BAD_STATUS_CHANGES:
        url = f"/api/v1/admin/users/{worker.user['id']}/status"
        response = api.post(url, admin.token, json=body)
        assert response.status_code == 422, (body, response.get_json())
        assert_problem(response, 422, field=field)
    assert db_session.get(User, worker.user["id"]).status == UserStatus.ACTIVE
    assert api.get("/api/v1/account", worker.token).status_code == 200
    assert _audit(db_session, "user.status_changed") == []


def test_changing_the_status_of_an_unknown_user_is_404(app, api, db_session):
    admin = api.admin(app)
    response = api.post(
        "/api/v1/admin/users/999999/status",
        admin.token,
        json={"status": "disabled", "reason": "x"},
    )
    assert_problem(response, 404)
    count = select(func.count()).select_from(AuditEvent)
    assert db_session.scalar(count.where(AuditEvent.action == "user.status_changed")) == 0


# --- the first platform admin (what `make run` does) ----------------------------------------


def test_ensure_admin_prints_generated_credentials_once(app, api):
    runner = app.test_cli_runner()
    env = {"CROWDLINE_ADMIN_EMAIL": "", "CROWDLINE_ADMIN_PASSWORD": ""}
    first = runner.invoke(args=["crowdline", "ensure-admin"], env=env)
    assert first.exit_code == 0, first.output
    lines = dict(line.strip().split(":", 1) for line in first.output.splitlines() if ":" in line)
    email, password = lines["e-mail"].strip(), lines["password"].strip()
    token = api.login(email, password)
    assert "admin" in token["scope"].split()

    again = runner.invoke(args=["crowdline", "ensure-admin"], env=env)
    assert again.exit_code == 0, again.output
    assert "already present" in again.output
    assert password not in again.output


def test_ensure_admin_uses_the_admin_from_the_environment(app, api):
    runner = app.test_cli_runner()
    env = {"CROWDLINE_ADMIN_EMAIL": "ops@example.org", "CROWDLINE_ADMIN_PASSWORD": PASSWORD}
    result = runner.invoke(args=["crowdline", "ensure-admin"], env=env)
    assert result.exit_code == 0, result.output
    assert "ops@example.org: created" in result.output
    assert PASSWORD not in result.output
    assert "admin" in api.login("ops@example.org")["scope"].split()

    missing = runner.invoke(
        args=["crowdline", "ensure-admin"],
        env={"CROWDLINE_ADMIN_EMAIL": "other@example.org", "CROWDLINE_ADMIN_PASSWORD": ""},
    )
    assert missing.exit_code == 1
    assert "CROWDLINE_ADMIN_PASSWORD" in missing.output
    assert "Traceback" not in missing.output
