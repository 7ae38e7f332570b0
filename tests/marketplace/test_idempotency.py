"""`Idempotency-Key`: a retried create returns the first answer and creates nothing new."""

from __future__ import annotations

import json
import threading
import uuid

import pytest
from sqlalchemy import func, select, update

from marketplace.accounts.models import Membership, Organization, OrgKind
from marketplace.auth import require
from marketplace.database import db
from marketplace.idempotency import idempotent
from marketplace.models import IdempotencyRecord
from tests.conftest import build_app
from tests.helpers import assert_problem
from tests.marketplace.test_conventions import unchanged

ORGS = "/api/v1/organizations"
BODY = {"name": "Retry Labs", "kind": "client"}


def _key() -> str:
    return str(uuid.uuid4())


def _count(session, model) -> int:
    session.rollback()
    return session.scalar(select(func.count()).select_from(model))


def _create(api, account, body=BODY, key=None, **kw):
    headers = {"Idempotency-Key": key} if key is not None else {}
    return api.post(ORGS, account.token, json=body, headers=headers, **kw)


@pytest.fixture
def owner(api):
    return api.signup("client")


def test_a_retry_with_the_same_key_replays_the_first_answer(api, owner, db_session):
    key = _key()
    first = _create(api, owner, key=key)
    assert first.status_code == 201
    assert "Idempotent-Replayed" not in first.headers
    with unchanged(db_session):
        again = _create(api, owner, key=key)
        reordered = api.post(
            ORGS,
            owner.token,
            data=json.dumps({"kind": "client", "name": "Retry Labs"}, indent=2),
            content_type="application/json",
            headers={"Idempotency-Key": key},
        )
    for replay in (again, reordered):
        assert replay.status_code == 201
        assert replay.get_json() == first.get_json()
        assert replay.headers["Idempotent-Replayed"] == "true"
        assert replay.mimetype == "application/json"
    names = db_session.scalars(select(Organization.name).order_by(Organization.id)).all()
    assert names.count("Retry Labs") == 1


def test_without_a_key_each_post_creates(api, owner, db_session):
    before = _count(db_session, Organization)
    _create(api, owner)
    _create(api, owner)
    assert _count(db_session, Organization) == before + 2


def test_the_same_key_with_another_body_or_path_is_422(api, owner, db_session):
    key = _key()
    assert _create(api, owner, key=key).status_code == 201
    org_id = owner.organization["id"]
    with unchanged(db_session):
        other_body = _create(api, owner, body={"name": "Something else", "kind": "client"}, key=key)
        other_path = api.post(
            f"{ORGS}/{org_id}/members",
            owner.token,
            json=BODY,
            headers={"Idempotency-Key": key},
        )
    assert_problem(other_body, 422, field="Idempotency-Key")
    assert_problem(other_path, 422, field="Idempotency-Key")


def test_keys_belong_to_their_caller(api, owner, db_session):
    other = api.signup("client")
    key = _key()
    mine = _create(api, owner, key=key)
    theirs = _create(api, other, key=key)
    assert mine.status_code == theirs.status_code == 201
    assert "Idempotent-Replayed" not in theirs.headers
    assert mine.get_json()["id"] != theirs.get_json()["id"]
    owners = db_session.scalars(
        select(Membership.user_id).where(
            Membership.organization_id.in_([mine.get_json()["id"], theirs.get_json()["id"]])
        )
    ).all()
    assert sorted(owners) == sorted([owner.user["id"], other.user["id"]])


def test_a_refusal_by_the_service_is_replayed_too(api, owner, db_session):
    org_id = owner.organization["id"]
    key = _key()
    newcomer = "not.yet@example.org"
    first = api.post(
        f"{ORGS}/{org_id}/members",
        owner.token,
        json={"email": newcomer},
        headers={"Idempotency-Key": key},
    )
    assert_problem(first, 422, field="email")
    api.signup("client", email=newcomer)  # the cause of the refusal goes away…
    with unchanged(db_session):
        replay = api.post(
            f"{ORGS}/{org_id}/members",
            owner.token,
            json={"email": newcomer},
            headers={"Idempotency-Key": key},
        )
    # …but a retry with the same key still gets the first answer, and adds no one.
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert assert_problem(replay, 422, field="email") == first.get_json()
    fresh = api.post(
        f"{ORGS}/{org_id}/members",
        owner.token,
        json={"email": newcomer},
        headers={"Idempotency-Key": _key()},
    )
    assert fresh.status_code == 201


def test_a_body_refused_before_the_service_ran_can_be_corrected_under_the_same_key(
    api, owner, db_session
):
    key = _key()
    with unchanged(db_session):
        refused = _create(api, owner, body={"name": "Fixed later"}, key=key)
    assert_problem(refused, 422, field="kind")
    created = _create(api, owner, body={"name": "Fixed later", "kind": "vendor"}, key=key)
    assert created.status_code == 201
    assert "Idempotent-Replayed" not in created.headers


def test_a_request_still_in_progress_gets_409(api, owner, db_session):
    key = _key()
    assert _create(api, owner, key=key).status_code == 201
    db_session.execute(update(IdempotencyRecord).values(state="in_progress"))
    db_session.commit()
    with unchanged(db_session):
        response = _create(api, owner, key=key)
    assert_problem(response, 409)


@pytest.mark.parametrize(
    "key",
    ["k" * 256, "", "   ", "tab\there", "nul\x00byte", "ünïcødé", "x" * 10_000],
    ids=["256-chars", "empty", "blank", "control", "nul", "non-ascii", "10k"],
)
def test_a_bad_key_is_422(api, owner, db_session, key):
    with unchanged(db_session):
        response = api.post(
            ORGS,
            owner.token,
            json=BODY,
            headers={"Idempotency-Key": key.encode("utf-8").decode("latin-1")},
        )
    assert_problem(response, 422, field="Idempotency-Key")


def test_a_255_character_key_is_fine(api, owner):
    key = "k" * 254 + "!"
    assert _create(api, owner, key=key).status_code == 201
    assert _create(api, owner, key=key).headers["Idempotent-Replayed"] == "true"


def test_keys_expire(api, app, manual_clock, db_session):
    owner = api.signup("client")
    key = _key()
    first = _create(api, owner, key=key)
    manual_clock.advance(app.config["CROWDLINE"].idempotency_seconds + 1)
    owner_token = api.login(owner.email)["access_token"]  # the first token expired meanwhile
    owner.token = owner_token
    second = _create(api, owner, key=key)
    assert second.status_code == 201
    assert "Idempotent-Replayed" not in second.headers
    assert second.get_json()["id"] != first.get_json()["id"]


def test_a_server_error_is_not_stored_so_the_retry_runs_again(api, owner, db_session):
    flaky = build_app()
    calls = []

    @require("org:write")
    @idempotent
    def sometimes_fails():
        calls.append(1)
        if len(calls) == 1:
            db.session.add(Organization(name="half", kind=OrgKind.CLIENT, created_at=_now()))
            db.session.flush()
            raise RuntimeError("transient")
        return {"attempt": len(calls)}, 201

    flaky.add_url_rule("/api/v1/test-flaky", "flaky", sometimes_fails, methods=["POST"])
    client = flaky.test_client()
    headers = {"Authorization": f"Bearer {owner.token}", "Idempotency-Key": "retry-me"}
    try:
        with unchanged(db_session):
            failed = client.post("/api/v1/test-flaky", json={"n": 1}, headers=headers)
        assert_problem(failed, 500)
        retried = client.post("/api/v1/test-flaky", json={"n": 1}, headers=headers)
        assert retried.status_code == 201
        assert retried.get_json() == {"attempt": 2}
        replayed = client.post("/api/v1/test-flaky", json={"n": 1}, headers=headers)
        assert replayed.get_json() == {"attempt": 2}
        assert replayed.headers["Idempotent-Replayed"] == "true"
        assert len(calls) == 2
    finally:
        with flaky.app_context():
            db.engine.dispose()


def _now():
    from marketplace import clock

    return clock.now()


def test_concurrent_duplicates_create_exactly_one_organization(app, api, owner, db_session):
    threads_count = 8
    key = _key()
    barrier = threading.Barrier(threads_count)
    results: list[tuple[int, dict, dict]] = []
    errors: list[BaseException] = []

    def attempt():
        client = app.test_client()
        try:
            barrier.wait(timeout=10)
            response = client.post(
                ORGS,
                json=BODY,
                headers={"Authorization": f"Bearer {owner.token}", "Idempotency-Key": key},
            )
            results.append((response.status_code, response.get_json(), dict(response.headers)))
        except BaseException as error:  # surfaced below; a thread cannot fail the test itself
            errors.append(error)

    before = _count(db_session, Organization)
    threads = [threading.Thread(target=attempt) for _ in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    assert len(results) == threads_count
    statuses = sorted(status for status, _, _ in results)
    assert set(statuses) <= {201, 409}, results
    created = [(body, headers) for status, body, headers in results if status == 201]
    originals = [body for body, headers in created if "Idempotent-Replayed" not in headers]
    assert len(originals) == 1, results
    assert all(body == originals[0] for body, _ in created)
    for status, _body, headers in results:
        if status == 409:
            assert headers["Content-Type"] == "application/problem+json"
    assert _count(db_session, Organization) == before + 1
    # Once the first attempt finished, every retry is a replay.
    replay = _create(api, owner, key=key)
    assert replay.status_code == 201
    assert replay.get_json() == originals[0]


def test_stored_responses_are_encrypted_at_rest(api, app, db_session):
    """A client secret or invitation code shown once must not sit readable in the table."""
    from marketplace.models import IdempotencyRecord

    owner = api.signup("client")
    response = api.post(
        "/api/v1/organizations",
        owner.token,
        json={"name": "Plaintext Probe Org", "kind": "client"},
        headers={"Idempotency-Key": "seal-check"},
    )
    assert response.status_code == 201
    record = db_session.scalar(select(IdempotencyRecord))
    assert "Plaintext Probe Org" not in record.response_body
    replay = api.post(
        "/api/v1/organizations",
        owner.token,
        json={"name": "Plaintext Probe Org", "kind": "client"},
        headers={"Idempotency-Key": "seal-check"},
    )
    assert replay.get_json() == response.get_json()
