from __future__ import annotations

import base64
import hashlib
import secrets
import threading
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import select

from marketplace.accounts.models import User, UserStatus
from marketplace.models import AuditEvent
from marketplace.oauth import tokens
from marketplace.oauth.models import OAuthAuthorizationCode, OAuthClient, OAuthToken
from tests.helpers import assert_problem

CALLBACK = "http://127.0.0.1:9999/callback"


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    return verifier, challenge.rstrip(b"=").decode()


def basic(client_id: str, secret: str) -> dict[str, str]:
    raw = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


def register(api, account, **overrides) -> dict:
    body = {
        "name": "Labeling tool",
        "grant_types": ["authorization_code", "refresh_token"],
        "redirect_uris": [CALLBACK],
        "scope": "account tasks",
        "token_endpoint_auth_method": "none",
    }
    body.update(overrides)
    org_id = account.organization["id"]
    response = api.post(f"/api/v1/organizations/{org_id}/oauth-clients", account.token, json=body)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def service_account(api, account, scope="org:read org:write jobs:read") -> dict:
    return register(
        api,
        account,
        name="Pipeline",
        grant_types=["client_credentials"],
        redirect_uris=[],
        scope=scope,
        token_endpoint_auth_method="client_secret_basic",
    )


def authorize_params(client_id, challenge, **extra) -> dict:
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": CALLBACK,
        "scope": "account tasks",
        "state": "st4te",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    params.update(extra)
    return {k: v for k, v in params.items() if v is not None}


def get_code(api, worker, client_id, challenge, **extra) -> str:
    response = api.post(
        "/oauth/authorize",
        worker.token,
        query_string=authorize_params(client_id, challenge, **extra),
        data={"confirm": "yes"},
    )
    assert response.status_code == 302, response.get_data(as_text=True)
    location = urlsplit(response.headers["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == CALLBACK
    query = parse_qs(location.query)
    assert query["state"] == ["st4te"]
    return query["code"][0]


def exchange(api, client_id, code, verifier, redirect_uri=CALLBACK):
    return api.post(
        "/oauth/token",
        data={
            "grant_type": "authorization_code",
            "client_id": client_id,
            "code": code,
            "code_verifier": verifier,
            "redirect_uri": redirect_uri,
        },
    )


def oauth_error(response, status: int, error: str) -> dict:
    body = assert_problem(response, status)
    assert body["error"] == error, body
    assert body["error_description"]
    return body


@pytest.fixture
def tool(api):
    """A vendor's public labeling tool and a worker who will use it."""
    vendor = api.signup("vendor")
    worker = api.signup("worker")
    client = register(api, vendor)
    return vendor, worker, client


def test_labeling_tool_pkce_flow_end_to_end(api, db_session, tool):
    vendor, worker, client = tool
    assert client["client_secret"] is None
    assert client["client_id"].startswith("cli_")
    verifier, challenge = pkce()

    consent = api.get(
        "/oauth/authorize",
        worker.token,
        query_string=authorize_params(client["client_id"], challenge),
    )
    assert consent.status_code == 200, consent.get_json()
    assert consent.get_json()["client"] == {
        "client_id": client["client_id"],
        "name": "Labeling tool",
    }
    assert consent.get_json()["scope"] == "account tasks"
    assert consent.get_json()["redirect_uri"] == CALLBACK
    assert consent.get_json()["state"] == "st4te"

    code = get_code(api, worker, client["client_id"], challenge)
    stored = db_session.scalar(select(OAuthAuthorizationCode))
    assert stored.code_hash == tokens.digest(code) and code not in stored.code_hash
    assert stored.user_id == worker.user["id"] and stored.used_at is None

    response = exchange(api, client["client_id"], code, verifier)
    assert response.status_code == 200, response.get_json()
    pair = response.get_json()
    assert set(pair) == {"access_token", "token_type", "expires_in", "refresh_token", "scope"}
    assert pair["scope"] == "account tasks"
    me = api.get("/api/v1/account", pair["access_token"])
    assert me.status_code == 200 and me.get_json()["email"] == worker.email
    row = db_session.scalar(
        select(OAuthToken).where(
            OAuthToken.access_token_hash == tokens.digest(pair["access_token"])
        )
    )
    assert row.client_id == client["client_id"] and row.user_id == worker.user["id"]
    assert row.grant_type == "authorization_code" and row.organization_id is None
    db_session.refresh(stored)
    assert stored.used_at is not None

    refreshed = api.post(
        "/oauth/token",
        data={
            "grant_type": "refresh_token",
            "client_id": client["client_id"],
            "refresh_token": pair["refresh_token"],
        },
    )
    assert refreshed.status_code == 200, refreshed.get_json()
    new = refreshed.get_json()
    assert new["refresh_token"] != pair["refresh_token"] and new["scope"] == "account tasks"
    assert_problem(api.get("/api/v1/account", pair["access_token"]), 401)
    again = api.post(
        "/oauth/token",
        data={
            "grant_type": "refresh_token",
            "client_id": client["client_id"],
            "refresh_token": pair["refresh_token"],
        },
    )
    oauth_error(again, 400, "invalid_grant")
    assert api.get("/api/v1/account", new["access_token"]).status_code == 200

    revoked = api.post(
        "/oauth/revoke", data={"client_id": client["client_id"], "token": new["access_token"]}
    )
    assert revoked.status_code == 200
    assert_problem(api.get("/api/v1/account", new["access_token"]), 401)
    db_session.expire_all()
    latest = db_session.scalar(
        select(OAuthToken).where(
            OAuthToken.refresh_token_hash == tokens.digest(new["refresh_token"])
        )
    )
    assert latest.access_revoked_at is not None and latest.refresh_revoked_at is not None


def test_wrong_verifier_is_invalid_grant_and_leaves_no_token(api, db_session, tool):
    _vendor, worker, client = tool
    _verifier, challenge = pkce()
    code = get_code(api, worker, client["client_id"], challenge)
    other_verifier, _ = pkce()
    oauth_error(exchange(api, client["client_id"], code, other_verifier), 400, "invalid_grant")
    no_verifier = api.post(
        "/oauth/token",
        data={
            "grant_type": "authorization_code",
            "client_id": client["client_id"],
            "code": code,
            "redirect_uri": CALLBACK,
        },
    )
    oauth_error(no_verifier, 400, "invalid_request")
    assert (
        db_session.scalar(select(OAuthToken).where(OAuthToken.client_id == client["client_id"]))
        is None
    )


@pytest.mark.parametrize(
    "change",
    [
        {"code_challenge": None, "code_challenge_method": None},
        {"code_challenge_method": "plain"},
        {"code_challenge_method": None},
        {"code_challenge": "too-short"},
    ],
)
def test_authorization_needs_an_s256_challenge(api, db_session, tool, change):
    _vendor, worker, client = tool
    _verifier, challenge = pkce()
    params = authorize_params(client["client_id"], challenge, **change)
    body = oauth_error(
        api.get("/oauth/authorize", worker.token, query_string=params), 400, "invalid_request"
    )
    assert body["state"] == "st4te"
    # the client is known and the redirect URI registered, so the app may send the user back
    assert body["redirect_to"].startswith(CALLBACK + "?error=invalid_request")
    posted = api.post(
        "/oauth/authorize", worker.token, query_string=params, data={"confirm": "yes"}
    )
    assert posted.status_code == 302
    assert parse_qs(urlsplit(posted.headers["Location"]).query)["error"] == ["invalid_request"]
    assert db_session.scalar(select(OAuthAuthorizationCode)) is None


def test_unregistered_redirect_uri_is_refused_without_redirecting(api, db_session, tool):
    _vendor, worker, client = tool
    _verifier, challenge = pkce()
    for uri in ("http://127.0.0.1:9999/callback/evil", "https://evil.example/cb", 'http://x/"é'):
        params = authorize_params(client["client_id"], challenge, redirect_uri=uri)
        body = oauth_error(
            api.get("/oauth/authorize", worker.token, query_string=params), 400, "invalid_request"
        )
        assert "redirect_to" not in body
        posted = api.post(
            "/oauth/authorize", worker.token, query_string=params, data={"confirm": "yes"}
        )
        oauth_error(posted, 400, "invalid_request")
    assert db_session.scalar(select(OAuthAuthorizationCode)) is None


def test_token_request_must_repeat_the_redirect_uri(api, tool):
    _vendor, worker, client = tool
    verifier, challenge = pkce()
    code = get_code(api, worker, client["client_id"], challenge)
    wrong = exchange(api, client["client_id"], code, verifier, "http://127.0.0.1:9999/other")
    oauth_error(wrong, 400, "invalid_grant")
    assert exchange(api, client["client_id"], code, verifier).status_code == 200


def test_replayed_code_fails_and_revokes_what_it_issued(api, db_session, tool):
    _vendor, worker, client = tool
    verifier, challenge = pkce()
    code = get_code(api, worker, client["client_id"], challenge)
    first = exchange(api, client["client_id"], code, verifier).get_json()
    refreshed = api.post(
        "/oauth/token",
        data={
            "grant_type": "refresh_token",
            "client_id": client["client_id"],
            "refresh_token": first["refresh_token"],
        },
    ).get_json()
    assert api.get("/api/v1/account", refreshed["access_token"]).status_code == 200

    body = oauth_error(exchange(api, client["client_id"], code, verifier), 400, "invalid_grant")
    assert "already used" in body["error_description"]
    # the whole chain issued from the code is dead, rotated descendants included
    assert_problem(api.get("/api/v1/account", refreshed["access_token"]), 401)
    rows = db_session.scalars(
        select(OAuthToken).where(OAuthToken.client_id == client["client_id"])
    ).all()
    assert len(rows) == 2
    assert all(r.access_revoked_at and r.refresh_revoked_at for r in rows)


def test_expired_code_is_invalid_grant(api, manual_clock, db_session, tool):
    _vendor, worker, client = tool
    verifier, challenge = pkce()
    code = get_code(api, worker, client["client_id"], challenge)
    manual_clock.advance(601)
    body = oauth_error(exchange(api, client["client_id"], code, verifier), 400, "invalid_grant")
    assert "expired" in body["error_description"]
    assert (
        db_session.scalar(select(OAuthToken).where(OAuthToken.client_id == client["client_id"]))
        is None
    )


def test_denied_consent_redirects_with_access_denied(api, db_session, tool):
    _vendor, worker, client = tool
    _verifier, challenge = pkce()
    response = api.post(
        "/oauth/authorize",
        worker.token,
        query_string=authorize_params(client["client_id"], challenge),
        json={"confirm": "no"},
    )
    assert response.status_code == 302
    query = parse_qs(urlsplit(response.headers["Location"]).query)
    assert query["error"] == ["access_denied"] and query["state"] == ["st4te"]
    assert db_session.scalar(select(OAuthAuthorizationCode)) is None


def test_consent_needs_an_answer(api, tool):
    _vendor, worker, client = tool
    _verifier, challenge = pkce()
    response = api.post(
        "/oauth/authorize",
        worker.token,
        query_string=authorize_params(client["client_id"], challenge),
        data={"confirm": "maybe"},
    )
    assert_problem(response, 422, field="confirm")


def test_granted_scope_is_narrowed_to_the_client_and_the_person(api, tool):
    _vendor, worker, client = tool
    verifier, challenge = pkce()
    # jobs:write is neither registered by the tool nor held by a worker; tasks is both
    code = get_code(api, worker, client["client_id"], challenge, scope="tasks jobs:write")
    assert exchange(api, client["client_id"], code, verifier).get_json()["scope"] == "tasks"
    _verifier, challenge = pkce()
    params = authorize_params(client["client_id"], challenge, scope="jobs:write")
    oauth_error(
        api.get("/oauth/authorize", worker.token, query_string=params), 400, "invalid_scope"
    )
    params = authorize_params(client["client_id"], challenge, scope="nonsense")
    oauth_error(
        api.get("/oauth/authorize", worker.token, query_string=params), 400, "invalid_scope"
    )


def test_authorize_needs_a_first_party_token_with_the_account_scope(api, tool):
    _vendor, worker, client = tool
    verifier, challenge = pkce()
    params = authorize_params(client["client_id"], challenge)
    assert_problem(api.get("/oauth/authorize", query_string=params), 401)
    narrow = api.login(worker.email, scope="tasks")["access_token"]
    assert_problem(api.get("/oauth/authorize", narrow, query_string=params), 403)
    # a tool's own token cannot approve more tools
    code = get_code(api, worker, client["client_id"], challenge)
    tool_token = exchange(api, client["client_id"], code, verifier).get_json()["access_token"]
    assert_problem(api.get("/oauth/authorize", tool_token, query_string=params), 403)


def test_unknown_client_at_authorize_is_a_problem_not_a_redirect(api, tool):
    _vendor, worker, _client = tool
    _verifier, challenge = pkce()
    params = authorize_params("cli_nope", challenge)
    body = oauth_error(
        api.get("/oauth/authorize", worker.token, query_string=params), 400, "invalid_client"
    )
    assert "redirect_to" not in body
    params = authorize_params(tokens.FIRST_PARTY_CLIENT_ID, challenge)
    oauth_error(
        api.get("/oauth/authorize", worker.token, query_string=params), 400, "invalid_request"
    )


def test_client_credentials_token_acts_for_its_own_organization(api, db_session):
    client_account = api.signup("client")
    other = api.signup("client")
    app = service_account(api, client_account)
    assert app["client_secret"].startswith("cls_")
    response = api.post(
        "/oauth/token",
        headers=basic(app["client_id"], app["client_secret"]),
        data={"grant_type": "client_credentials"},
    )
    assert response.status_code == 200, response.get_json()
    token = response.get_json()
    assert "refresh_token" not in token
    assert token["scope"] == "jobs:read org:read org:write"
    row = db_session.scalar(select(OAuthToken).where(OAuthToken.client_id == app["client_id"]))
    assert row.user_id is None and row.organization_id == client_account.organization["id"]

    own = api.get(
        f"/api/v1/organizations/{client_account.organization['id']}", token["access_token"]
    )
    assert own.status_code == 200 and own.get_json()["id"] == client_account.organization["id"]
    assert_problem(
        api.get(f"/api/v1/organizations/{other.organization['id']}", token["access_token"]), 404
    )
    # a service account is not a person
    assert_problem(api.get("/api/v1/account", token["access_token"]), 403)


def test_client_credentials_scope_is_narrowed(api, db_session):
    account = api.signup("client")
    app = service_account(api, account, scope="org:read org:write account")
    response = api.post(
        "/oauth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": app["client_id"],
            "client_secret": app["client_secret"],
            "scope": "org:read account",
        },
    )
    # client_secret_post is not what this client registered
    oauth_error(response, 401, "invalid_client")
    response = api.post(
        "/oauth/token",
        headers=basic(app["client_id"], app["client_secret"]),
        data={"grant_type": "client_credentials", "scope": "org:read account"},
    )
    token = response.get_json()
    # account is never a service scope; org:write was not asked for
    assert token["scope"] == "org:read"
    denied = api.post(
        "/api/v1/organizations", token["access_token"], json={"name": "X", "kind": "client"}
    )
    body = assert_problem(denied, 403)
    assert body["required_scopes"] == ["org:write"]
    only_account = api.post(
        "/oauth/token",
        headers=basic(app["client_id"], app["client_secret"]),
        data={"grant_type": "client_credentials", "scope": "account"},
    )
    oauth_error(only_account, 400, "invalid_scope")
    unknown = api.post(
        "/oauth/token",
        headers=basic(app["client_id"], app["client_secret"]),
        data={"grant_type": "client_credentials", "scope": "org:read root"},
    )
    oauth_error(unknown, 400, "invalid_scope")


def test_public_clients_cannot_use_client_credentials(api, tool):
    _vendor, _worker, client = tool
    response = api.post(
        "/oauth/token", data={"grant_type": "client_credentials", "client_id": client["client_id"]}
    )
    oauth_error(response, 401, "invalid_client")


def test_invalid_client_is_401_with_a_challenge(api, db_session):
    account = api.signup("client")
    app = service_account(api, account)
    for headers in (
        basic(app["client_id"], "cls_wrong"),
        basic("cli_unknown", "secret"),
        {"Authorization": "Basic " + base64.b64encode(b"\xff\xfe:\xff").decode()},
        {"Authorization": "Basic !!!"},
        {},
    ):
        response = api.post(
            "/oauth/token", headers=headers, data={"grant_type": "client_credentials"}
        )
        body = oauth_error(response, 401, "invalid_client")
        assert response.headers["WWW-Authenticate"].startswith("Basic ")
        assert body["type"] == "/problems/invalid-client"
    assert (
        db_session.scalar(select(OAuthToken).where(OAuthToken.client_id == app["client_id"]))
        is None
    )


def test_expired_access_token_is_401(api, manual_clock):
    account = api.signup("client")
    app = service_account(api, account)
    token = api.post(
        "/oauth/token",
        headers=basic(app["client_id"], app["client_secret"]),
        data={"grant_type": "client_credentials"},
    ).get_json()
    org_url = f"/api/v1/organizations/{account.organization['id']}"
    manual_clock.advance(token["expires_in"] - 1)
    assert api.get(org_url, token["access_token"]).status_code == 200
    manual_clock.advance(1)
    response = api.get(org_url, token["access_token"])
    assert_problem(response, 401)
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


def test_introspection(api, db_session, tool):
    vendor, worker, client = tool
    verifier, challenge = pkce()
    code = get_code(api, worker, client["client_id"], challenge)
    pair = exchange(api, client["client_id"], code, verifier).get_json()
    resource = service_account(api, vendor, scope="org:read")
    auth = basic(resource["client_id"], resource["client_secret"])
    service_token = api.post(
        "/oauth/token", headers=auth, data={"grant_type": "client_credentials"}
    ).get_json()["access_token"]

    own = api.post("/oauth/introspect", headers=auth, data={"token": service_token}).get_json()
    assert own["active"] is True
    assert own["client_id"] == resource["client_id"] and own["scope"] == "org:read"
    assert own["org_id"] == vendor.organization["id"] and own["token_type"] == "Bearer"
    assert own["exp"] - own["iat"] == 3600 and "sub" not in own

    # a token issued to another client (the public tool, acting for a worker) is not its business
    foreign = api.post("/oauth/introspect", headers=auth, data={"token": pair["access_token"]})
    assert foreign.status_code == 200 and foreign.get_json() == {"active": False}
    assert api.post("/oauth/introspect", headers=auth, data={"token": "cla_nope"}).get_json() == {
        "active": False
    }

    # the vendor's other confidential client may introspect its organization's service tokens
    sibling = service_account(api, vendor, scope="org:read")
    sibling_auth = basic(sibling["client_id"], sibling["client_secret"])
    seen = api.post("/oauth/introspect", headers=sibling_auth, data={"token": service_token})
    assert seen.get_json()["active"] is True

    # public clients cannot authenticate here
    public = api.post(
        "/oauth/introspect", data={"client_id": client["client_id"], "token": pair["access_token"]}
    )
    oauth_error(public, 401, "invalid_client")

    api.post("/oauth/revoke", headers=auth, data={"token": service_token})
    revoked = api.post("/oauth/introspect", headers=auth, data={"token": service_token})
    assert revoked.get_json() == {"active": False}


def test_introspection_of_a_user_token_names_the_user(api, db_session):
    account = api.signup("client")
    app = register(
        api,
        account,
        grant_types=["authorization_code", "refresh_token"],
        scope="account org:read",
        token_endpoint_auth_method="client_secret_post",
    )
    verifier, challenge = pkce()
    code = get_code(api, account, app["client_id"], challenge, scope="org:read")
    creds = {"client_id": app["client_id"], "client_secret": app["client_secret"]}
    pair = api.post(
        "/oauth/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "code_verifier": verifier,
            "redirect_uri": CALLBACK,
            **creds,
        },
    ).get_json()
    body = api.post(
        "/oauth/introspect",
        data={"token": pair["refresh_token"], "token_type_hint": "refresh_token", **creds},
    ).get_json()
    assert body["active"] is True and body["token_type"] == "refresh_token"
    assert body["username"] == account.email and body["sub"] == str(account.user["id"])
    assert "org_id" not in body
    bad_hint = api.post(
        "/oauth/introspect", data={"token": pair["access_token"], "token_type_hint": "id", **creds}
    )
    oauth_error(bad_hint, 400, "unsupported_token_type")


def test_first_party_login_token_refreshes_with_the_crowdline_client(api, db_session):
    worker = api.signup("worker")
    response = api.post(
        "/oauth/token",
        data={
            "grant_type": "refresh_token",
            "client_id": "crowdline",
            "refresh_token": worker.refresh_token,
            "scope": "account tasks",
        },
    )
    assert response.status_code == 200, response.get_json()
    pair = response.get_json()
    assert pair["scope"] == "account tasks"
    assert api.get("/api/v1/account", pair["access_token"]).status_code == 200
    assert_problem(api.get("/api/v1/account", worker.token), 401)
    row = db_session.scalar(
        select(OAuthToken).where(
            OAuthToken.access_token_hash == tokens.digest(pair["access_token"])
        )
    )
    assert row.client_id == "crowdline" and row.user_id == worker.user["id"]
    wider = api.post(
        "/oauth/token",
        data={
            "grant_type": "refresh_token",
            "client_id": "crowdline",
            "refresh_token": pair["refresh_token"],
            "scope": "account tasks billing:read",
        },
    )
    oauth_error(wider, 400, "invalid_scope")


def test_a_refresh_token_only_works_for_its_own_client(api, tool):
    _vendor, worker, client = tool
    response = api.post(
        "/oauth/token",
        data={
            "grant_type": "refresh_token",
            "client_id": client["client_id"],
            "refresh_token": worker.refresh_token,
        },
    )
    oauth_error(response, 400, "invalid_grant")


def test_the_app_revokes_its_own_login_token_without_a_secret(api):
    worker = api.signup("worker")
    response = api.post(
        "/oauth/revoke",
        data={
            "client_id": "crowdline",
            "token": worker.refresh_token,
            "token_type_hint": "refresh_token",
        },
    )
    assert response.status_code == 200
    assert_problem(api.get("/api/v1/account", worker.token), 401)
    refresh = api.post(
        "/oauth/token",
        data={
            "grant_type": "refresh_token",
            "client_id": "crowdline",
            "refresh_token": worker.refresh_token,
        },
    )
    oauth_error(refresh, 400, "invalid_grant")


def test_a_client_cannot_revoke_another_clients_token(api, tool):
    _vendor, worker, client = tool
    response = api.post(
        "/oauth/revoke", data={"client_id": client["client_id"], "token": worker.token}
    )
    oauth_error(response, 400, "invalid_grant")
    assert api.get("/api/v1/account", worker.token).status_code == 200


def test_disabled_user_cannot_exchange_or_refresh(api, db_session, tool):
    _vendor, worker, client = tool
    verifier, challenge = pkce()
    code = get_code(api, worker, client["client_id"], challenge)
    user = db_session.get(User, worker.user["id"])
    user.status = UserStatus.DISABLED
    db_session.commit()
    oauth_error(exchange(api, client["client_id"], code, verifier), 400, "invalid_grant")
    refresh = api.post(
        "/oauth/token",
        data={
            "grant_type": "refresh_token",
            "client_id": "crowdline",
            "refresh_token": worker.refresh_token,
        },
    )
    oauth_error(refresh, 400, "invalid_grant")


def test_revoking_a_client_revokes_its_tokens(api, db_session):
    account = api.signup("client")
    app = service_account(api, account)
    auth = basic(app["client_id"], app["client_secret"])
    token = api.post(
        "/oauth/token", headers=auth, data={"grant_type": "client_credentials"}
    ).get_json()
    url = f"/api/v1/organizations/{account.organization['id']}/oauth-clients/{app['client_id']}"
    assert api.delete(url, account.token).status_code == 204
    assert api.delete(url, account.token).status_code == 204
    assert_problem(
        api.get(f"/api/v1/organizations/{account.organization['id']}", token["access_token"]), 401
    )
    oauth_error(
        api.post("/oauth/token", headers=auth, data={"grant_type": "client_credentials"}),
        401,
        "invalid_client",
    )
    shown = api.get(url, account.token).get_json()
    assert shown["revoked_at"] is not None
    events = db_session.scalars(
        select(AuditEvent).where(AuditEvent.action == "oauth_client.revoked")
    ).all()
    assert len(events) == 1 and events[0].detail == {"tokens_revoked": 1}
    assert events[0].actor_user_id == account.user["id"]


def test_rotating_the_secret(api, db_session):
    account = api.signup("client")
    app = service_account(api, account)
    url = f"/api/v1/organizations/{account.organization['id']}/oauth-clients/{app['client_id']}"
    rotated = api.post(f"{url}/rotate-secret", account.token)
    assert rotated.status_code == 200
    secret = rotated.get_json()["client_secret"]
    assert secret != app["client_secret"]
    old = api.post(
        "/oauth/token",
        headers=basic(app["client_id"], app["client_secret"]),
        data={"grant_type": "client_credentials"},
    )
    oauth_error(old, 401, "invalid_client")
    new = api.post(
        "/oauth/token",
        headers=basic(app["client_id"], secret),
        data={"grant_type": "client_credentials"},
    )
    assert new.status_code == 200
    assert "client_secret" not in api.get(url, account.token).get_json()
    row = db_session.scalar(select(OAuthClient))
    assert row.client_secret_hash == tokens.digest(secret)
    assert db_session.scalar(
        select(AuditEvent).where(AuditEvent.action == "oauth_client.secret_rotated")
    )


def test_registry_lists_with_cursor_paging_and_audits_creation(api, db_session):
    account = api.signup("client")
    created = [service_account(api, account)["client_id"] for _ in range(3)]
    url = f"/api/v1/organizations/{account.organization['id']}/oauth-clients"
    first = api.get(url, account.token, query_string={"limit": 2})
    assert first.status_code == 200
    page = first.get_json()
    assert [c["client_id"] for c in page["items"]] == created[:2]
    assert "client_secret" not in page["items"][0]
    assert 'rel="next"' in first.headers["Link"]
    rest = api.get(
        url, account.token, query_string={"limit": 2, "cursor": page["next_cursor"]}
    ).get_json()
    assert [c["client_id"] for c in rest["items"]] == created[2:] and rest["next_cursor"] is None
    events = db_session.scalars(
        select(AuditEvent).where(AuditEvent.action == "oauth_client.created")
    ).all()
    assert [e.object_id for e in events] == created
    assert all(e.organization_id == account.organization["id"] for e in events)


def test_registration_is_idempotent_with_a_key(api, db_session):
    account = api.signup("client")
    url = f"/api/v1/organizations/{account.organization['id']}/oauth-clients"
    body = {"name": "Pipeline", "grant_types": ["client_credentials"], "scope": "jobs:read"}
    headers = {"Idempotency-Key": "register-1"}
    first = api.post(url, account.token, json=body, headers=headers)
    second = api.post(url, account.token, json=body, headers=headers)
    assert first.status_code == second.status_code == 201
    assert second.headers["Idempotent-Replayed"] == "true"
    assert first.get_json()["client_id"] == second.get_json()["client_id"]
    assert len(db_session.scalars(select(OAuthClient)).all()) == 1


def test_registry_is_private_to_the_tenant(api):
    owner = api.signup("client")
    stranger = api.signup("client")
    worker = api.signup("worker")
    app = service_account(api, owner)
    base = f"/api/v1/organizations/{owner.organization['id']}/oauth-clients"
    body = {"name": "x", "grant_types": ["client_credentials"], "scope": "jobs:read"}
    assert_problem(api.get(base, stranger.token), 404)
    assert_problem(api.post(base, stranger.token, json=body), 404)
    assert_problem(api.get(f"{base}/{app['client_id']}", stranger.token), 404)
    assert_problem(api.delete(f"{base}/{app['client_id']}", stranger.token), 404)
    assert_problem(api.post(f"{base}/{app['client_id']}/rotate-secret", stranger.token), 404)
    assert_problem(api.get(base, worker.token), 403)  # a worker token has no org:read
    # a client of one org is not reachable through another org's URL
    stranger_url = f"/api/v1/organizations/{stranger.organization['id']}/oauth-clients"
    assert_problem(api.get(f"{stranger_url}/{app['client_id']}", stranger.token), 404)
    assert_problem(api.get(f"{stranger_url}/%00", stranger.token), 404)
    assert api.get(f"{base}/{app['client_id']}", owner.token).status_code == 200


def test_members_read_but_only_admins_register(api, db_session):
    owner = api.signup("client")
    colleague = api.signup("client")
    url = f"/api/v1/organizations/{owner.organization['id']}"
    added = api.post(
        f"{url}/members", owner.token, json={"email": colleague.email, "role": "member"}
    )
    assert added.status_code == 201
    body = {"name": "x", "grant_types": ["client_credentials"], "scope": "jobs:read"}
    assert api.get(f"{url}/oauth-clients", colleague.token).status_code == 200
    assert_problem(api.post(f"{url}/oauth-clients", colleague.token, json=body), 403)
    assert db_session.scalar(select(OAuthClient)) is None


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"redirect_uris": ["http://example.org/cb"]}, "redirect_uris"),
        ({"redirect_uris": ["https://example.org/cb#frag"]}, "redirect_uris"),
        ({"redirect_uris": ["not a uri"]}, "redirect_uris"),
        ({"redirect_uris": []}, "redirect_uris"),
        ({"grant_types": ["authorization_code", "implicit"]}, "grant_types"),
        ({"grant_types": []}, "grant_types"),
        ({"grant_types": ["client_credentials"], "redirect_uris": []}, "grant_types"),
        ({"grant_types": ["refresh_token"], "redirect_uris": []}, "grant_types"),
        ({"scope": "tasks superuser"}, "scope"),
        ({"scope": ""}, "scope"),
        ({"token_endpoint_auth_method": "private_key_jwt"}, "token_endpoint_auth_method"),
        ({"name": ""}, "name"),
        ({"name": "bad\x00name"}, "name"),
    ],
)
def test_bad_registration_input_is_422_naming_the_field(api, db_session, change, field):
    account = api.signup("vendor")
    body = {
        "name": "Tool",
        "grant_types": ["authorization_code"],
        "redirect_uris": [CALLBACK],
        "scope": "tasks",
        "token_endpoint_auth_method": "none",
    }
    body.update(change)
    url = f"/api/v1/organizations/{account.organization['id']}/oauth-clients"
    assert_problem(api.post(url, account.token, json=body), 422, field=field)
    assert db_session.scalar(select(OAuthClient)) is None


@pytest.mark.parametrize(
    ("path", "kwargs"),
    [
        ("/oauth/token", {"data": {"grant_type": "password", "username": "a", "password": "b"}}),
        ("/oauth/token", {"data": {}}),
        ("/oauth/token", {"data": {"grant_type": "authorization_code", "client_id": "\x00"}}),
        ("/oauth/token", {"data": {"grant_type": "refresh_token", "client_id": "crowdline"}}),
        ("/oauth/token", {"json": {"grant_type": "client_credentials"}}),
        ("/oauth/revoke", {"data": {"client_id": "crowdline"}}),
        ("/oauth/introspect", {"data": {"token": "x"}}),
    ],
)
def test_malformed_oauth_requests_are_4xx_problems(api, path, kwargs):
    response = api.post(path, **kwargs)
    assert 400 <= response.status_code < 500
    assert_problem(response, response.status_code)


def test_odd_authorize_requests_are_4xx_problems(api, tool):
    _vendor, worker, client = tool
    _verifier, challenge = pkce()
    for change in (
        {"response_type": 'to"ken é'},
        {"response_type": "token"},
        {"client_id": "\x00"},
        {"client_id": None},
        {"state": 'é"\\'},
    ):
        params = {**authorize_params(client["client_id"], challenge), **change}
        params = {k: v for k, v in params.items() if v is not None}
        response = api.get("/oauth/authorize", worker.token, query_string=params)
        if change.get("state"):
            assert response.status_code == 200
            continue
        assert_problem(response, response.status_code)
        assert 400 <= response.status_code < 500


def _race(app, requests: list[dict]) -> list:
    """Send the same token-endpoint request from several threads at once."""
    barrier = threading.Barrier(len(requests))

    def send(data):
        client = app.test_client()
        barrier.wait()
        return client.post("/oauth/token", data=data)

    with ThreadPoolExecutor(len(requests)) as pool:
        return list(pool.map(send, requests))


def test_a_code_is_exchanged_at_most_once_under_concurrency(app, api, db_session, tool):
    _vendor, worker, client = tool
    verifier, challenge = pkce()
    code = get_code(api, worker, client["client_id"], challenge)
    data = {
        "grant_type": "authorization_code",
        "client_id": client["client_id"],
        "code": code,
        "code_verifier": verifier,
        "redirect_uri": CALLBACK,
    }
    responses = _race(app, [data] * 4)
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200, 400, 400, 400], [r.get_json() for r in responses]
    assert all(r.get_json()["error"] == "invalid_grant" for r in responses if r.status_code == 400)
    rows = db_session.scalars(select(OAuthToken).where(OAuthToken.client_id == client["client_id"]))
    assert len(rows.all()) == 1


def test_a_refresh_token_rotates_at_most_once_under_concurrency(app, api, db_session):
    worker = api.signup("worker")
    data = {
        "grant_type": "refresh_token",
        "client_id": "crowdline",
        "refresh_token": worker.refresh_token,
    }
    responses = _race(app, [data] * 4)
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200, 400, 400, 400], [r.get_json() for r in responses]
    rows = db_session.scalars(select(OAuthToken).where(OAuthToken.user_id == worker.user["id"]))
    assert len(rows.all()) == 2  # the login pair and exactly one rotated pair


def test_a_revoked_tool_can_neither_refresh_nor_start_over(api, db_session, tool):
    vendor, worker, client = tool
    verifier, challenge = pkce()
    code = get_code(api, worker, client["client_id"], challenge)
    pair = exchange(api, client["client_id"], code, verifier).get_json()
    url = f"/api/v1/organizations/{vendor.organization['id']}/oauth-clients/{client['client_id']}"
    assert api.delete(url, vendor.token).status_code == 204
    assert_problem(api.get("/api/v1/account", pair["access_token"]), 401)
    refresh = api.post(
        "/oauth/token",
        data={
            "grant_type": "refresh_token",
            "client_id": client["client_id"],
            "refresh_token": pair["refresh_token"],
        },
    )
    oauth_error(refresh, 401, "invalid_client")
    params = authorize_params(client["client_id"], challenge)
    oauth_error(
        api.get("/oauth/authorize", worker.token, query_string=params), 400, "invalid_client"
    )
    row = db_session.scalar(select(OAuthToken).where(OAuthToken.client_id == client["client_id"]))
    assert row.access_revoked_at is not None and row.refresh_revoked_at is not None
