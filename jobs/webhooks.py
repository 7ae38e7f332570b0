"""Client webhooks: endpoints, the deliveries events become, signed delivery with retries.

An organization's admins register endpoints, each subscribed to some event types. An event
becomes one `WebhookDelivery` per subscribed endpoint, written in the transaction that
causes it (a rolled-back change announces nothing), and is sent by an RQ job after commit.

Delivery is at least once. A sender claims a delivery (attempts + 1, next_attempt_at pushed
IN_FLIGHT_SECONDS ahead) and commits before its request goes out, so a sender that dies
mid-request leaves the delivery to be retried. The event id (`Crowdline-Event-Id`, and `id`
in the body) stays the same across retries, so receivers deduplicate on it. A non-2xx
answer, a redirect, a timeout or a connection error is retried after 30 s, 2 min, 10 min,
1 h and 6 h, by the periodic `deliver_due`; after that the delivery is `failed`. Every
attempt updates the delivery log: attempts, last_attempt_at, last_status_code, last_error,
next_attempt_at.

Signing, as Stripe does it: `Crowdline-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of
"<t>.<raw body>" keyed with the endpoint's secret>`.

The events themselves, and the batching of task.completed, are in jobs/events.py.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import secrets
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import requests
from flask import current_app
from sqlalchemy import func, select, update

from jobs.models import DeliveryStatus, WebhookDelivery, WebhookEndpoint
from marketplace import audit, clock
from marketplace.accounts.models import Organization, Role
from marketplace.auth import require_org_role
from marketplace.database import db
from marketplace.errors import Conflict, NotFound, ValidationFailed
from marketplace.pagination import paginate

BACKOFF_SECONDS = (30, 120, 600, 3600, 6 * 3600)
MAX_ATTEMPTS = len(BACKOFF_SECONDS) + 1
TIMEOUT_SECONDS = 5
# A claimed delivery whose sender never reported back is tried again after this.
IN_FLIGHT_SECONDS = 60
DUE_PER_ROUND = 50
# One periodic run stops starting rounds after this, well inside RQ's job timeout; the
# next run (every 15 s) carries on.
MAX_RUN_SECONDS = 120
SENDERS = 8
MAX_ENDPOINTS_PER_ORG = 20
SIGNATURE_HEADER = "Crowdline-Signature"
PRIVATE_TARGET = "The URL must point to a public internet address."


def private_targets_allowed() -> bool:
    """Loopback and private addresses are refused (SSRF) unless a deployment allows them:
    tests and the sandbox, whose receivers run next to the server."""
    sandbox = current_app.config["CROWDLINE"].sandbox
    return bool(current_app.config.get("WEBHOOK_ALLOW_PRIVATE_TARGETS", sandbox))


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


# --- targets and signatures --------------------------------------------------------------


def target_problem(url: str, *, allow_private: bool, resolve: bool) -> str | None:
    """Why `url` may not receive webhooks, or None. Resolving the host happens at send time;
    at registration only literal addresses and local names are checked."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "The URL is malformed."
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "Use an http or https URL with a host."
    if len(url) > 2000:
        return "The URL is longer than 2000 characters."
    if allow_private:
        return None
    host = parts.hostname.rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return PRIVATE_TARGET
    try:
        addresses = [ipaddress.ip_address(host)]
    except ValueError:
        try:
            socket.inet_aton(host)  # "2130706433", "0x7f.1": numeric hosts in disguise
            return "Write IP addresses in dotted decimal form."
        except OSError:
            pass
        if not resolve:
            return None
        default_port = 443 if parts.scheme == "https" else 80
        try:
            infos = socket.getaddrinfo(host, port or default_port, proto=socket.IPPROTO_TCP)
        except OSError:
            return f"The host {host} does not resolve."
        addresses = [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]
    if any(not address.is_global for address in addresses):
        return PRIVATE_TARGET
    return None


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The Crowdline-Signature header value for `body` sent at `timestamp`."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def _new_secret() -> str:
    return "whsec_" + secrets.token_hex(24)


# --- endpoints ---------------------------------------------------------------------------


def _organization(organization_id: int) -> Organization:
    require_org_role(organization_id, Role.ADMIN)
    org = db.session.get(Organization, organization_id)
    if org is None:
        raise NotFound(f"organization {organization_id} not found")
    return org


def _endpoint(organization_id: int, endpoint_id: int) -> WebhookEndpoint:
    _organization(organization_id)
    endpoint = db.session.get(WebhookEndpoint, endpoint_id)
    if endpoint is None or endpoint.organization_id != organization_id or not endpoint.active:
        raise NotFound(f"webhook {endpoint_id} not found")
    return endpoint


def create_endpoint(organization_id: int, data: dict[str, Any]) -> WebhookEndpoint:
    """Register an endpoint; its signing secret is returned this once."""
    org = _organization(organization_id)
    url = data["url"]
    if problem := target_problem(url, allow_private=private_targets_allowed(), resolve=False):
        raise ValidationFailed(problem, errors={"url": [problem]})
    active = db.session.scalar(
        select(func.count())
        .select_from(WebhookEndpoint)
        .where(WebhookEndpoint.organization_id == org.id, WebhookEndpoint.active.is_(True))
    )
    if active >= MAX_ENDPOINTS_PER_ORG:
        raise Conflict(
            f"An organization may have at most {MAX_ENDPOINTS_PER_ORG} webhooks; delete one."
        )
    events = list(dict.fromkeys(data["events"]))
    endpoint = WebhookEndpoint(
        organization_id=org.id,
        url=url,
        secret=_new_secret(),
        events=events,
        active=True,
        created_at=clock.now(),
    )
    db.session.add(endpoint)
    db.session.flush()
    audit.record(
        "webhook.created",
        "webhook_endpoint",
        endpoint.id,
        organization_id=org.id,
        detail={"url": url, "events": events},
    )
    db.session.commit()
    return endpoint


def list_endpoints(organization_id: int, args: dict[str, Any]) -> dict[str, Any]:
    org = _organization(organization_id)
    query = select(WebhookEndpoint).where(
        WebhookEndpoint.organization_id == org.id, WebhookEndpoint.active.is_(True)
    )
    return paginate(query, WebhookEndpoint.id, args)


def delete_endpoint(organization_id: int, endpoint_id: int) -> None:
    """Stop sending to an endpoint; what it has not yet received is marked failed."""
    endpoint = _endpoint(organization_id, endpoint_id)
    endpoint.active = False
    abandoned = db.session.execute(
        update(WebhookDelivery)
        .where(
            WebhookDelivery.endpoint_id == endpoint.id,
            WebhookDelivery.status == DeliveryStatus.PENDING,
        )
        .values(status=DeliveryStatus.FAILED, next_attempt_at=None, last_error="endpoint deleted")
    ).rowcount
    audit.record(
        "webhook.deleted",
        "webhook_endpoint",
        endpoint.id,
        organization_id=organization_id,
        detail={"url": endpoint.url, "pending_abandoned": abandoned},
    )
    db.session.commit()


def list_deliveries(organization_id: int, endpoint_id: int, args: dict[str, Any]):
    """The endpoint's delivery log, oldest first, cursor-paged."""
    endpoint = _endpoint(organization_id, endpoint_id)
    query = select(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint.id)
    if status := args.get("status"):
        query = query.where(WebhookDelivery.status == status)
    if event_type := args.get("event_type"):
        query = query.where(WebhookDelivery.event_type == event_type)
    return paginate(query, WebhookDelivery.id, args)


# --- sending -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Attempt:
    delivery_id: int
    number: int
    url: str
    secret: str
    event_id: str
    event_type: str
    body: bytes


@dataclass(frozen=True)
class Outcome:
    status_code: int | None
    error: str | None

    @property
    def ok(self) -> bool:
        return self.error is None


def _body(delivery: WebhookDelivery) -> bytes:
    envelope = {
        "id": delivery.event_id,
        "type": delivery.event_type,
        "created_at": _iso(delivery.created_at),
        "data": delivery.payload,
    }
    return json.dumps(envelope, separators=(",", ":")).encode()


def _claim(*conditions: Any, limit: int) -> tuple[list[Attempt], int]:
    """Take due deliveries nobody else holds, count the attempt, and commit the claim;
    returns the attempts to make and how many deliveries were taken (some only to fail)."""
    now = clock.now()
    rows = db.session.execute(
        select(WebhookDelivery, WebhookEndpoint)
        .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
        .where(
            WebhookDelivery.status == DeliveryStatus.PENDING,
            WebhookDelivery.next_attempt_at <= now,
            *conditions,
        )
        .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id)
        .limit(limit)
        .with_for_update(skip_locked=True, of=WebhookDelivery)
        .execution_options(populate_existing=True)
    ).all()
    attempts = []
    for delivery, endpoint in rows:
        if not endpoint.active or delivery.attempts >= MAX_ATTEMPTS:
            delivery.status = DeliveryStatus.FAILED
            delivery.next_attempt_at = None
            delivery.last_error = (
                "endpoint deleted"
                if not endpoint.active
                else "gave up: the last attempt's sender never reported back"
            )
            continue
        delivery.attempts += 1
        delivery.last_attempt_at = now
        delivery.next_attempt_at = now + timedelta(seconds=IN_FLIGHT_SECONDS)
        attempts.append(
            Attempt(
                delivery_id=delivery.id,
                number=delivery.attempts,
                url=endpoint.url,
                secret=endpoint.secret,
                event_id=delivery.event_id,
                event_type=delivery.event_type,
                body=_body(delivery),
            )
        )
    db.session.commit()
    return attempts, len(rows)


def post(attempt: Attempt, *, allow_private: bool) -> Outcome:
    """Send one signed request; never raises. Runs without an app context (in threads)."""
    if problem := target_problem(attempt.url, allow_private=allow_private, resolve=True):
        return Outcome(None, problem)
    # The signature's timestamp is wall-clock time, not the (possibly simulated) domain
    # clock: receivers compare it with their own clock to refuse replays.
    timestamp = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "Crowdline-Webhooks/1",
        SIGNATURE_HEADER: signature(attempt.secret, timestamp, attempt.body),
        "Crowdline-Event-Id": attempt.event_id,
        "Crowdline-Event-Type": attempt.event_type,
        "Crowdline-Delivery-Attempt": str(attempt.number),
    }
    try:
        with requests.Session() as session:
            session.trust_env = False  # no proxies or .netrc credentials from the environment
            with session.post(
                attempt.url,
                data=attempt.body,
                headers=headers,
                timeout=TIMEOUT_SECONDS,
                allow_redirects=False,
                stream=True,
            ) as response:
                code = response.status_code
                if 200 <= code < 300:
                    return Outcome(code, None)
                snippet = next(response.iter_content(200), b"").decode("utf-8", "replace")
                reason = " (redirects are not followed)" if 300 <= code < 400 else ""
                return Outcome(code, f"HTTP {code}{reason}: {snippet}".strip().rstrip(":"))
    except requests.Timeout:
        return Outcome(None, f"timed out after {TIMEOUT_SECONDS} s")
    except requests.RequestException as error:
        return Outcome(None, f"{type(error).__name__}: {error}"[:1000])


def _record(attempt: Attempt, outcome: Outcome) -> None:
    now = clock.now()
    if outcome.ok:
        values: dict[str, Any] = {"status": DeliveryStatus.DELIVERED, "next_attempt_at": None}
    elif attempt.number >= MAX_ATTEMPTS:
        values = {"status": DeliveryStatus.FAILED, "next_attempt_at": None}
    else:
        wait = timedelta(seconds=BACKOFF_SECONDS[attempt.number - 1])
        values = {"next_attempt_at": now + wait}
    # A receiver's words go into a text column: no NULs (PostgreSQL refuses them).
    error = outcome.error.replace("\x00", "") if outcome.error else None
    values |= {"last_status_code": outcome.status_code, "last_error": error}
    # Only if the claim is still ours: a delivery deleted or re-claimed meanwhile is left be.
    db.session.execute(
        update(WebhookDelivery)
        .where(
            WebhookDelivery.id == attempt.delivery_id,
            WebhookDelivery.attempts == attempt.number,
            WebhookDelivery.status == DeliveryStatus.PENDING,
        )
        .values(**values)
    )


def _send(attempts: list[Attempt]) -> list[Outcome]:
    allow = private_targets_allowed()
    if len(attempts) <= 1:
        outcomes = [post(a, allow_private=allow) for a in attempts]
    else:
        with ThreadPoolExecutor(max_workers=min(SENDERS, len(attempts))) as pool:
            outcomes = list(pool.map(lambda a: post(a, allow_private=allow), attempts))
    for attempt, outcome in zip(attempts, outcomes, strict=True):
        _record(attempt, outcome)
    db.session.commit()
    return outcomes


def deliver(delivery_id: int) -> str | None:
    """Try one delivery now if it is due and nobody else holds it; returns its outcome."""
    attempts, _ = _claim(WebhookDelivery.id == delivery_id, limit=1)
    if not attempts:
        return None
    (outcome,) = _send(attempts)
    return "delivered" if outcome.ok else outcome.error


def deliver_due() -> int:
    """Send every due delivery (first tries, retries, closed batches); returns how many."""
    total = 0
    started = time.monotonic()
    while time.monotonic() - started < MAX_RUN_SECONDS:
        attempts, taken = _claim(limit=DUE_PER_ROUND)
        if not taken:
            break
        _send(attempts)
        total += len(attempts)
    return total
