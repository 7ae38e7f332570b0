"""Stripe on loopback for the tests: localstripe in a subprocess, and a stub in front of it.

What localstripe 1.15 gives us (read from its source): PaymentIntents (create, update,
confirm, cancel, list), PaymentMethods made from raw test card numbers (it knows no
`pm_card_visa` shortcuts; 4000000000000341 is declined when charged), refunds (create and
list), events, and signed webhooks configured with `POST /_config/webhooks/<name>`
`{url, secret, events?}`. It signs `"<created>.<json body>"` with HMAC-SHA256 exactly as
Stripe does (`Stripe-Signature: t=<created>,v1=<hex>`) and sends `payment_intent.succeeded`
when a confirmed card charge succeeds and `payment_intent.payment_failed` when it is
declined. It sends no `charge.refunded`, no `payment_intent.canceled`, ignores
`Idempotency-Key` altogether, and has no Connect: no accounts, account links or transfers.

So the gateway talks to `StripeStub`, which plays Stripe's HTTP edge:

- Connect and transfers in Stripe's shapes: `POST /v1/accounts`, `GET /v1/accounts/{id}`,
  `POST /v1/account_links`, `POST /v1/transfers`, `GET /v1/transfers[/{id}]`;
- Stripe's idempotency for every POST it sees: the same key with the same parameters replays
  the first answer (`Idempotent-Replayed: true`), with other parameters it is refused
  (`idempotency_error`); results are kept once the call ran, as Stripe keeps them;
- faults on demand (`fail_next`): a 5xx, an error of our choosing, a hang before the call
  runs (nothing happened) or after it ran (it happened, the answer was lost);
- everything else is proxied to localstripe.

localstripe is started with a tiny launcher instead of its console script: it binds only
127.0.0.1, never reads or writes /tmp/localstripe.pickle (other test runs may share /tmp),
waits `WEBHOOK_DELAY` rather than a full second before each webhook, and exits when the
pytest process that started it goes away. The session fixture stops it at the end.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import itertools
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

SECRET_KEY = "sk_test_crowdline_local"
WEBHOOK_SECRET = "whsec_crowdline_test_" + "0" * 16
WEBHOOK_DELAY = 0.05  # seconds localstripe waits before sending a webhook (Stripe: ~instant)

_LAUNCHER = r"""
import asyncio, os, sys, threading, time, types
from aiohttp import web
from localstripe import resources, server, webhooks

port, delay, parent = int(sys.argv[1]), float(sys.argv[2]), os.getppid()
resources.Store.dump_to_disk = lambda self: None  # no /tmp/localstripe.pickle
_sleep = asyncio.sleep
webhooks.asyncio = types.SimpleNamespace(
    sleep=lambda seconds: _sleep(min(seconds, delay)), ensure_future=asyncio.ensure_future
)

def watch_parent():
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(0)

threading.Thread(target=watch_parent, daemon=True).start()
web.run_app(server.app, host="127.0.0.1", port=port, print=None, access_log=None)
"""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _http(
    method: str,
    url: str,
    *,
    data: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 5.0,
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def _form(params: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    for key, value in params.items():
        name = f"{prefix}[{key}]" if prefix else key
        if isinstance(value, dict):
            pairs.extend(_form(value, name))
        else:
            pairs.append((name, str(value).lower() if isinstance(value, bool) else str(value)))
    return pairs


# --- localstripe ---------------------------------------------------------------------------


@dataclass
class LocalStripe:
    base: str
    process: subprocess.Popen
    log_path: str

    def call(self, method: str, path: str, params: dict[str, Any] | None = None) -> dict:
        """Call localstripe directly, as a browser with Stripe.js (or a test) would."""
        body = urllib.parse.urlencode(_form(params or {})).encode() if params else None
        status, _, raw = _http(
            method,
            self.base + path,
            data=body,
            headers={
                "Authorization": f"Bearer {SECRET_KEY}",
                "Content-Type": "application/x-www-form-urlencoded",
            },
        )
        document = json.loads(raw or b"{}")
        document["_status"] = status
        return document

    def configure_webhook(
        self, name: str, url: str, secret: str, events: list[str] | None = None
    ) -> None:
        body = {"url": url, "secret": secret}
        if events is not None:
            body["events"] = events
        status, _, raw = _http(
            "POST",
            f"{self.base}/_config/webhooks/{name}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        assert status == 200, raw

    def flush(self) -> None:
        status, _, raw = _http("DELETE", f"{self.base}/_config/data")
        assert status == 200, raw

    def card(self, number: str = "4242424242424242") -> str:
        """A PaymentMethod for a test card number (localstripe has no pm_card_* shortcuts)."""
        made = self.call(
            "POST",
            "/v1/payment_methods",
            {
                "type": "card",
                "card": {"number": number, "exp_month": 12, "exp_year": 2034, "cvc": "123"},
            },
        )
        assert made["_status"] == 200, made
        return made["id"]

    def confirm(self, payment_intent_id: str, card_number: str = "4242424242424242") -> dict:
        """What the client's browser does with the client secret: attach a card, confirm."""
        attached = self.call(
            "POST",
            f"/v1/payment_intents/{payment_intent_id}",
            {"payment_method": self.card(card_number)},
        )
        assert attached["_status"] == 200, attached
        return self.call("POST", f"/v1/payment_intents/{payment_intent_id}/confirm")


def _start_localstripe() -> LocalStripe:
    log = tempfile.NamedTemporaryFile(prefix="localstripe-", suffix=".log", delete=False)  # noqa: SIM115
    for _attempt in range(3):
        port = free_port()
        process = subprocess.Popen(
            [sys.executable, "-c", _LAUNCHER, str(port), str(WEBHOOK_DELAY)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and process.poll() is None:
            with contextlib.suppress(OSError):
                status, _, _ = _http(
                    "GET",
                    base + "/v1/balance",
                    headers={"Authorization": f"Bearer {SECRET_KEY}"},
                    timeout=1,
                )
                if status == 200:
                    return LocalStripe(base, process, log.name)
            time.sleep(0.05)
        _stop(process)  # the port was taken, or it never came up: try another port
    with open(log.name) as output:
        tail = output.read()[-3000:]
    os.unlink(log.name)
    raise RuntimeError("localstripe did not start:\n" + tail)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


# --- the stub ------------------------------------------------------------------------------


@dataclass
class Fault:
    method: str
    path: str  # a prefix of the request path
    mode: str  # "500" | "error" | "hang" | "hang_after"
    times: int = 1
    status: int = 500
    error: dict[str, Any] = field(default_factory=dict)


def _error(status: int, message: str, type_: str = "invalid_request_error", **extra) -> Response:
    body = {"error": {"type": type_, "message": message, **extra}}
    return Response(json.dumps(body), status=status, mimetype="application/json")


def _unflatten(pairs) -> dict[str, Any]:
    """`capabilities[transfers][requested]=true` → nested dicts (what Stripe's forms mean)."""
    tree: dict[str, Any] = {}
    for key, value in pairs:
        parts = key.replace("]", "").split("[")
        node = tree
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return tree


class StripeStub:
    """Stripe's HTTP edge in front of localstripe (see the module docstring)."""

    def __init__(self, upstream: str, hang_seconds: float = 5.0):
        self.upstream = upstream
        self.hang_seconds = hang_seconds
        self._lock = threading.RLock()
        self._key_locks: dict[str, threading.Lock] = {}
        self._released = threading.Event()
        self.reset()
        self.server = make_server("127.0.0.1", 0, self.wsgi, threaded=True)
        self.base = f"http://127.0.0.1:{self.server.server_port}"
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def reset(self) -> None:
        with self._lock:
            self.accounts: dict[str, dict[str, Any]] = {}
            self.transfers: dict[str, dict[str, Any]] = {}  # insertion order = creation order
            self.idempotent: dict[str, tuple[str, int, bytes]] = {}
            self.faults: list[Fault] = []
            self.calls: list[tuple[str, str]] = []

    def close(self) -> None:
        self._released.set()
        self.server.shutdown()
        self.server.server_close()

    # --- switches for fault tests ---

    def fail_next(
        self,
        method: str,
        path: str,
        mode: str = "500",
        *,
        times: int = 1,
        status: int = 500,
        error: dict[str, Any] | None = None,
    ) -> None:
        """Make the next `times` matching calls fail: "500" (the call did not run), "error"
        (answer `status` with Stripe's `error` body), "hang" (no answer, nothing done) or
        "hang_after" (the call ran, then no answer: the outcome-unknown case)."""
        with self._lock:
            self.faults.append(Fault(method.upper(), path, mode, times, status, error or {}))

    def complete_onboarding(self, account_id: str, payouts_enabled: bool = True) -> dict:
        with self._lock:
            account = self.accounts[account_id]
            account.update(
                details_submitted=True,
                charges_enabled=payouts_enabled,
                payouts_enabled=payouts_enabled,
                capabilities={"transfers": "active" if payouts_enabled else "inactive"},
            )
            return dict(account)

    def reverse_transfer(self, transfer_id: str) -> dict:
        with self._lock:
            transfer = self.transfers[transfer_id]
            transfer.update(amount_reversed=transfer["amount"], reversed=True)
            return dict(transfer)

    # --- the HTTP side ---

    def wsgi(self, environ, start_response):
        request = Request(environ)
        request.get_data(cache=True)  # read once; forms, fingerprints and proxying reuse it
        with self._lock:
            self.calls.append((request.method, request.path))
        return self.answer(request)(environ, start_response)

    def _take_fault(self, request: Request) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.method == request.method and request.path.startswith(fault.path):
                    fault.times -= 1
                    if fault.times <= 0:
                        self.faults.remove(fault)
                    return fault
        return None

    def _hang(self) -> Response:
        self._released.wait(self.hang_seconds)
        return _error(500, "The stub hung up.", "api_error")

    def answer(self, request: Request) -> Response:
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer sk_"):
            return _error(401, "Invalid API Key provided.")
        fault = self._take_fault(request)
        if fault is not None and fault.mode == "500":
            return _error(500, "Injected server error.", "api_error")
        if fault is not None and fault.mode == "error":
            return _error(fault.status, **{"message": "Injected error.", **fault.error})
        if fault is not None and fault.mode == "hang":
            return self._hang()
        key = request.headers.get("Idempotency-Key")
        if request.method == "POST" and key:
            response = self._idempotent(request, f"{auth}:{key}")
        else:
            response = self._route(request)
        if fault is not None and fault.mode == "hang_after":
            return self._hang()
        return response

    def _idempotent(self, request: Request, key: str) -> Response:
        fingerprint = hashlib.sha256(request.path.encode() + b"?" + request.get_data()).hexdigest()
        with self._lock:
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:  # Stripe answers 409 to a concurrent twin; waiting is kinder here
            with self._lock:
                seen = self.idempotent.get(key)
            if seen is not None:
                if seen[0] != fingerprint:
                    return _error(
                        400,
                        "Keys for idempotent requests can only be used with the same "
                        "parameters they were first used with.",
                        "idempotency_error",
                    )
                replay = Response(seen[2], status=seen[1], mimetype="application/json")
                replay.headers["Idempotent-Replayed"] = "true"
                return replay
            response = self._route(request)
            # Stripe keeps the result of any call that ran (2xx, card errors); not refusals.
            if response.status_code < 400 or response.status_code == 402:
                with self._lock:
                    self.idempotent[key] = (fingerprint, response.status_code, response.data)
            return response

    def _route(self, request: Request) -> Response:
        parts = request.path.strip("/").split("/")
        params = _unflatten(request.form.items(multi=True)) if request.method == "POST" else {}
        query = _unflatten(request.args.items(multi=True))
        if parts[:2] == ["v1", "accounts"]:
            if request.method == "POST" and len(parts) == 2:
                return self._create_account(params)
            if request.method == "GET" and len(parts) == 3:
                return self._object(self.accounts, parts[2], "account")
        if parts == ["v1", "account_links"] and request.method == "POST":
            return self._account_link(params)
        if parts[:2] == ["v1", "transfers"]:
            if request.method == "POST" and len(parts) == 2:
                return self._create_transfer(params)
            if request.method == "GET" and len(parts) == 2:
                return self._list_transfers(query)
            if request.method == "GET" and len(parts) == 3:
                return self._object(self.transfers, parts[2], "transfer")
        return self._proxy(request)

    def _json(self, document: dict[str, Any], status: int = 200) -> Response:
        return Response(json.dumps(document), status=status, mimetype="application/json")

    def _object(self, table: dict[str, dict], object_id: str, kind: str) -> Response:
        with self._lock:
            found = table.get(object_id)
        if found is None:
            return _error(404, f"No such {kind}: '{object_id}'", code="resource_missing")
        return self._json(found)

    def _create_account(self, params: dict[str, Any]) -> Response:
        if params.get("type") not in ("express", "standard", "custom"):
            return _error(400, "Invalid type: must be express, standard or custom", param="type")
        country = params.get("country", "US")
        if len(country) != 2:
            return _error(400, f"Country '{country}' is unknown", param="country")
        account = {
            "id": "acct_" + secrets.token_hex(8),
            "object": "account",
            "type": params["type"],
            "email": params.get("email"),
            "country": country,
            "created": int(time.time()),
            "charges_enabled": False,
            "payouts_enabled": False,
            "details_submitted": False,
            "capabilities": {"transfers": "inactive"},
            "metadata": params.get("metadata", {}),
        }
        with self._lock:
            self.accounts[account["id"]] = account
        return self._json(account)

    def _account_link(self, params: dict[str, Any]) -> Response:
        account = params.get("account")
        with self._lock:
            known = account in self.accounts
        if not known:
            return _error(400, f"No such account: '{account}'", param="account")
        for name in ("return_url", "refresh_url"):
            if not str(params.get(name, "")).startswith("http"):
                return _error(400, f"Invalid URL: {name}", param=name)
        now = int(time.time())
        return self._json(
            {
                "object": "account_link",
                "created": now,
                "expires_at": now + 300,
                "url": f"{self.base}/connect/onboarding/{account}/{secrets.token_hex(6)}",
            }
        )

    def _create_transfer(self, params: dict[str, Any]) -> Response:
        try:
            amount = int(params.get("amount", ""))
        except ValueError:
            return _error(400, "Invalid integer: amount", param="amount")
        if amount <= 0:
            return _error(400, "Amount must be at least 1", param="amount")
        currency = str(params.get("currency", ""))
        if len(currency) != 3:
            return _error(400, "Invalid currency", param="currency")
        destination = params.get("destination")
        with self._lock:
            if destination not in self.accounts:
                return _error(400, f"No such destination: '{destination}'", param="destination")
            transfer_id = "tr_" + secrets.token_hex(10)
            transfer = {
                "id": transfer_id,
                "object": "transfer",
                "amount": amount,
                "amount_reversed": 0,
                "currency": currency.lower(),
                "destination": destination,
                "created": int(time.time()),
                "livemode": False,
                "metadata": params.get("metadata", {}),
                "reversed": False,
                "reversals": {
                    "object": "list",
                    "data": [],
                    "has_more": False,
                    "url": f"/v1/transfers/{transfer_id}/reversals",
                },
                "transfer_group": params.get("transfer_group"),
            }
            self.transfers[transfer_id] = transfer
        return self._json(transfer)

    def _list_transfers(self, query: dict[str, Any]) -> Response:
        limit = max(1, min(100, int(query.get("limit", 10))))
        with self._lock:
            newest_first = list(reversed(self.transfers.values()))
        if destination := query.get("destination"):
            newest_first = [t for t in newest_first if t["destination"] == destination]
        if group := query.get("transfer_group"):
            newest_first = [t for t in newest_first if t["transfer_group"] == group]
        if after := query.get("starting_after"):
            ids = [t["id"] for t in newest_first]
            newest_first = newest_first[ids.index(after) + 1 :] if after in ids else []
        page = newest_first[:limit]
        return self._json(
            {
                "object": "list",
                "url": "/v1/transfers",
                "has_more": len(newest_first) > limit,
                "data": page,
            }
        )

    def _proxy(self, request: Request) -> Response:
        url = self.upstream + request.full_path.rstrip("?")
        headers = {
            name: value
            for name, value in request.headers.items()
            if name.lower() in ("authorization", "content-type", "stripe-version")
        }
        status, answer_headers, body = _http(
            request.method,
            url,
            data=request.get_data() if request.method in ("POST", "DELETE") else None,
            headers=headers,
        )
        return Response(body, status=status, mimetype="application/json")


# --- webhooks as Stripe signs them ---------------------------------------------------------

_event_ids = itertools.count(1)


def make_event(type_: str, obj: dict[str, Any], event_id: str | None = None) -> dict[str, Any]:
    return {
        "id": event_id or f"evt_test_{next(_event_ids)}_{secrets.token_hex(6)}",
        "object": "event",
        "type": type_,
        "created": int(time.time()),
        "livemode": False,
        "api_version": "2024-06-20",
        "data": {"object": obj},
    }


def signature_header(payload: bytes, secret: str = WEBHOOK_SECRET, at: int | None = None) -> str:
    timestamp = int(time.time()) if at is None else at
    signed = f"{timestamp}.".encode() + payload
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


WEBHOOK_PATH = "/api/v1/billing/stripe/webhook"


def post_event(
    client,
    event: dict[str, Any],
    *,
    secret: str = WEBHOOK_SECRET,
    at: int | None = None,
    signature: str | None = None,
    signed: bool = True,
):
    """Deliver an event to our endpoint through a Flask test client, signed as Stripe signs
    (or with the `signature` given, or with none at all)."""
    payload = json.dumps(event).encode()
    headers = {}
    if signed:
        headers["Stripe-Signature"] = signature or signature_header(payload, secret, at)
    return client.post(WEBHOOK_PATH, data=payload, headers=headers, content_type="application/json")


# --- fixtures ------------------------------------------------------------------------------


@dataclass
class StripeFake:
    """What a test gets: the base to aim the gateway at, and both servers to drive."""

    base: str
    stub: StripeStub
    localstripe: LocalStripe

    def gateway(self, **options: Any):
        from billing.stripe_gateway import StripeGateway

        options.setdefault("timeout", 2.0)
        options.setdefault("connect_timeout", 1.0)
        options.setdefault("max_network_retries", 0)
        return StripeGateway(SECRET_KEY, api_base=self.base, **options)

    def deliver_webhooks_to(self, url: str, *, twice: bool = False) -> None:
        self.localstripe.configure_webhook("crowdline", url, WEBHOOK_SECRET)
        # A second endpoint with the same URL: localstripe then sends every event twice,
        # concurrently, as Stripe may.
        self.localstripe.configure_webhook(
            "crowdline-twin", url, WEBHOOK_SECRET, None if twice else []
        )

    def stop_webhooks(self) -> None:
        for name in ("crowdline", "crowdline-twin"):
            self.localstripe.configure_webhook(name, "http://127.0.0.1:9/", WEBHOOK_SECRET, [])


# Test modules use these fixtures by aliasing them (`stripe_fake = stripe_servers.stripe_fake`),
# and pytest keeps a session-scoped fixture per module that defines it. So the servers live
# here, one per test session: every module's instance hands out the same ones, and the first
# teardown at the end of the session stops them.
_SHARED: dict[str, Any] = {}


@pytest.fixture(scope="session")
def localstripe_server() -> Iterator[LocalStripe]:
    if "localstripe" not in _SHARED:
        _SHARED["localstripe"] = _start_localstripe()
    try:
        yield _SHARED["localstripe"]
    finally:
        if (server := _SHARED.pop("localstripe", None)) is not None:
            _stop(server.process)
            with contextlib.suppress(OSError):
                os.unlink(server.log_path)


@pytest.fixture(scope="session")
def stripe_stub(localstripe_server: LocalStripe) -> Iterator[StripeStub]:
    if "stub" not in _SHARED:
        _SHARED["stub"] = StripeStub(localstripe_server.base)
    try:
        yield _SHARED["stub"]
    finally:
        if (stub := _SHARED.pop("stub", None)) is not None:
            stub.close()


@pytest.fixture
def stripe_fake(localstripe_server: LocalStripe, stripe_stub: StripeStub) -> Iterator[StripeFake]:
    """Empty Stripe for one test: localstripe's data flushed, the stub's state cleared."""
    localstripe_server.flush()
    stripe_stub.reset()
    fake = StripeFake(stripe_stub.base, stripe_stub, localstripe_server)
    fake.stop_webhooks()
    try:
        yield fake
    finally:
        fake.stop_webhooks()


@pytest.fixture(scope="session")
def stripe_app(app, stripe_stub: StripeStub):
    """The app configured for Stripe (aimed at the stub), sharing the test database."""
    from tests.conftest import build_app

    if _SHARED.get("app_base") != stripe_stub.base:
        _SHARED["app"] = build_app(
            stripe_secret_key=SECRET_KEY,
            stripe_api_base=stripe_stub.base,
            stripe_webhook_secret=WEBHOOK_SECRET,
        )
        _SHARED["app_base"] = stripe_stub.base
    return _SHARED["app"]


@dataclass
class LiveServer:
    url: str
    counters: dict[str, int]  # "served" (requests answered), "in_flight"

    @property
    def webhook_url(self) -> str:
        return self.url + WEBHOOK_PATH

    def quiet(self, served: int = 1) -> bool:
        """At least `served` requests answered and none in progress."""
        return self.counters["served"] >= served and self.counters["in_flight"] == 0


@pytest.fixture
def stripe_app_server(stripe_app) -> Iterator[LiveServer]:
    """`stripe_app` served on a loopback port, so localstripe can POST webhooks to it.

    One per test: once it is shut down, a webhook still on its way finds nobody, rather than
    landing in the next test's empty tables. Teardown waits for requests in progress."""
    counters = {"served": 0, "in_flight": 0}
    lock = threading.Lock()

    def counted(environ, start_response):
        with lock:
            counters["in_flight"] += 1
        try:
            return list(stripe_app(environ, start_response))
        finally:
            with lock:
                counters["in_flight"] -= 1
                counters["served"] += 1

    server = make_server("127.0.0.1", 0, counted, threaded=True)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield LiveServer(f"http://127.0.0.1:{server.server_port}", counters)
    finally:
        server.shutdown()
        server.server_close()
        deadline = time.monotonic() + 10
        while counters["in_flight"] and time.monotonic() < deadline:
            time.sleep(0.02)


def wait_for(condition: Callable[[], Any], timeout: float = 5.0, interval: float = 0.02) -> Any:
    """Poll until `condition()` is truthy (and return it), or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {condition}")
        time.sleep(interval)


# --- flows through the fakes ---------------------------------------------------------------


def worker_profile(api) -> int:
    """A new worker's profile id."""
    from tests.workforce import worker_id

    return worker_id(api, api.signup("worker"))


def paid_payout(stripe_fake: StripeFake, stripe_app, db_session, api, amount: int = 1500):
    """A worker with a ready Connect account and `amount` available, paid out by the real
    payout run through the stub (so the ledger holds `payout` and `payout_paid`)."""
    from datetime import UTC, datetime

    from sqlalchemy import select

    from billing import ledger, payouts
    from billing.ledger import Leg
    from billing.models import OwnerType, Payout, PayoutAccount, PayoutAccountStatus, Purpose
    from marketplace.database import db

    worker = worker_profile(api)
    account = stripe_fake.gateway().create_connected_account("w@example.org", "US", f"a-{worker}")
    stripe_fake.stub.complete_onboarding(account.id)
    now = datetime.now(UTC)
    db_session.add(
        PayoutAccount(
            worker_id=worker,
            processor_account_id=account.id,
            country="US",
            status=PayoutAccountStatus.READY,
            created_at=now,
            updated_at=now,
        )
    )
    db_session.flush()
    with stripe_app.app_context():
        ledger.post(
            "test_earnings",
            f"test-earnings:{worker}",
            [
                Leg(ledger.processor("USD"), -amount),
                Leg(ledger.account(OwnerType.WORKER, worker, Purpose.AVAILABLE, "USD"), amount),
            ],
            worker_id=worker,
        )
        db.session.commit()
        summary = payouts.run_payouts()
    assert summary.paid == 1, summary
    return db_session.scalar(select(Payout).where(Payout.worker_id == worker))
