"""A small client for the public API: over HTTP (urllib) or through Flask's test client.

`Account` re-signs in when its token expires (tokens last an hour of sandbox time) and,
on 429, moves the sandbox clock past the rate-limit window instead of waiting.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Reply:
    status: int
    body: Any
    headers: dict[str, str]

    def ok(self, *statuses: int) -> Reply:
        if self.status not in statuses:
            raise ApiError(self)
        return self


class ApiError(RuntimeError):
    def __init__(self, reply: Reply):
        super().__init__(f"HTTP {reply.status}: {reply.body}")
        self.reply = reply


class Transport:
    def request(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        json_body: Any = None,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
        remote_addr: str | None = None,
    ) -> Reply:
        raise NotImplementedError


def _decode(raw: bytes, content_type: str) -> Any:
    if "json" in content_type and raw:
        try:
            return json.loads(raw)
        except ValueError:
            return raw.decode("utf-8", "replace")
    return raw.decode("utf-8", "replace")


class HttpTransport(Transport):
    """Talks to a running server (remote_addr cannot be chosen over real HTTP)."""

    def __init__(self, base_url: str, timeout: float = 60):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def request(
        self, method, path, *, token=None, json_body=None, data=None, headers=None, remote_addr=None
    ) -> Reply:
        headers = dict(headers or {})
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if json_body is not None:
            data = json.dumps(json_body).encode()
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(
            self.base_url + path, data=data, method=method, headers=headers
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw, status, got = response.read(), response.status, dict(response.headers)
        except urllib.error.HTTPError as error:
            raw, status, got = error.read(), error.code, dict(error.headers)
        return Reply(status, _decode(raw, got.get("Content-Type", "")), got)


class FlaskTransport(Transport):
    """Drives an app in this process through its test client (real routing, real views)."""

    def __init__(self, app):
        self.client = app.test_client()

    def request(
        self, method, path, *, token=None, json_body=None, data=None, headers=None, remote_addr=None
    ) -> Reply:
        headers = dict(headers or {})
        if token:
            headers["Authorization"] = f"Bearer {token}"
        kwargs: dict[str, Any] = {"headers": headers}
        if json_body is not None:
            kwargs["json"] = json_body
        elif data is not None:
            kwargs["data"] = data
        if remote_addr:
            kwargs["environ_base"] = {"REMOTE_ADDR": remote_addr}
        response = self.client.open(path, method=method, **kwargs)
        raw = response.get_data()
        return Reply(
            response.status_code, _decode(raw, response.content_type or ""), dict(response.headers)
        )


@dataclass
class Account:
    """One signed-in user of the API."""

    transport: Transport
    email: str
    password: str
    remote_addr: str | None = None
    fingerprint: str | None = None
    token: str | None = None
    # called with the seconds to wait when rate limited (the driver moves the sandbox clock)
    on_rate_limited: Callable[[int], None] | None = field(default=None, repr=False)

    def login(self) -> None:
        reply = self._raw(
            "POST", "/api/v1/auth/login", json_body={"email": self.email, "password": self.password}
        )
        self.token = reply.ok(200).body["access_token"]

    def _raw(self, method: str, path: str, **kwargs: Any) -> Reply:
        for _ in range(5):
            reply = self.transport.request(method, path, remote_addr=self.remote_addr, **kwargs)
            if reply.status != 429 or self.on_rate_limited is None:
                return reply
            body = reply.body if isinstance(reply.body, dict) else {}
            self.on_rate_limited(int(body.get("retry_after") or 60))
        return reply

    def call(self, method: str, path: str, **kwargs: Any) -> Reply:
        headers = dict(kwargs.pop("headers", None) or {})
        if self.fingerprint:
            headers["X-Client-Fingerprint"] = self.fingerprint
        if self.token is None:
            self.login()
        reply = self._raw(method, path, token=self.token, headers=headers, **kwargs)
        if reply.status == 401:  # expired on the sandbox clock: sign in again, once
            self.login()
            reply = self._raw(method, path, token=self.token, headers=headers, **kwargs)
        return reply

    def get(self, path: str, **kwargs: Any) -> Reply:
        return self.call("GET", path, **kwargs)

    def post(self, path: str, body: Any = None, **kwargs: Any) -> Reply:
        return self.call("POST", path, json_body=body if body is not None else {}, **kwargs)


def sign_up(
    transport: Transport, email: str, password: str, name: str, account_type: str, **extra: Any
) -> Account:
    """Create an account through the public sign-up route and sign it in."""
    account = Account(transport, email, password, **extra)
    body = {"email": email, "password": password, "name": name, "account_type": account_type}
    if account_type == "client":
        body["organization"] = f"{name}'s organization"
    account._raw("POST", "/api/v1/auth/signup", json_body=body).ok(201)
    account.login()
    return account
