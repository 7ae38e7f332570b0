from __future__ import annotations

from tests.helpers import assert_problem
from tests.workforce import (
    activate,
    eligibility,
    invite_and_join,
    make_clearance,
    make_crowd,
    make_skill,
    worker_id,
)


def test_every_unmet_requirement_is_listed(api, app):
    admin = api.admin(app)
    make_skill(api, admin, "image.bbox")
    make_clearance(api, admin, "hipaa")
    vendor = api.signup("vendor")
    crowd = make_crowd(api, vendor)
    worker = api.signup("worker")
    result = eligibility(
        api,
        worker,
        {
            "skills": [{"skill": "image.bbox", "min_level": 50}],
            "clearances": ["hipaa"],
            "crowds": [crowd["id"]],
            "countries": ["US"],
            "languages": ["es"],
        },
    )
    assert result["eligible"] is False
    assert sorted(r["code"] for r in result["reasons"]) == [
        "country_not_allowed",
        "missing_clearance",
        "missing_language",
        "missing_skill",
        "not_in_crowd",
        "worker_not_active",
    ]


def test_skill_level_and_crowd_rules(api, app):
    admin = api.admin(app)
    skill = make_skill(api, admin, "image.bbox")
    vendor = api.signup("vendor")
    crowd = make_crowd(api, vendor)
    worker = api.signup("worker")
    wid = activate(api, admin, worker)
    api.patch(
        "/api/v1/workers/me",
        worker.token,
        json={"country": "US", "languages": [{"code": "es", "proficiency": "fluent"}]},
    )
    api.post(
        f"/api/v1/workers/{wid}/skills",
        admin.token,
        json={"skill_id": skill["id"], "level": 40, "reason": "imported from legacy system"},
    )
    requirements = {
        "skills": [{"skill": "image.bbox", "min_level": 50}],
        "crowds": [crowd["id"]],
        "countries": ["US"],
        "languages": ["es"],
    }
    codes = [r["code"] for r in eligibility(api, worker, requirements)["reasons"]]
    assert codes == ["skill_level_too_low", "not_in_crowd"]
    invite_and_join(api, vendor, crowd, worker)
    api.post(
        f"/api/v1/workers/{wid}/skills",
        admin.token,
        json={"skill_id": skill["id"], "level": 55, "reason": "re-assessed"},
    )
    assert eligibility(api, worker, requirements)["eligible"]
    # the public crowd is every active worker
    assert eligibility(api, worker, {"crowds": ["public"]})["eligible"]


def test_query_form_lists_the_same_workers(api, app):
    admin = api.admin(app)
    vendor = api.signup("vendor")
    crowd = make_crowd(api, vendor)
    inside = api.signup("worker")
    outside = api.signup("worker")
    inactive = api.signup("worker")
    invite_and_join(api, vendor, crowd, inside)
    invite_and_join(api, vendor, crowd, inactive)
    activate(api, admin, inside)
    activate(api, admin, outside)
    requirements = {"crowds": [crowd["id"]]}
    listed = api.post(
        "/api/v1/eligibility/workers", vendor.token, json={"requirements": requirements}
    ).get_json()["items"]
    assert [w["id"] for w in listed] == [worker_id(api, inside)]
    supply = api.post(
        "/api/v1/eligibility/supply", admin.token, json={"requirements": {"crowds": ["public"]}}
    ).get_json()
    assert supply == {"eligible_workers": 2}
    client = api.signup("client")
    supply = api.post(
        "/api/v1/eligibility/supply", client.token, json={"requirements": requirements}
    ).get_json()
    assert supply == {"eligible_workers": 1}


def test_eligibility_input_is_validated(api):
    worker = api.signup("worker")
    for body, field in [
        ({"requirements": {"skills": [{"skill": "x", "min_level": 101}]}}, "requirements"),
        ({"requirements": {"crowds": ["private"]}}, "requirements"),
        ({"requirements": {"countries": ["usa"]}}, "requirements"),
        ({}, "requirements"),
    ]:
        assert_problem(
            api.post("/api/v1/eligibility/check", worker.token, json=body), 422, field=field
        )


def test_vendor_cannot_check_other_vendors_workers(api):
    vendor = api.signup("vendor")
    worker = api.signup("worker")
    response = api.post(
        "/api/v1/eligibility/check",
        vendor.token,
        json={"worker_id": worker_id(api, worker), "requirements": {}},
    )
    assert_problem(response, 404)


def test_large_requirement_sets_are_answered(api, app):
    """Past six skills/clearances the query is planned in written order (PostgreSQL)."""
    admin = api.admin(app)
    for i in range(8):
        make_skill(api, admin, f"skill.s{i}")
    worker = api.signup("worker")
    wid = activate(api, admin, worker)
    skills = api.get("/api/v1/skills?limit=50", admin.token).get_json()["items"]
    for skill in skills:
        api.post(
            f"/api/v1/workers/{wid}/skills",
            admin.token,
            json={"skill_id": skill["id"], "level": 80, "reason": "bulk grant"},
        )
    requirements = {"skills": [{"skill": s["slug"], "min_level": 70} for s in skills]}
    supply = api.post(
        "/api/v1/eligibility/supply", admin.token, json={"requirements": requirements}
    ).get_json()
    assert supply == {"eligible_workers": 1}
    listed = api.post(
        "/api/v1/eligibility/workers", admin.token, json={"requirements": requirements}
    ).get_json()["items"]
    assert [w["id"] for w in listed] == [wid]
    too_many = {"skills": [{"skill": f"x{i}"} for i in range(21)]}
    assert_problem(
        api.post("/api/v1/eligibility/supply", admin.token, json={"requirements": too_many}),
        422,
        field="requirements",
    )
