"""Helpers for workforce tests: platform admins, vendors with crowds, active workers."""

from __future__ import annotations

from typing import Any

from tests.helpers import Account, Api


def worker_id(api: Api, worker: Account) -> int:
    return api.get("/api/v1/workers/me", worker.token).get_json()["id"]


def make_crowd(api: Api, owner: Account, name: str = "Radiology crowd") -> dict[str, Any]:
    response = api.post(
        f"/api/v1/organizations/{owner.organization['id']}/crowds",
        owner.token,
        json={"name": name, "description": "Our private crowd"},
    )
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def invite_and_join(api: Api, owner: Account, crowd: dict, worker: Account) -> None:
    response = api.post(
        f"/api/v1/crowds/{crowd['id']}/invitations", owner.token, json={"emails": [worker.email]}
    )
    assert response.status_code == 201, response.get_json()
    code = response.get_json()["invitations"][0]["code"]
    joined = api.post("/api/v1/invitations/accept", worker.token, json={"code": code})
    assert joined.status_code == 201, joined.get_json()


def activate(api: Api, admin: Account, worker: Account) -> int:
    """Walk a worker through the funnel to active (as a platform admin)."""
    wid = worker_id(api, worker)
    for to in ("screening", "active"):
        response = api.post(
            f"/api/v1/workers/{wid}/status", admin.token, json={"to": to, "reason": "ok"}
        )
        assert response.status_code == 200, response.get_json()
    return wid


def make_skill(api: Api, admin: Account, slug: str = "medical.radiology") -> dict[str, Any]:
    response = api.post("/api/v1/skills", admin.token, json={"slug": slug, "name": slug.title()})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def make_clearance(api: Api, admin: Account, slug: str = "hipaa", **extra) -> dict[str, Any]:
    body = {"slug": slug, "name": slug.upper(), "validity_days": 365, **extra}
    response = api.post("/api/v1/clearance-types", admin.token, json=body)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def eligibility(api: Api, worker: Account, requirements: dict) -> dict[str, Any]:
    response = api.post(
        "/api/v1/eligibility/check", worker.token, json={"requirements": requirements}
    )
    assert response.status_code == 200, response.get_json()
    return response.get_json()
