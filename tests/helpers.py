"""Small helpers that drive the HTTP API the way a client would."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

_counter = itertools.count(1)

PASSWORD = "correct horse battery"


@dataclass
class Account:
    user: dict[str, Any]
    organization: dict[str, Any] | None
    token: str
    refresh_token: str
    email: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


class Api:
    """A thin wrapper over Flask's test client that speaks our JSON API."""

    def __init__(self, client):
        self.client = client

    def call(self, method: str, path: str, token: str | None = None, **kwargs: Any):
        headers = dict(kwargs.pop("headers", {}) or {})
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return self.client.open(path, method=method, headers=headers, **kwargs)

    def get(self, path, token=None, **kw):
        return self.call("GET", path, token, **kw)

    def post(self, path, token=None, **kw):
        return self.call("POST", path, token, **kw)

    def patch(self, path, token=None, **kw):
        return self.call("PATCH", path, token, **kw)

    def delete(self, path, token=None, **kw):
        return self.call("DELETE", path, token, **kw)

    def signup(
        self,
        account_type: str = "client",
        *,
        email: str | None = None,
        organization: str | None = None,
        scope: str | None = None,
    ) -> Account:
        n = next(_counter)
        email = email or f"{account_type}{n}@example.org"
        body: dict[str, Any] = {
            "email": email,
            "password": PASSWORD,
            "name": f"{account_type.title()} {n}",
            "account_type": account_type,
        }
        if organization or account_type in ("client", "vendor"):
            body["organization"] = organization or f"{account_type.title()} org {n}"
        response = self.post("/api/v1/auth/signup", json=body)
        assert response.status_code == 201, response.get_json()
        created = response.get_json()
        token = self.login(email, scope=scope)
        return Account(
            user=created["user"],
            organization=created.get("organization"),
            token=token["access_token"],
            refresh_token=token["refresh_token"],
            email=email,
        )

    def login(self, email: str, password: str = PASSWORD, scope: str | None = None) -> dict:
        body = {"email": email, "password": password}
        if scope:
            body["scope"] = scope
        response = self.post("/api/v1/auth/login", json=body)
        assert response.status_code == 200, response.get_json()
        return response.get_json()

    def admin(self, app) -> Account:
        """A platform admin, created through the same service `make run` uses."""
        from marketplace.accounts import services

        n = next(_counter)
        email = f"admin{n}@example.org"
        with app.app_context():
            services.ensure_platform_admin(email, PASSWORD)
        token = self.login(email)
        me = self.get("/api/v1/account", token["access_token"]).get_json()
        return Account(me, None, token["access_token"], token["refresh_token"], email)


def assert_problem(response, status: int, *, field: str | None = None) -> dict[str, Any]:
    """The response is an RFC 9457 problem with this status (naming `field` if given)."""
    assert response.status_code == status, (response.status_code, response.get_data(as_text=True))
    assert response.mimetype == "application/problem+json", response.mimetype
    body = response.get_json()
    for key in ("type", "title", "status", "detail"):
        assert key in body, body
    assert body["status"] == status
    if field is not None:
        assert field in (body.get("errors") or {}), body
    return body
