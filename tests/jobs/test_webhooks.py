"""Client webhooks: registration, signing, retries with backoff, the delivery log, and the
task.completed batches that must announce every completed task exactly once.

Deliveries go to a small HTTP server on 127.0.0.1 run by the test; nothing leaves the host.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
import time
from collections import Counter
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy import func, select

from billing import services as billing
from jobs import events as job_events
from jobs import tasks as job_tasks
from jobs import webhooks
from jobs.models import DeliveryStatus, Task, WebhookDelivery, WebhookEndpoint
from tests.helpers import Api, assert_problem
from tests.jobs.helpers import active_job, active_worker, lease

SINGLE = {"min": 1, "max": 1, "target_confidence": 0.9}
ORGS = "/api/v1/organizations"


class Receiver:
    """An HTTP server that records what it receives and answers with scripted statuses."""

    def __init__(self):
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.statuses: list[int] = []  # answered in order; 200 once exhausted
        self.reply = b"no"  # the body of an error answer
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver._lock:
                    receiver.received.append((dict(self.headers), body))
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                reply = receiver.reply if status >= 300 else b"ok"
                self.send_response(status)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *_args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/crowdline/hooks"

    def events(self, event_type: str | None = None) -> list[dict]:
        with self._lock:
            bodies = [json.loads(body) for _, body in self.received]
        return [b for b in bodies if event_type is None or b["type"] == event_type]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def verify(secret: str, headers: dict[str, str], body: bytes, tolerance: int = 300) -> dict:
    """What a client's receiver does: check the signature over the raw body, then parse."""
    fields = dict(part.split("=", 1) for part in headers["Crowdline-Signature"].split(","))
    timestamp = int(fields["t"])
    expected = hmac.new(
        secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256
    ).hexdigest()
    assert hmac.compare_digest(expected, fields["v1"]), "bad signature"
    assert abs(time.time() - timestamp) <= tolerance, "stale timestamp"
    event = json.loads(body)
    assert headers["Crowdline-Event-Id"] == event["id"]
    assert headers["Crowdline-Event-Type"] == event["type"]
    return event


@pytest.fixture(autouse=True)
def _loopback_receivers(app, monkeypatch):
    monkeypatch.setitem(app.config, "WEBHOOK_ALLOW_PRIVATE_TARGETS", True)


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.close()


def _subscribe(api, client, url, events) -> dict:
    org_id = client.organization["id"]
    response = api.post(
        f"{ORGS}/{org_id}/webhooks", client.token, json={"url": url, "events": events}
    )
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def _judge(api, worker, job_id, answer="cat"):
    leased = lease(api, worker, job_id)
    assert leased.status_code == 201, leased.get_json()
    assignment = leased.get_json()
    response = api.post(
        f"/api/v1/assignments/{assignment['id']}/submit", worker.token, json={"answer": answer}
    )
    assert response.status_code == 200, response.get_json()
    return assignment


def _run_periodic(app) -> int:
    with app.app_context():
        return job_tasks.deliver_due_webhooks()


def _deliveries(db_session) -> list[WebhookDelivery]:
    return list(db_session.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id)))


def _log(api, client, hook, query=""):
    org_id = client.organization["id"]
    response = api.get(f"{ORGS}/{org_id}/webhooks/{hook['id']}/deliveries{query}", client.token)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def _task_ids(events) -> list[int]:
    return [task["task_id"] for event in events for task in event["data"]["tasks"]]


# --- registering endpoints ---------------------------------------------------------------


def test_register_list_and_delete_a_webhook(api, db_session):
    client = api.signup("client")
    org_id = client.organization["id"]
    created = _subscribe(
        api, client, "https://hooks.example.com/crowdline", ["job.completed", "job.completed"]
    )
    assert created["secret"].startswith("whsec_") and len(created["secret"]) > 40
    assert created["events"] == ["job.completed"]
    assert created["url"] == "https://hooks.example.com/crowdline"
    listing = api.get(f"{ORGS}/{org_id}/webhooks", client.token).get_json()
    assert [h["id"] for h in listing["items"]] == [created["id"]]
    assert "secret" not in listing["items"][0]
    assert created["secret"] not in json.dumps(listing)

    assert api.delete(f"{ORGS}/{org_id}/webhooks/{created['id']}", client.token).status_code == 204
    assert api.get(f"{ORGS}/{org_id}/webhooks", client.token).get_json()["items"] == []
    assert_problem(api.delete(f"{ORGS}/{org_id}/webhooks/{created['id']}", client.token), 404)
    assert_problem(
        api.get(f"{ORGS}/{org_id}/webhooks/{created['id']}/deliveries", client.token), 404
    )
    assert not db_session.get(WebhookEndpoint, created["id"]).active


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": "ftp://hooks.example.com/x", "events": ["job.completed"]}, "url"),
        ({"url": "hooks.example.com/x", "events": ["job.completed"]}, "url"),
        ({"url": "https://h.example.com/" + "x" * 2000, "events": ["job.completed"]}, "url"),
        ({"url": "https://hooks.example.com/x", "events": []}, "events"),
        ({"url": "https://hooks.example.com/x", "events": ["job.started"]}, "events"),
        ({"url": "https://hooks.example.com/x", "events": "job.completed"}, "events"),
        ({"events": ["job.completed"]}, "url"),
        ({"url": "https://hooks.example.com/x", "events": ["job.completed"], "x": 1}, "x"),
    ],
)
def test_bad_webhook_input_is_422_and_writes_nothing(api, db_session, body, field):
    client = api.signup("client")
    response = api.post(f"{ORGS}/{client.organization['id']}/webhooks", client.token, json=body)
    assert_problem(response, 422, field=field)
    assert db_session.scalar(select(func.count()).select_from(WebhookEndpoint)) == 0


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://localhost/hook",
        "http://api.localhost/hook",
        "http://10.1.2.3/hook",
        "http://192.168.0.7/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://0.0.0.0/hook",
        "http://2130706433/hook",
        "http://0x7f.1/hook",
    ],
)
def test_private_targets_are_refused_unless_allowed(api, app, monkeypatch, url):
    monkeypatch.setitem(app.config, "WEBHOOK_ALLOW_PRIVATE_TARGETS", False)
    client = api.signup("client")
    response = api.post(
        f"{ORGS}/{client.organization['id']}/webhooks",
        client.token,
        json={"url": url, "events": ["job.completed"]},
    )
    assert_problem(response, 422, field="url")


def test_only_the_organizations_admins_manage_its_webhooks(api, app):
    owner = api.signup("client")
    org_id = owner.organization["id"]
    member = api.signup("client")
    added = api.post(
        f"{ORGS}/{org_id}/members", owner.token, json={"email": member.email, "role": "member"}
    )
    assert added.status_code == 201, added.get_json()
    hook = _subscribe(api, owner, "https://hooks.example.com/x", ["job.completed"])
    intruder = api.signup("client")
    worker = api.signup("worker")
    paths = [f"{ORGS}/{org_id}/webhooks", f"{ORGS}/{org_id}/webhooks/{hook['id']}/deliveries"]
    body = {"url": "https://evil.example.com/x", "events": ["task.completed"]}
    for path in paths:
        assert_problem(api.get(path, intruder.token), 404)
        assert_problem(api.get(path, member.token), 403)
        assert_problem(api.get(path, worker.token), 403)
    assert_problem(api.post(paths[0], intruder.token, json=body), 404)
    assert_problem(api.post(paths[0], member.token, json=body), 403)
    assert_problem(api.delete(f"{ORGS}/{org_id}/webhooks/{hook['id']}", intruder.token), 404)
    assert_problem(api.delete(f"{ORGS}/{org_id}/webhooks/{hook['id']}", member.token), 403)
    # Another tenant's endpoint id through one's own organization is just as missing.
    theirs = intruder.organization["id"]
    assert_problem(api.delete(f"{ORGS}/{theirs}/webhooks/{hook['id']}", intruder.token), 404)
    assert len(api.get(paths[0], owner.token).get_json()["items"]) == 1


# --- delivery ----------------------------------------------------------------------------


def test_job_completed_is_signed_and_delivered_exactly_once(api, app, receiver, db_session):
    admin = api.admin(app)
    client = api.signup("client")
    hook = _subscribe(api, client, receiver.url, ["job.completed"])
    job = active_job(api, app, client, tasks=2, gold=1, redundancy=SINGLE)
    worker = active_worker(api, admin)
    _judge(api, worker, job["id"])
    assert receiver.received == []  # the job is not done yet
    _judge(api, worker, job["id"])

    assert len(receiver.received) == 1
    headers, body = receiver.received[0]
    assert headers["Content-Type"] == "application/json"
    event = verify(hook["secret"], headers, body)
    assert event["type"] == "job.completed"
    assert event["id"].startswith("evt_")
    data = event["data"]
    assert data["job"]["id"] == job["id"] and data["job"]["title"] == job["title"]
    assert data["job"]["status"] == "completed" and data["job"]["completed_at"]
    assert data["tasks"] == {"open": 0, "completed": 2, "cancelled": 0, "total": 2}
    assert data["gold_tasks"]["total"] == 1
    assert data["judgments"]["accepted"] == 2
    # A tampered body or another secret fails verification.
    with pytest.raises(AssertionError):
        verify(hook["secret"], headers, body.replace(b"completed", b"cancelled", 1))
    with pytest.raises(AssertionError):
        verify("whsec_wrong", headers, body)

    assert _run_periodic(app) == 0
    assert len(receiver.received) == 1
    (delivery,) = _deliveries(db_session)
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == (
        DeliveryStatus.DELIVERED,
        1,
        200,
    )


def test_retries_follow_the_backoff_until_delivered(api, app, manual_clock, receiver, db_session):
    admin = api.admin(app)
    client = api.signup("client")
    hook = _subscribe(api, client, receiver.url, ["job.completed"])
    job = active_job(api, app, client, tasks=1, redundancy=SINGLE)
    receiver.statuses = [500, 503]
    receiver.reply = b"down\x00 for maintenance"  # a NUL no text column can store
    _judge(api, active_worker(api, admin), job["id"])

    first_try = manual_clock.now()
    (delivery,) = _deliveries(db_session)
    assert delivery.status == DeliveryStatus.PENDING
    assert (delivery.attempts, delivery.last_status_code) == (1, 500)
    assert delivery.last_error == "HTTP 500: down for maintenance"
    assert delivery.next_attempt_at == first_try + timedelta(seconds=30)

    manual_clock.advance(29)
    assert _run_periodic(app) == 0  # not due yet
    manual_clock.advance(1)
    assert _run_periodic(app) == 1
    (delivery,) = _deliveries(db_session)
    assert (delivery.attempts, delivery.last_status_code) == (2, 503)
    assert delivery.next_attempt_at == manual_clock.now() + timedelta(minutes=2)

    manual_clock.advance(119)
    assert _run_periodic(app) == 0
    manual_clock.advance(1)
    assert _run_periodic(app) == 1
    (delivery,) = _deliveries(db_session)
    assert delivery.status == DeliveryStatus.DELIVERED
    assert (delivery.attempts, delivery.last_status_code, delivery.last_error) == (3, 200, None)
    assert delivery.next_attempt_at is None

    assert len(receiver.received) == 3
    events = [verify(hook["secret"], h, b) for h, b in receiver.received]
    assert len({e["id"] for e in events}) == 1  # the same event each time: dedupe on it
    assert [h["Crowdline-Delivery-Attempt"] for h, _ in receiver.received] == ["1", "2", "3"]
    assert {b for _, b in receiver.received} == {receiver.received[0][1]}  # same body

    log = _log(api, client, hook)["items"]
    assert [(d["status"], d["attempts"], d["last_status_code"]) for d in log] == [
        ("delivered", 3, 200)
    ]
    assert log[0]["event_id"] == events[0]["id"]


def test_a_delivery_fails_after_the_last_retry(api, app, manual_clock, receiver, db_session):
    admin = api.admin(app)
    client = api.signup("client")
    _subscribe(api, client, receiver.url, ["job.completed"])
    job = active_job(api, app, client, tasks=1, redundancy=SINGLE)
    receiver.statuses = [500] * 20
    _judge(api, active_worker(api, admin), job["id"])
    for wait in webhooks.BACKOFF_SECONDS:
        manual_clock.advance(wait)
        assert _run_periodic(app) == 1
    (delivery,) = _deliveries(db_session)
    assert (delivery.status, delivery.attempts) == (DeliveryStatus.FAILED, webhooks.MAX_ATTEMPTS)
    assert delivery.next_attempt_at is None
    manual_clock.advance(7 * 86400)
    assert _run_periodic(app) == 0
    assert len(receiver.received) == webhooks.MAX_ATTEMPTS == 6


def test_unreachable_receivers_and_timeouts_are_logged(api, app, db_session, monkeypatch):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    admin = api.admin(app)
    client = api.signup("client")
    _subscribe(api, client, f"http://127.0.0.1:{closed_port}/x", ["job.completed"])
    job = active_job(api, app, client, tasks=1, redundancy=SINGLE)
    _judge(api, active_worker(api, admin), job["id"])
    (delivery,) = _deliveries(db_session)
    assert delivery.status == DeliveryStatus.PENDING
    assert delivery.last_status_code is None
    assert "ConnectionError" in delivery.last_error

    # A receiver that accepts the connection but never answers times out.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)
    monkeypatch.setattr(webhooks, "TIMEOUT_SECONDS", 0.2)
    attempt = webhooks.Attempt(
        1, 1, f"http://127.0.0.1:{silent.getsockname()[1]}/", "s", "e", "t", b"{}"
    )
    try:
        outcome = webhooks.post(attempt, allow_private=True)
    finally:
        silent.close()
    assert (outcome.status_code, outcome.error) == (None, "timed out after 0.2 s")


def test_a_receivers_error_text_is_logged_safely(receiver):
    receiver.statuses = [500]
    receiver.reply = b"boom\x00\xff" + b"x" * 5000
    attempt = webhooks.Attempt(1, 1, receiver.url, "s", "e", "t", b"{}")
    outcome = webhooks.post(attempt, allow_private=True)
    assert outcome.status_code == 500
    assert outcome.error.startswith("HTTP 500: boom") and len(outcome.error) < 300


def test_redirects_are_not_followed(receiver):
    receiver.statuses = [302]
    attempt = webhooks.Attempt(1, 1, receiver.url, "s", "e", "t", b"{}")
    outcome = webhooks.post(attempt, allow_private=True)
    assert outcome.status_code == 302 and "redirects are not followed" in outcome.error


def test_private_targets_are_checked_again_when_sending(
    api, app, receiver, db_session, monkeypatch
):
    admin = api.admin(app)
    client = api.signup("client")
    _subscribe(api, client, receiver.url, ["job.completed"])
    monkeypatch.setitem(app.config, "WEBHOOK_ALLOW_PRIVATE_TARGETS", False)
    job = active_job(api, app, client, tasks=1, redundancy=SINGLE)
    _judge(api, active_worker(api, admin), job["id"])
    (delivery,) = _deliveries(db_session)
    assert delivery.last_error == webhooks.PRIVATE_TARGET
    assert receiver.received == []


def test_deleting_an_endpoint_abandons_what_it_has_not_received(
    api, app, manual_clock, receiver, db_session
):
    admin = api.admin(app)
    client = api.signup("client")
    hook = _subscribe(api, client, receiver.url, ["job.completed", "task.completed"])
    job = active_job(api, app, client, tasks=2, redundancy=SINGLE)
    receiver.statuses = [500]
    worker = active_worker(api, admin)
    _judge(api, worker, job["id"])
    org_id = client.organization["id"]
    assert api.delete(f"{ORGS}/{org_id}/webhooks/{hook['id']}", client.token).status_code == 204
    _judge(api, worker, job["id"])  # completes the job: nobody is subscribed any more
    manual_clock.advance(3600)
    assert _run_periodic(app) == 0
    assert receiver.received == []
    deliveries = _deliveries(db_session)
    assert [(d.status, d.last_error) for d in deliveries] == [
        (DeliveryStatus.FAILED, "endpoint deleted")
    ]


def test_budget_low_is_announced_once_per_funding(api, app, receiver, db_session):
    admin = api.admin(app)
    client = api.signup("client")
    hook = _subscribe(api, client, receiver.url, ["job.budget_low"])
    with app.app_context():
        cost = billing.hold_cost(5)
        threshold = app.config["CROWDLINE"].budget_low_judgments * cost
    job = active_job(api, app, client, tasks=5, budget=threshold + cost - 1)
    workers = [active_worker(api, admin) for _ in range(2)]
    assert lease(api, workers[0], job["id"]).status_code == 201
    assert lease(api, workers[1], job["id"]).status_code == 201
    (event,) = [verify(hook["secret"], h, b) for h, b in receiver.received]
    assert event["type"] == "job.budget_low"
    assert event["data"] == {
        "job": {"id": job["id"], "title": job["title"]},
        "free_budget": {"amount": threshold - 1, "currency": "USD"},
    }


# --- task.completed batches --------------------------------------------------------------


def test_task_batches_cover_every_task_exactly_once(api, app, receiver, db_session, monkeypatch):
    monkeypatch.setitem(app.config, "WEBHOOK_BATCH_SIZE", 3)
    admin = api.admin(app)
    client = api.signup("client")
    hook = _subscribe(api, client, receiver.url, ["task.completed", "job.completed"])
    job = active_job(api, app, client, tasks=7, redundancy=SINGLE)
    worker = active_worker(api, admin)
    for _ in range(3):
        _judge(api, worker, job["id"])
    (batch,) = receiver.events()  # full at three: sent at once
    assert batch["type"] == "task.completed"
    assert batch["data"]["job"] == {"id": job["id"], "title": job["title"]}
    assert len(batch["data"]["tasks"]) == 3
    _judge(api, worker, job["id"])
    _judge(api, worker, job["id"])
    assert len(receiver.received) == 1  # two results wait in an open batch
    _judge(api, worker, job["id"])
    _judge(api, worker, job["id"])  # the last task: the job completes

    events = [verify(hook["secret"], h, b) for h, b in receiver.received]
    assert [e["type"] for e in events] == ["task.completed"] * 3 + ["job.completed"]
    assert [len(e["data"]["tasks"]) for e in events[:3]] == [3, 3, 1]
    all_ids = sorted(db_session.scalars(select(Task.id).where(Task.job_id == job["id"])))
    assert sorted(_task_ids(events[:3])) == all_ids
    assert len({e["id"] for e in events}) == 4
    line = events[0]["data"]["tasks"][0]
    assert line["status"] == "completed" and line["answer"] == "cat"
    assert line["confidence"] == 0.7 and line["judgments"] == 1 and line["method"] == "posterior"

    assert _run_periodic(app) == 0
    log = _log(api, client, hook, "?limit=3")
    assert [d["event_type"] for d in log["items"]] == ["task.completed"] * 3
    assert all(d["status"] == "delivered" and d["attempts"] == 1 for d in log["items"])
    assert log["items"][0]["payload"]["tasks"][0]["task_id"] == all_ids[0]
    rest = _log(api, client, hook, f"?limit=3&cursor={log['next_cursor']}")
    assert [d["event_type"] for d in rest["items"]] == ["job.completed"]
    assert rest["next_cursor"] is None
    only_jobs = _log(api, client, hook, "?event_type=job.completed")["items"]
    assert [d["event_id"] for d in only_jobs] == [events[3]["id"]]
    assert _log(api, client, hook, "?status=failed")["items"] == []
    assert_problem(
        api.get(
            f"{ORGS}/{client.organization['id']}/webhooks/{hook['id']}/deliveries?status=lost",
            client.token,
        ),
        422,
        field="status",
    )


def test_a_batch_is_sent_when_its_window_ends(api, app, manual_clock, receiver, db_session):
    admin = api.admin(app)
    client = api.signup("client")
    _subscribe(api, client, receiver.url, ["task.completed"])
    job = active_job(api, app, client, tasks=5, redundancy=SINGLE)
    worker = active_worker(api, admin)
    _judge(api, worker, job["id"])
    manual_clock.advance(4)
    _judge(api, worker, job["id"])
    assert _run_periodic(app) == 0 and receiver.received == []
    manual_clock.advance(job_events.BATCH_SECONDS - 4)
    assert _run_periodic(app) == 1
    assert [len(e["data"]["tasks"]) for e in receiver.events()] == [2]
    # A completion after the window opens a new batch rather than joining the sent one.
    _judge(api, worker, job["id"])
    manual_clock.advance(job_events.BATCH_SECONDS)
    assert _run_periodic(app) == 1
    assert [len(e["data"]["tasks"]) for e in receiver.events()] == [2, 1]
    assert len(set(_task_ids(receiver.events()))) == 3


def test_other_organizations_hear_nothing(api, app, receiver):
    admin = api.admin(app)
    client = api.signup("client")
    other = api.signup("client")
    _subscribe(api, other, receiver.url, ["task.completed", "job.completed"])
    job = active_job(api, app, client, tasks=1, redundancy=SINGLE)
    _judge(api, active_worker(api, admin), job["id"])
    assert _run_periodic(app) == 0
    assert receiver.received == []


def test_concurrent_completions_are_each_announced_once(
    api, app, manual_clock, receiver, db_session, monkeypatch
):
    monkeypatch.setitem(app.config, "WEBHOOK_BATCH_SIZE", 4)
    admin = api.admin(app)
    client = api.signup("client")
    hook = _subscribe(api, client, receiver.url, ["task.completed", "job.completed"])
    tasks = 48
    job = active_job(api, app, client, tasks=tasks, redundancy=SINGLE)
    workers = [active_worker(api, admin) for _ in range(8)]
    errors: list[str] = []

    def work(account):
        own = Api(app.test_client())
        try:
            while True:
                leased = lease(own, account, job["id"])
                if leased.status_code == 204:
                    return
                assert leased.status_code == 201, leased.get_json()
                submitted = own.post(
                    f"/api/v1/assignments/{leased.get_json()['id']}/submit",
                    account.token,
                    json={"answer": "dog"},
                )
                assert submitted.status_code == 200, submitted.get_json()
        except AssertionError as error:  # pragma: no cover - reported below
            errors.append(str(error))

    threads = [threading.Thread(target=work, args=(w,)) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    manual_clock.advance(job_events.BATCH_SECONDS)
    _run_periodic(app)

    events = [verify(hook["secret"], h, b) for h, b in receiver.received]
    announced = Counter(_task_ids([e for e in events if e["type"] == "task.completed"]))
    all_ids = set(db_session.scalars(select(Task.id).where(Task.job_id == job["id"])))
    assert set(announced) == all_ids
    assert set(announced.values()) == {1}
    assert all(len(e["data"]["tasks"]) <= 4 for e in events if e["type"] == "task.completed")
    assert [e["type"] for e in events].count("job.completed") == 1
    assert len({e["id"] for e in events}) == len(events)
    statuses = {d.status for d in _deliveries(db_session)}
    assert statuses == {DeliveryStatus.DELIVERED}


# --- job.labels_changed ------------------------------------------------------------------


def test_a_reviewers_correction_announces_the_changed_label(api, app, receiver, db_session):
    admin = api.admin(app)
    client = api.signup("client")
    hook = _subscribe(api, client, receiver.url, ["job.labels_changed"])
    three = {"min": 3, "max": 3, "target_confidence": 0.9}
    job = active_job(api, app, client, tasks=2, redundancy=three)
    workers = [active_worker(api, admin) for _ in range(3)]
    for worker, answer in zip(workers, ["cat", "cat", "dog"], strict=True):
        _judge(api, worker, job["id"], answer)  # task 1 closes 2–1: low confidence, reviewed
    for worker, answer in zip(workers, ["dog", "dog", "cat"], strict=True):
        _judge(api, worker, job["id"], answer)
    reviews = api.get(f"/api/v1/jobs/{job['id']}/reviews", client.token).get_json()["items"]
    first, second = sorted(reviews, key=lambda item: item["task_id"])
    decide = "/api/v1/reviews/{}/decision"
    # accepting, or "correcting" to the label it already has, changes nothing: no event
    accept = {"action": "accept"}
    assert api.post(decide.format(first["id"]), client.token, json=accept).status_code == 200
    same = {"action": "correct", "answer": "dog"}
    assert api.post(decide.format(second["id"]), client.token, json=same).status_code == 200
    assert receiver.events() == []

    client2_job = active_job(api, app, client, tasks=1, redundancy=three)
    for worker, answer in zip(workers, ["cat", "cat", "dog"], strict=True):
        _judge(api, worker, client2_job["id"], answer)
    (item,) = api.get(f"/api/v1/jobs/{client2_job['id']}/reviews", client.token).get_json()["items"]
    corrected = {"action": "correct", "answer": "dog"}
    assert api.post(decide.format(item["id"]), client.token, json=corrected).status_code == 200
    (event,) = receiver.events("job.labels_changed")
    headers, body = receiver.received[0]
    assert verify(hook["secret"], headers, body) == event
    data = event["data"]
    assert (data["job"]["id"], data["source"], data["labels_changed"]) == (
        client2_job["id"], "review", 1
    )  # fmt: skip
    (line,) = data["tasks"]
    assert (line["task_id"], line["answer"], line["previous_answer"]) == (
        item["task_id"], "dog", "cat"
    )  # fmt: skip
    assert (line["method"], line["confidence"], line["status"]) == ("review", 1.0, "completed")


def test_a_dawid_skene_pass_that_changes_labels_announces_its_run(api, app, receiver):
    from tests.jobs.test_batch import _run_job_with_a_wrong_majority

    client, job = _run_job_with_a_wrong_majority(api, app)
    _subscribe(api, client, receiver.url, ["job.labels_changed", "task.completed"])
    queued = api.post(f"/api/v1/jobs/{job['id']}/aggregations", client.token)
    assert queued.status_code == 202, queued.get_json()
    run_id = queued.get_json()["id"]
    (event,) = receiver.events("job.labels_changed")
    data = event["data"]
    assert (data["source"], data["labels_changed"]) == ("dawid_skene", 10)
    url = data["aggregation_run"]["url"]
    assert data["aggregation_run"]["id"] == run_id
    run = api.get(url, client.token).get_json()
    assert len(run["changes"]) == 10
    # a second pass changes nothing, and says nothing
    again = api.post(f"/api/v1/jobs/{job['id']}/aggregations", client.token)
    assert again.status_code == 202, again.get_json()
    assert (
        api.get(
            f"/api/v1/jobs/{job['id']}/aggregations/{again.get_json()['id']}", client.token
        ).get_json()["labels_changed"]
        == 0
    )
    assert len(receiver.events("job.labels_changed")) == 1
