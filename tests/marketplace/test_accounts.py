from __future__ import annotations

from sqlalchemy import func, select

from marketplace.accounts.models import Membership, Organization, User
from tests.helpers import PASSWORD, assert_problem
from workers.models import WorkerProfile


def test_client_signup_creates_user_org_and_owner_membership(api, db_session):
    account = api.signup("client", organization="Acme Vision")
    assert account.organization["name"] == "Acme Vision"
    assert account.organization["kind"] == "client"
    me = api.get("/api/v1/account", account.token).get_json()
    assert me["email"] == account.email
    assert me["memberships"] == [{"organization": account.organization, "role": "owner"}]
    assert db_session.scalar(select(func.count()).select_from(Membership)) == 1


def test_worker_signup_opens_a_worker_profile_and_no_organization(api, db_session):
    account = api.signup("worker")
    assert account.organization is None
    profile = db_session.scalar(select(WorkerProfile))
    assert profile.user_id == account.user["id"]
    assert profile.status.value == "applied"
    assert db_session.scalar(select(func.count()).select_from(Organization)) == 0


def test_email_uniqueness_ignores_case(api, db_session):
    api.signup("worker", email="Ann.Lee@Example.org")
    response = api.post(
        "/api/v1/auth/signup",
        json={
            "email": "ann.lee@EXAMPLE.ORG",
            "password": PASSWORD,
            "name": "Ann again",
            "account_type": "worker",
        },
    )
    assert_problem(response, 409, field="email")
    assert db_session.scalar(select(func.count()).select_from(User)) == 1
    # and sign-in works with any case
    assert api.login("ANN.LEE@example.org")["token_type"] == "Bearer"


def test_login_response_matches_the_public_contract(api):
    account = api.signup("worker")
    token = api.login(account.email)
    assert set(token) == {"access_token", "token_type", "expires_in", "refresh_token", "scope"}
    assert token["token_type"] == "Bearer"
    assert "tasks" in token["scope"].split()


def test_wrong_password_is_401_problem(api):
    account = api.signup("worker")
    response = api.post(
        "/api/v1/auth/login", json={"email": account.email, "password": "not the password"}
    )
    assert_problem(response, 401)


def test_signup_refuses_admin_account_type(api, db_session):
    response = api.post(
        "/api/v1/auth/signup",
        json={"email": "x@example.org", "password": PASSWORD, "name": "X", "account_type": "admin"},
    )
    assert_problem(response, 422, field="account_type")
    assert db_session.scalar(select(func.count()).select_from(User)) == 0


def test_logout_revokes_the_token(api):
    account = api.signup("client")
    assert api.post("/api/v1/auth/logout", account.token).status_code == 204
    assert_problem(api.get("/api/v1/account", account.token), 401)


def test_password_change_signs_out_other_sessions(api):
    account = api.signup("client")
    other = api.login(account.email)["access_token"]
    response = api.post(
        "/api/v1/account/password",
        account.token,
        json={"current_password": PASSWORD, "new_password": "a brand new passphrase"},
    )
    assert response.status_code == 204
    assert_problem(api.get("/api/v1/account", other), 401)
    assert api.get("/api/v1/account", account.token).status_code == 200
    assert api.login(account.email, "a brand new passphrase")["access_token"]


def test_password_change_needs_the_current_password(api):
    account = api.signup("client")
    response = api.post(
        "/api/v1/account/password",
        account.token,
        json={"current_password": "wrong wrong wrong", "new_password": "a brand new passphrase"},
    )
    assert_problem(response, 422, field="current_password")
    assert api.login(account.email)["access_token"]
