from __future__ import annotations

import io

from sqlalchemy import func, select

from credentials.models import Attestation
from marketplace.models import AuditEvent
from tests.helpers import assert_problem
from tests.workforce import activate, eligibility, invite_and_join, make_clearance, make_crowd

PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
HIPAA = {"clearances": ["hipaa"]}


def _upload(api, worker, clearance_id, data=PDF, name="cert.pdf", content_type="application/pdf"):
    return api.post(
        "/api/v1/attestations/documents",
        worker.token,
        data={
            "clearance_type_id": str(clearance_id),
            "note": "HIPAA training 2026",
            "document": (io.BytesIO(data), name, content_type),
        },
        content_type="multipart/form-data",
    )


def test_attestation_verification_makes_worker_eligible(api, app, db_session):
    admin = api.admin(app)
    clearance = make_clearance(api, admin, "hipaa")
    worker = api.signup("worker")
    activate(api, admin, worker)
    assert eligibility(api, worker, HIPAA)["reasons"][0]["code"] == "missing_clearance"
    uploaded = _upload(api, worker, clearance["id"])
    assert uploaded.status_code == 201, uploaded.get_json()
    attestation = uploaded.get_json()
    assert attestation["status"] == "pending"
    assert attestation["document"]["content_type"] == "application/pdf"
    assert eligibility(api, worker, HIPAA)["reasons"][0]["code"] == "clearance_pending"
    # a worker can never verify their own attestation
    assert_problem(
        api.post(f"/api/v1/attestations/{attestation['id']}/verify", worker.token, json={}), 403
    )
    verified = api.post(
        f"/api/v1/attestations/{attestation['id']}/verify",
        admin.token,
        json={"reason": "certificate checked"},
    )
    assert verified.status_code == 200, verified.get_json()
    assert verified.get_json()["status"] == "verified"
    assert eligibility(api, worker, HIPAA) == {
        "worker_id": attestation["worker_id"],
        "eligible": True,
        "reasons": [],
    }
    # the document comes back byte for byte to the worker and the verifier
    for who in (worker, admin):
        document = api.get(f"/api/v1/attestations/{attestation['id']}/document", who.token)
        assert document.status_code == 200 and document.data == PDF
    actions = db_session.scalars(
        select(AuditEvent.action).where(AuditEvent.object_type == "attestation")
    ).all()
    assert actions == ["attestation.submitted", "attestation.verified"]


def test_expiry_takes_effect_immediately(api, app, manual_clock):
    admin = api.admin(app)
    clearance = make_clearance(api, admin, "hipaa", validity_days=30)
    worker = api.signup("worker")
    activate(api, admin, worker)
    attestation = api.post(
        "/api/v1/attestations",
        worker.token,
        json={"clearance_type_id": clearance["id"], "reference": "case-123"},
    ).get_json()
    api.post(f"/api/v1/attestations/{attestation['id']}/verify", admin.token, json={})
    assert eligibility(api, worker, HIPAA)["eligible"]
    manual_clock.advance(30 * 86400 + 1)
    worker_token = api.login(worker.email)["access_token"]
    result = api.post(
        "/api/v1/eligibility/check", worker_token, json={"requirements": HIPAA}
    ).get_json()
    assert result["eligible"] is False
    assert result["reasons"][0]["code"] == "clearance_expired"
    listed = api.get(f"/api/v1/attestations/{attestation['id']}", worker_token).get_json()
    assert listed["status"] == "expired"


def test_revocation_takes_effect_immediately(api, app):
    admin = api.admin(app)
    clearance = make_clearance(api, admin, "hipaa")
    worker = api.signup("worker")
    activate(api, admin, worker)
    attestation = api.post(
        "/api/v1/attestations",
        worker.token,
        json={"clearance_type_id": clearance["id"], "reference": "case-9"},
    ).get_json()
    api.post(f"/api/v1/attestations/{attestation['id']}/verify", admin.token, json={})
    assert eligibility(api, worker, HIPAA)["eligible"]
    revoked = api.post(
        f"/api/v1/attestations/{attestation['id']}/revoke",
        admin.token,
        json={"reason": "certificate was forged"},
    )
    assert revoked.get_json()["status"] == "revoked"
    result = eligibility(api, worker, HIPAA)
    assert result["eligible"] is False
    assert result["reasons"][0]["code"] == "clearance_revoked"


def test_vendor_verifies_its_own_crowds_workers_only(api, app):
    admin = api.admin(app)
    clearance = make_clearance(api, admin, "nda", verifier="vendor")
    vendor = api.signup("vendor")
    other_vendor = api.signup("vendor")
    worker = api.signup("worker")
    invite_and_join(api, vendor, make_crowd(api, vendor), worker)
    attestation = api.post(
        "/api/v1/attestations",
        worker.token,
        json={"clearance_type_id": clearance["id"], "reference": "signed-nda-42"},
    ).get_json()
    assert_problem(api.get(f"/api/v1/attestations/{attestation['id']}", other_vendor.token), 404)
    assert_problem(
        api.post(f"/api/v1/attestations/{attestation['id']}/verify", other_vendor.token, json={}),
        404,
    )
    assert api.get("/api/v1/attestations", other_vendor.token).get_json()["items"] == []
    verified = api.post(f"/api/v1/attestations/{attestation['id']}/verify", vendor.token, json={})
    assert verified.status_code == 200, verified.get_json()


def test_platform_clearance_cannot_be_verified_by_a_vendor(api, app):
    admin = api.admin(app)
    clearance = make_clearance(api, admin, "background-check", verifier="platform")
    vendor = api.signup("vendor")
    worker = api.signup("worker")
    invite_and_join(api, vendor, make_crowd(api, vendor), worker)
    attestation = api.post(
        "/api/v1/attestations",
        worker.token,
        json={"clearance_type_id": clearance["id"], "reference": "checkr-1"},
    ).get_json()
    assert_problem(
        api.post(f"/api/v1/attestations/{attestation['id']}/verify", vendor.token, json={}), 403
    )


def test_bad_uploads_are_refused_and_leave_nothing(api, app, db_session, tmp_path):
    admin = api.admin(app)
    clearance = make_clearance(api, admin, "hipaa")
    worker = api.signup("worker")
    evidence_root = app.extensions.get("crowdline.evidence")
    files_before = (
        sum(1 for _ in evidence_root.root.rglob("*") if _.is_file())
        if evidence_root and evidence_root.root.exists()
        else 0
    )
    assert_problem(_upload(api, worker, clearance["id"], data=b""), 422, field="document")
    assert_problem(
        _upload(api, worker, clearance["id"], data=b"MZ\x90\x00 not a pdf", name="cert.pdf"),
        422,
        field="document",
    )
    too_big = b"%PDF-" + b"0" * (10 * 1024 * 1024)
    response = _upload(api, worker, clearance["id"], data=too_big)
    assert response.status_code == 413 and response.mimetype == "application/problem+json"
    missing = api.post(
        "/api/v1/attestations", worker.token, json={"clearance_type_id": clearance["id"]}
    )
    assert_problem(missing, 422, field="document")
    assert db_session.scalar(select(func.count()).select_from(Attestation)) == 0
    store = app.extensions.get("crowdline.evidence")
    files_after = (
        sum(1 for _ in store.root.rglob("*") if _.is_file()) if store and store.root.exists() else 0
    )
    assert files_after == files_before


def test_client_defines_its_own_clearance_and_verifies_it(api, app):
    admin = api.admin(app)
    client = api.signup("client")
    response = api.post(
        "/api/v1/clearance-types",
        client.token,
        json={
            "slug": "acme-onboarding",
            "name": "Acme onboarding",
            "organization_id": client.organization["id"],
            "validity_days": 90,
        },
    )
    assert response.status_code == 201, response.get_json()
    clearance = response.get_json()
    assert clearance["verifier"] == "owner"
    worker = api.signup("worker")
    activate(api, admin, worker)
    attestation = api.post(
        "/api/v1/attestations",
        worker.token,
        json={"clearance_type_id": clearance["id"], "reference": "acme-quiz-7"},
    ).get_json()
    other_client = api.signup("client")
    assert_problem(
        api.post(f"/api/v1/attestations/{attestation['id']}/verify", other_client.token, json={}),
        404,
    )
    assert (
        api.post(
            f"/api/v1/attestations/{attestation['id']}/verify", client.token, json={}
        ).status_code
        == 200
    )
    assert eligibility(api, worker, {"clearances": ["acme-onboarding"]})["eligible"]


def test_workers_cannot_define_clearances(api):
    worker = api.signup("worker")
    response = api.post(
        "/api/v1/clearance-types", worker.token, json={"slug": "mine", "name": "Mine"}
    )
    assert_problem(response, 403)
